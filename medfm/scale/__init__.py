"""Running medfm's pipelines past one process: the same work, on this process or on a Ray cluster.

A runner holds one model per worker and maps a picklable ``work(model, payload)`` over
payloads, yielding results in order; the driver writes them with the same catalog and
index code as on one machine. :class:`LocalRunner` is the plain single-process path;
:func:`ray_runner` connects to Ray (an optional extra: ``pip install medfm[ray]``).
Training runs across processes through :mod:`medfm.scale.ddp` (torch DDP on the gloo backend).
"""

from medfm.scale.runners import LocalRunner, Runner, ray_encoder_runner, ray_runner

__all__ = ["LocalRunner", "Runner", "ray_encoder_runner", "ray_runner"]
