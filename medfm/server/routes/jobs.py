"""Background job status."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["jobs"])


@router.get("/jobs/{job_id}")
def job_status(job_id: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    return state.jobs.get(job_id)
