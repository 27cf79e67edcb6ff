"""Background job status and cancellation."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["jobs"])


@router.get("/jobs/{job_id}")
def job_status(job_id: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    return state.jobs.get(job_id)


@router.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """Ask a job to stop: it ends as ``cancelled`` at its next progress report (a job that has ended is unchanged)."""
    return state.jobs.cancel(job_id)
