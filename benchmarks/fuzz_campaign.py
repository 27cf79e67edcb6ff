"""A long fuzz campaign over every reader: mutated seed files, each read in a worker under limits.

Every input is a seed file from :func:`medfm.io.fuzzing.seed_files` (DICOM classic,
enhanced and compressed, NIfTI, NRRD/MHA, PNG/JPEG/BMP/TIFF, NPZ, MP4/GIF) with one to four
mutations drawn from ``numpy.random.default_rng((seed, worker, index))``, so any input can
be regenerated from its numbers. Workers read each input with :func:`medfm.load` under a
wall-clock limit (``setitimer``), an address-space limit (``RLIMIT_AS``) and a CPU-time
limit (``RLIMIT_CPU``, raised before each input); the parent also kills a worker that stops
making progress. A finding is anything but an image or a one-line ``MedfmError`` naming the
file: another exception (crash), a dead worker (crash), a read over the time limit (hang),
a ``MemoryError`` or an allocation the limit refused (memory). Each distinct finding is
minimised (chunks cut while it still reproduces) and saved under ``--corpus``, which
``tests/test_fuzz_corpus.py`` replays.

Prints one JSON object: inputs, seconds, inputs_per_s, findings. Run it niced, e.g.
``nice -n 15 python benchmarks/fuzz_campaign.py --workers 1 --minutes 90 --inputs 1000000``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import re
import resource
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

#: Fewer malloc arenas, so that the address-space limit measures data, not per-thread reservations.
os.environ.setdefault("MALLOC_ARENA_MAX", "2")


class _Timeout(BaseException):
    """Raised in a worker when an input's time is up; a BaseException so that readers' ``except Exception`` cannot hide it."""


def _on_alarm(signum, frame):  # noqa: ARG001 (signal handler signature)
    raise _Timeout


def classify(path: Path, run) -> tuple[str, str] | None:
    """``None`` for an image or a clean refusal, else ``(kind, one-line detail)``."""
    from medfm.errors import MedfmError

    try:
        run(path)
    except _Timeout:
        return "hang", "read exceeded the time limit"
    except MemoryError:
        return "memory", "MemoryError"
    except MedfmError as exc:
        message = str(exc)
        if "too large to fit in memory" in message:
            return "memory", "allocation over the memory limit"
        if "\n" in message or path.name not in message:
            return "bad-message", message.splitlines()[0][:200] if message else "empty message"
        return None
    except Exception as exc:  # noqa: BLE001 (any other exception is the finding)
        return "crash", f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    return None


def _load(path: Path) -> None:
    import medfm

    image = medfm.load(path)
    assert isinstance(image, medfm.Image)


def _prepare_worker(memory_bytes: int, scratch: Path) -> None:
    import medfm  # noqa: F401  (imports before the memory limit is measured)
    import medfm.io.dicom.series  # noqa: F401
    import pydicom  # noqa: F401
    from medfm.io.fuzzing import limit_address_space

    signal.signal(signal.SIGALRM, _on_alarm)
    scratch.mkdir(parents=True, exist_ok=True)
    limit_address_space(memory_bytes)


def _run_one(path: Path, data: bytes, seconds: float) -> tuple[str, str] | None:
    path.write_bytes(data)
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu + int(3 * seconds) + 1, resource.RLIM_INFINITY))
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return classify(path, _load)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Timeout:  # the alarm rang after the read returned, before it was cancelled
        return "hang", "read exceeded the time limit"


def make_input(seeds: dict[str, bytes], names: list[str], campaign_seed: int, worker: int, index: int) -> tuple[str, bytes]:
    from medfm.io.fuzzing import mutate, random_mutations

    rng = np.random.default_rng((campaign_seed, worker, index))
    name = names[int(rng.integers(len(names)))]
    return name, mutate(seeds[name], random_mutations(rng))


def worker_main(worker: int, start: int, args: dict, seeds: dict[str, bytes], progress, findings) -> None:
    """Read inputs ``start, start + 1, ...`` until told to stop (``progress[worker] = -1`` by the parent)."""
    from medfm.io.fuzzing import suffix_of

    scratch = Path(args["scratch"]) / f"worker{worker}"
    _prepare_worker(args["memory_bytes"], scratch)
    names = sorted(seeds)
    index = start
    parent = os.getppid()
    while True:
        if index % 256 == 0 and os.getppid() != parent:  # the campaign was killed: stop too
            return
        progress[worker] = index
        name, data = make_input(seeds, names, args["seed"], worker, index)
        result = _run_one(scratch / f"fuzzed{suffix_of(name)}", data, args["seconds"])
        if result is not None:
            findings.put((worker, index, name, *result))
        index += 1


def minimiser_main(args: dict, requests, replies) -> None:
    """Answer ``(suffix, data)`` requests with the finding they produce (or ``None``)."""
    scratch = Path(args["scratch"]) / "minimiser"
    _prepare_worker(args["memory_bytes"], scratch)
    while (request := requests.get()) is not None:
        suffix, data = request
        replies.put(_run_one(scratch / f"fuzzed{suffix}", data, args["seconds"]))


class Minimiser:
    """Cuts chunks out of a failing input while it still fails the same way (one process, restarted if it dies)."""

    def __init__(self, context, args: dict) -> None:
        self.context, self.args = context, args
        self.process = None

    def _start(self) -> None:
        self.requests, self.replies = self.context.Queue(), self.context.Queue()
        self.process = self.context.Process(target=minimiser_main, args=(self.args, self.requests, self.replies), daemon=True)
        self.process.start()

    def run(self, suffix: str, data: bytes) -> tuple[str, str] | None:
        if self.process is None or not self.process.is_alive():
            self._start()
        self.requests.put((suffix, data))
        deadline = time.monotonic() + 3 * self.args["seconds"] + 30
        while time.monotonic() < deadline:
            try:
                return self.replies.get(timeout=0.5)
            except Exception:  # noqa: BLE001 (queue.Empty: check the process is alive)
                if not self.process.is_alive():
                    code = self.process.exitcode
                    self.process = None
                    return _death(code)
        self.process.kill()
        self.process = None
        return "hang", "read exceeded the time limit"

    def minimise(self, suffix: str, data: bytes, kind: str, budget: int = 300, seconds: float = 120.0) -> bytes:
        """Shrink ``data`` within ``budget`` reads and ``seconds`` (a hang costs the time limit per read)."""
        deadline = time.monotonic() + seconds

        def same(candidate: bytes) -> bool:
            result = self.run(suffix, candidate)
            return result is not None and result[0] == kind

        chunk = max(len(data) // 2, 1)
        while chunk >= 1 and budget > 0 and time.monotonic() < deadline:
            position, shrunk = 0, False
            while position < len(data) and budget > 0 and time.monotonic() < deadline:
                candidate = data[:position] + data[position + chunk:]
                budget -= 1
                if candidate and same(candidate):
                    data, shrunk = candidate, True
                else:
                    position += chunk
            if not shrunk:
                chunk //= 2
        return data

    def close(self) -> None:
        if self.process is not None and self.process.is_alive():
            self.requests.put(None)
            self.process.join(5)
            if self.process.is_alive():
                self.process.kill()


def _death(code: int | None) -> tuple[str, str]:
    """The finding a dead worker's exit code means: over the CPU limit is a hang, anything else a crash."""
    if code == -signal.SIGXCPU:
        return "hang", "over the CPU time limit"
    return "crash", f"worker died ({f'signal {signal.Signals(-code).name}' if code is not None and code < 0 else f'exit status {code}'})"


def _signature(kind: str, name: str, detail: str) -> str:
    """Findings that differ only in numbers (sizes, offsets) are one finding."""
    from medfm.io.fuzzing import suffix_of

    return f"{kind} {suffix_of(name)} {re.sub(r'[0-9]+', 'N', detail)}"


def _grouped(raw: list[tuple]) -> dict[str, dict]:
    """Findings by :func:`_signature`, each with its count and the first ``(worker, index)`` that gave it."""
    grouped: dict[str, dict] = {}
    for worker, index, name, kind, detail in raw:
        entry = grouped.setdefault(_signature(kind, name, detail), {"kind": kind, "seed": name, "detail": detail, "count": 0, "first": (worker, index)})
        entry["count"] += 1
    return grouped


def campaign(args: argparse.Namespace) -> dict:
    from medfm.io.fuzzing import seed_files, suffix_of

    context = mp.get_context("spawn")
    scratch = tempfile.mkdtemp(prefix="medfm-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    seeds = seed_files(Path(scratch) / "seeds")
    names = sorted(seeds)
    settings = {"seed": args.seed, "seconds": args.seconds, "memory_bytes": args.memory_mb * 2**20, "scratch": scratch}
    progress = context.Array("q", [0] * args.workers)
    findings = context.Queue()
    processes: list = [None] * args.workers
    starts = [0] * args.workers
    last_change = [time.monotonic()] * args.workers
    last_seen = [-1] * args.workers
    raw: list[tuple] = []

    def start(worker: int, index: int) -> None:
        progress[worker] = index
        starts[worker] = index
        last_seen[worker], last_change[worker] = index, time.monotonic()
        process = context.Process(target=worker_main, args=(worker, index, settings, seeds, progress, findings), daemon=True)
        process.start()
        processes[worker] = process

    began = time.monotonic()
    for worker in range(args.workers):
        start(worker, 0)
    stop_at = began + args.minutes * 60
    per_worker = -(-args.inputs // args.workers)
    done = False
    next_status = began + 60
    while not done:
        time.sleep(0.5)
        if args.status and time.monotonic() >= next_status:  # progress for a run watched from outside
            next_status += 60
            count = sum(int(progress[w]) for w in range(args.workers))
            status = {"inputs": count, "seconds": round(time.monotonic() - began), "raw_findings": len(raw), "findings": _grouped(raw)}
            partial = Path(f"{args.status}.partial")  # then renamed: a reader never sees half a file
            partial.write_text(json.dumps(status) + "\n")
            partial.replace(args.status)
        while not findings.empty():
            raw.append(findings.get())
        now = time.monotonic()
        done = now >= stop_at or all(progress[w] >= per_worker for w in range(args.workers))
        for worker, process in enumerate(processes):
            index = progress[worker]
            if index != last_seen[worker]:
                last_seen[worker], last_change[worker] = index, now
            if not process.is_alive():  # killed by a signal or the CPU limit: the input at `index` did it
                raw.append((worker, index, make_input(seeds, names, args.seed, worker, index)[0], *_death(process.exitcode)))
                start(worker, index + 1)
            elif now - last_change[worker] > 3 * args.seconds + 5:
                process.kill()
                process.join()
                raw.append((worker, index, make_input(seeds, names, args.seed, worker, index)[0], "hang", "worker stopped responding"))
                start(worker, index + 1)
    elapsed = time.monotonic() - began
    for process in processes:
        process.kill()
        process.join()
    while not findings.empty():
        raw.append(findings.get())
    inputs = sum(int(progress[w]) for w in range(args.workers))

    grouped = _grouped(raw)
    minimiser = Minimiser(context, settings)
    corpus = Path(args.corpus)
    try:
        for entry in grouped.values():
            worker, index = entry.pop("first")
            name, data = make_input(seeds, names, args.seed, worker, index)
            entry["input"] = {"worker": worker, "index": index}
            if minimiser.run(suffix_of(name), data) is None:
                entry["reproduces_alone"] = False  # depended on state left by earlier inputs
                continue
            small = minimiser.minimise(suffix_of(name), data, entry["kind"])
            corpus.mkdir(parents=True, exist_ok=True)
            target = corpus / f"{entry['kind']}-{hashlib.sha256(small).hexdigest()[:12]}{suffix_of(name)}"
            target.write_bytes(small)
            entry.update(reproduces_alone=True, reproducer=str(target), reproducer_bytes=len(small))
    finally:
        minimiser.close()
    return {
        "benchmark": "fuzz_campaign",
        "inputs": inputs,
        "seconds": round(elapsed, 1),
        "inputs_per_s": round(inputs / elapsed, 1),
        "workers": args.workers,
        "seeds": names,
        "limits": {"seconds_per_input": args.seconds, "memory_mb_per_input": args.memory_mb},
        "findings": list(grouped.values()),
        "counts": {kind: sum(e["count"] for e in grouped.values() if e["kind"] == kind) for kind in ("crash", "hang", "memory", "bad-message")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="stop after this many inputs in all")
    parser.add_argument("--minutes", type=float, default=90.0, help="or after this much wall time")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    parser.add_argument("--seed", type=int, default=0, help="campaign seed: inputs are reproducible from it")
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per input")
    parser.add_argument("--memory-mb", type=int, default=1024, help="address space a worker may add per input")
    parser.add_argument("--status", help="file rewritten every minute with the inputs read and the findings so far")
    parser.add_argument("--corpus", default=str(Path(__file__).resolve().parents[1] / "tests" / "fuzz_corpus"))
    print(json.dumps(campaign(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
