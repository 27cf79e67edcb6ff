"""Errors the server maps to HTTP statuses other than 400 (any other MedfmError is bad input)."""

from medfm.errors import MedfmError


class NotFound(MedfmError):
    """An unknown id: image, session, job or annotation version (404)."""
