"""The structure names and colours the workbench offers: one palette and a short SNOMED CT list (medfm.structures)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from medfm.structures import PALETTE, terminology

router = APIRouter(prefix="/api", tags=["structures"])


@router.get("/terminology")
def structure_terminology() -> dict[str, Any]:
    return {"palette": list(PALETTE), "terms": [term.to_dict() for term in terminology().values()]}
