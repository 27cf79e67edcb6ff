"""Background jobs: long work (ingest, indexing, propagation, PACS pulls, training) that clients poll.

A job is cancelled cooperatively: once asked, its next ``progress(done, total)`` call raises
:class:`JobCancelled` inside its work, which unwinds it (its work cleans up as for any error);
work that never reports progress runs to its end.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from medfm.errors import MedfmError
from medfm.server.errors import Conflict, NotFound, client_message

log = logging.getLogger("medfm.server")

#: ``progress(done, total)``: what a job's work calls to report how far it is.
Progress = Callable[[int, int], None]
#: Finished jobs remembered for polling; the oldest are forgotten first.
KEEP_FINISHED = 1000
#: States of a job that has ended.
FINISHED = ("done", "failed", "cancelled")


class JobNotFound(NotFound):
    """No job with that id (404)."""


class JobCancelled(Exception):
    """Raised by a cancelled job's ``progress`` call, to unwind its work."""


class Jobs:
    """Runs ``work(progress)`` in a thread pool and keeps each job's state for polling."""

    def __init__(self, workers: int = 4, data_dir: Path | None = None) -> None:
        #: the server's data folder, named as such in the errors jobs report (:func:`client_message`)
        self.data_dir = data_dir
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="medfm-job")
        self._jobs: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._cancelled: set[str] = set()

    def submit(self, kind: str, work: Callable[[Progress], Any]) -> str:
        """Queue ``work``; its JSON-able return value becomes the job's result. Returns the job id."""
        job_id = uuid.uuid4().hex
        with self._lock:
            finished = [key for key, job in self._jobs.items() if job["state"] in FINISHED]
            for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
                del self._jobs[key]
                self._cancelled.discard(key)
            self._jobs[job_id] = {"job": job_id, "kind": kind, "state": "queued", "done": 0, "total": 0,
                                  "result": None, "error": None}
        self._pool.submit(self._run, job_id, kind, work)
        return job_id

    def get(self, job_id: str) -> dict[str, Any]:
        """A copy of the job's state: ``{"job", "kind", "state", "done", "total", "result", "error"}``."""
        with self._lock:
            if job_id not in self._jobs:
                raise JobNotFound(f"no job {job_id!r}")
            return dict(self._jobs[job_id])

    def cancel(self, job_id: str) -> dict[str, Any]:
        """Ask a queued or running job to stop (state ``cancelling`` until its work unwinds, then ``cancelled``);
        a job that has ended is left as it is. Returns its state."""
        with self._lock:
            if job_id not in self._jobs:
                raise JobNotFound(f"no job {job_id!r}")
            job = self._jobs[job_id]
            if job["state"] not in FINISHED:
                self._cancelled.add(job_id)
                job["state"] = "cancelling"
            return dict(job)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _update(self, job_id: str, **fields: Any) -> None:
        with self._lock:
            self._jobs[job_id].update(fields)

    def _progress(self, job_id: str, done: int, total: int) -> None:
        with self._lock:
            if job_id in self._cancelled:
                raise JobCancelled(job_id)
            self._jobs[job_id].update(done=int(done), total=int(total))

    def _run(self, job_id: str, kind: str, work: Callable[[Progress], Any]) -> None:
        with self._lock:
            if job_id in self._cancelled:  # cancelled while queued
                self._jobs[job_id]["state"] = "cancelled"
                return
            self._jobs[job_id]["state"] = "running"
        try:
            result = work(lambda done, total: self._progress(job_id, done, total))
        except JobCancelled:
            self._update(job_id, state="cancelled")
        except MedfmError as exc:
            self._update(job_id, state="failed", error=client_message(str(exc), self.data_dir) if str(exc) else type(exc).__name__)
        except Exception as exc:  # a bug, not bad input: log its type; its text may hold PHI
            log.error("job %s (%s) failed: %s", job_id, kind, type(exc).__name__)
            log.debug("job %s traceback", job_id, exc_info=True)
            self._update(job_id, state="failed", error=f"internal error ({type(exc).__name__})")
        else:
            self._update(job_id, state="done", result=result)


class OneAtATime:
    """Jobs that run one at a time because each takes the CPU cores for long (a training, a sampling run):
    another is refused with a 409 while one is queued or running."""

    def __init__(self, jobs: Jobs, busy: str) -> None:
        """``busy``: the refusal's message, where ``{label}`` stands for the running job's label."""
        self.jobs = jobs
        self.busy = busy
        self._current: tuple[str, str] | None = None  # (job id, label)
        self._lock = threading.Lock()

    @property
    def running(self) -> tuple[str, str] | None:
        """``(job id, label)`` of the job queued or running, else None."""
        with self._lock:
            return self._running()

    def submit(self, kind: str, work: Callable[[Progress], Any], label: str) -> str:
        """:meth:`Jobs.submit` ``work``, labelled ``label``, unless a job is queued or running (:class:`Conflict`)."""
        with self._lock:
            running = self._running()
            if running is not None:
                raise Conflict(self.busy.format(label=running[1]))
            self._current = (self.jobs.submit(kind, work), label)
            return self._current[0]

    def _running(self) -> tuple[str, str] | None:
        if self._current is not None and self._ended(self._current[0]):
            self._current = None
        return self._current

    def _ended(self, job_id: str) -> bool:
        try:
            return self.jobs.get(job_id)["state"] in FINISHED
        except JobNotFound:  # finished long ago and forgotten
            return True
