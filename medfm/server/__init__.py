"""The REST server behind ``medfm serve``: the API of docs/server-api.md and the browser workbench."""
