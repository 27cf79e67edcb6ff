"""Search and catalog at scale: prints one JSON object.

Run ``python benchmarks/scale_bench.py vectors --size 200000`` (the search frontier),
``python benchmarks/scale_bench.py catalog --rows 1000000`` (list/filter latency) or
``python benchmarks/scale_bench.py ray --images 400`` (index build on Ray workers, see ``ray_build.py``) or
``python benchmarks/scale_bench.py ddp --steps 30`` (``train seg`` in 1 vs 2 processes, see ``ddp_train.py``) or
``python benchmarks/scale_bench.py commands --images 40`` (ingest, classify, segment --auto and evaluate
robustness on Ray workers, see ``ray_commands.py``) or
``python benchmarks/scale_bench.py ddp-clip --epochs 3`` (``train clip`` in 1 vs 2 processes, see ``ddp_clip.py``) or
``python benchmarks/scale_bench.py chroma-fault --runs 8`` (index build on a Chroma server killed mid-build, see
``chroma_fault.py``).

**vectors.** The Gaussian-mixture set of ``benchmarks/embed_bench.py`` (2000 centres,
noise 0.7 per coordinate, 512-d unit rows; queries from the same mixture, not indexed).
What makes 1M hard is density: 500 vectors per centre, nearly equidistant from a query
in 512-d, among which the graph must find the true 10. ``--centres`` keeps that density
in a smaller run that fits a small machine (100k over 200 centres, 50k over 100).
Ground truth is exact brute-force search (numpy) over the same vectors in the same run,
whose latency is reported beside the index's. Each setting builds a
:class:`medfm.index.local.LocalIndex` (what users get: usearch graph plus SQLite
metadata, vectors added in chunks with usearch's multi-threaded add) and reports build
seconds, resident memory added (RSS delta, which includes the metadata table), then for
each ``expansion_search`` recall@10 and single-query p50/p99 latency of
``LocalIndex.search`` (metadata lookup included). With ``faiss-cpu`` installed (the
``bench`` extra) FAISS ``IndexHNSWFlat`` is measured on the same vectors as a peer, and with
``--milvus`` (the ``milvus`` extra) the Milvus backend in milvus-lite, built through the same
interface (:func:`bench_milvus`), and with ``--chroma`` the Chroma backend on a ``chroma run`` server
(:func:`bench_chroma`).
Settings run one after the other, each index freed before the next builds.

**catalog.** ``--rows`` synthetic images written straight into the catalog's tables (a
SQLite file, and PostgreSQL when ``--postgres URL`` is given), then the workbench's calls
are timed through :meth:`medfm.catalog.store.Catalog.query` / ``count``: a page of 50 with
no filter, by modality, by modality and body part, by dataset, a rare dataset, by text
(substring search, which no B-tree index serves), and the count. Each call is repeated
and the median and worst latencies printed; ``explain`` shows whether SQLite used an index.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_bench import DIM, TARGET, K, bench_faiss, exact_top, measure, mixture, rss_bytes

#: The settings compared by default: the old default, then wider graphs. Name -> LocalIndex settings.
SETTINGS = {
    "f32-c16-a64": {"dtype": "f32", "connectivity": 16, "expansion_add": 64},
    "f16-c32-a128": {"dtype": "f16", "connectivity": 32, "expansion_add": 128},
}
CHUNK = 50_000
#: Filtered searches measured on a server (each scans the metadata of the matching rows).
FILTERED_QUERIES = 50


def log(record: dict) -> None:
    """Progress on stderr: a run that is stopped still leaves its numbers."""
    print(json.dumps(record), file=sys.stderr, flush=True)


def by_expansion_search(name: str, index, queries: np.ndarray, truth: np.ndarray, expansions: list[int]) -> dict:
    """:func:`measure` of ``index``'s searches at each expansion_search."""
    results = {}
    for expansion in expansions:
        index.set_expansion_search(expansion)
        results[expansion] = measure(lambda q: [hit.id for hit in index.search(q, K)], queries, truth)
        log({"setting": name, "expansion_search": expansion, **results[expansion]})
    return results


def bench_local(name: str, settings: dict, data: np.ndarray, queries: np.ndarray, truth: np.ndarray,
                expansions: list[int]) -> dict:
    from medfm.index.local import LocalIndex

    model = {"name": "bench", "embed_dim": DIM, "weights_sha256": "0" * 64}
    metadata = [{"dataset": "bench"}] * CHUNK
    with tempfile.TemporaryDirectory(prefix="medfm-scale-") as folder:
        before = rss_bytes()
        start = time.perf_counter()
        index = LocalIndex.create(Path(folder) / "index", model, **settings)
        for first in range(0, len(data), CHUNK):
            rows = data[first:first + CHUNK]
            index.add(range(first, first + len(rows)), rows, metadata[:len(rows)])
            log({"setting": name, "added": first + len(rows), "elapsed_s": round(time.perf_counter() - start, 1)})
        result = {"engine": "medfm-local (usearch)", "setting": name, "settings": settings,
                  "build_s": round(time.perf_counter() - start, 1),
                  "rss_delta_mb": round((rss_bytes() - before) / 2**20, 1), "by_expansion_search": {}}
        result["by_expansion_search"] = by_expansion_search(name, index, queries, truth, expansions)
        index.close()
    return result


def bench_milvus(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, expansions: list[int]) -> dict:
    """:class:`medfm.index.milvus.MilvusIndex` in milvus-lite (in this process, so the RSS delta is its memory),
    built through the medfm interface like ``bench_local``. Milvus writes land in a log and are indexed
    per sealed segment in the background; what a Milvus server does by itself is done here by hand and
    timed as part of the build: ``flush`` seals every segment, and ``release`` + ``load`` builds (or
    reads) every segment's HNSW graph before returning. Memory is counted from the empty collection (milvus-lite
    started, its libraries loaded). Latency is wall only: the search runs in
    milvus-lite's gRPC server threads, so this thread's CPU time does not count it."""
    from pymilvus import MilvusClient

    from medfm.index.milvus import INDEX_PARAMS, MilvusIndex

    model = {"name": "bench", "embed_dim": DIM, "weights_sha256": "0" * 64}
    metadata = [{"dataset": "bench"}] * CHUNK
    with tempfile.TemporaryDirectory(prefix="medfm-scale-") as folder:
        store = Path(folder) / "bench.db"
        start = time.perf_counter()
        index = MilvusIndex.create(f"{store}/vectors", model)  # starts milvus-lite: its own memory is not the index's
        before = rss_bytes()
        for first in range(0, len(data), CHUNK):
            rows = data[first:first + CHUNK]
            index.add(range(first, first + len(rows)), rows, metadata[:len(rows)])
            log({"setting": "milvus-lite", "added": first + len(rows), "elapsed_s": round(time.perf_counter() - start, 1)})
        inserted = time.perf_counter()
        client = MilvusClient(str(store))
        client.flush("vectors")
        client.release_collection("vectors")
        client.load_collection("vectors")
        client.close()
        result = {"engine": "milvus-lite", "setting": "milvus-lite-hnsw-m32-efc128", "settings": INDEX_PARAMS,
                  "insert_s": round(inserted - start, 1), "index_s": round(time.perf_counter() - inserted, 1),
                  "build_s": round(time.perf_counter() - start, 1),
                  "rss_delta_mb": round((rss_bytes() - before) / 2**20, 1), "by_expansion_search": {}}
        log({k: v for k, v in result.items() if k != "by_expansion_search"})
        result["by_expansion_search"] = by_expansion_search("milvus-lite", index, queries, truth, expansions)
        filtered = [hit.id for hit in index.search(queries[0], K, where={"dataset": "bench"})]
        result["filtered_search_equals_unfiltered"] = filtered == [hit.id for hit in index.search(queries[0], K)]
        index.close()
    return result


def bench_chroma(data: np.ndarray, queries: np.ndarray, truth: np.ndarray, expansions: list[int]) -> dict:
    """:class:`medfm.index.chroma.ChromaIndex` on a ``chroma run`` server started here on loopback with a fresh
    data folder, built through the medfm interface like ``bench_local``; the build time ends when the last ``add``
    returns (indexing the server might still do afterwards is not counted). Memory is the server process's
    resident set after the build (from ``/proc``) less its empty set; disk is its data folder. Latency is wall
    only (the search runs in the server)."""
    from chroma_fault import free_port, start_server

    from medfm.index.chroma import HNSW, ChromaIndex

    model = {"name": "bench", "embed_dim": DIM, "weights_sha256": "0" * 64}
    # a hundred datasets: a filter on one matches 1 % of the vectors, as a dataset among many shards would
    metadata = [{"dataset": f"d{i % 100}"} for i in range(len(data))]
    chroma = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
    with tempfile.TemporaryDirectory(prefix="medfm-scale-chroma-") as folder:
        port = free_port()
        server = start_server(chroma, port, Path(folder) / "db")
        try:
            index = ChromaIndex.create(f"chroma://127.0.0.1:{port}/vectors", model)
            before = rss_bytes(server.pid)
            start = time.perf_counter()
            for first in range(0, len(data), CHUNK):
                rows = data[first:first + CHUNK]
                index.add(range(first, first + len(rows)), rows, metadata[first:first + len(rows)])
                log({"setting": "chroma", "added": first + len(rows), "elapsed_s": round(time.perf_counter() - start, 1),
                     "server_rss_mb": round(rss_bytes(server.pid) / 2**20)})
            result = {"engine": "chroma server", "setting": "chroma-hnsw-m32-efc128", "settings": HNSW,
                      "build_s": round(time.perf_counter() - start, 1),
                      "rss_delta_mb": round((rss_bytes(server.pid) - before) / 2**20, 1),
                      "disk_mb": round(sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file()) / 2**20, 1),
                      "by_expansion_search": {}}
            log({k: v for k, v in result.items() if k != "by_expansion_search"})
            result["by_expansion_search"] = by_expansion_search("chroma", index, queries, truth, expansions)
            index.set_expansion_search(128)
            result["filtered"] = measure_filtered(index, data, queries[:FILTERED_QUERIES])
            log({"setting": "chroma", "filtered": result["filtered"]})
        finally:
            server.terminate()
            server.wait(timeout=60)
    return result


def measure_filtered(index, data: np.ndarray, queries: np.ndarray) -> dict:
    """Latency and recall@10 of searches restricted to the dataset ``d7`` (every hundredth vector) against
    exact search over that dataset; wall latency only."""
    member = np.arange(7, len(data), 100)
    latency, recall = [], []
    for query in queries:
        truth = set(member[np.argsort(-(data[member] @ query))[:K]].tolist())
        start = time.perf_counter()
        found = [hit.id for hit in index.search(query, K, where={"dataset": "d7"})]
        latency.append(time.perf_counter() - start)
        recall.append(len(truth & set(found)) / K)
    p50, p99 = np.percentile(latency, [50, 99]) * 1e3
    return {"matching_vectors": len(member), "queries": len(queries), "p50_ms": round(float(p50), 3),
            "p99_ms": round(float(p99), 3), "recall_at_10": round(float(np.mean(recall)), 4)}


def frontier(runs: list[dict]) -> list[dict]:
    """One row per (setting, expansion_search), with whether it meets the target."""
    rows = []
    for run in runs:
        for expansion, numbers in run["by_expansion_search"].items():
            meets = numbers["p99_ms"] <= TARGET["p99_ms"] and numbers["recall_at_10"] >= TARGET["recall_at_10"]
            build = {key: run[key] for key in ("build_s", "insert_s", "index_s", "rss_delta_mb", "disk_mb") if key in run}
            rows.append({"setting": run["setting"], "expansion_search": int(expansion), **numbers, **build,
                         "meets_target": meets})
    return rows


def bench_vectors(args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.centres, DIM), dtype=np.float32)
    data = mixture(args.size, rng, centres)
    queries = mixture(args.queries, rng, centres)
    truth, exact_latency = exact_top(data, queries)
    p50, p99 = np.percentile(exact_latency, [50, 99]) * 1e3
    exact = {"p50_ms": round(float(p50), 3), "p99_ms": round(float(p99), 3), "recall_at_10": 1.0}
    log({"vectors": args.size, "exact_numpy": exact})
    runs = []
    for name in args.settings:
        gc.collect()
        runs.append(bench_local(name, SETTINGS[name], data, queries, truth, args.expansions))
        log({k: v for k, v in runs[-1].items() if k != "by_expansion_search"})
    if args.milvus:
        gc.collect()
        runs.append(bench_milvus(data, queries, truth, args.expansions))
    if args.chroma:
        gc.collect()
        runs.append(bench_chroma(data, queries, truth, args.expansions))
    if not args.skip_faiss:
        gc.collect()
        result = bench_faiss(data, queries, truth, args.expansions, ef_construction=128)
        if result is not None:
            runs.append(result)
    return {"vectors": args.size, "centres": args.centres, "vectors_per_centre": args.size // args.centres, "dim": DIM, "queries": args.queries, "data_mb": round(data.nbytes / 2**20, 1),
            "target": TARGET, "exact_numpy": exact, "frontier": frontier(runs),
            "filtered": {run["setting"]: run["filtered"] for run in runs if "filtered" in run},
            "faiss": "measured" if any(r["engine"] == "faiss" for r in runs) else "not installed or skipped"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sections = parser.add_subparsers(dest="section", required=True)
    vectors = sections.add_parser("vectors", help="recall / latency / memory / build-time frontier")
    vectors.add_argument("--size", type=int, default=200_000)
    vectors.add_argument("--queries", type=int, default=200)
    vectors.add_argument("--centres", type=int, default=2000,
                         help="mixture centres; 1M vectors over 2000 centres is 500 per centre, and a smaller run "
                              "with as many per centre (e.g. 100k over 200) has the same local density")
    vectors.add_argument("--settings", nargs="*", choices=sorted(SETTINGS), default=list(SETTINGS),
                         help="embedded index settings to measure (none: only the engines asked for below)")
    vectors.add_argument("--expansions", type=int, nargs="+", default=[64, 128, 256])
    vectors.add_argument("--skip-faiss", action="store_true")
    vectors.add_argument("--milvus", action="store_true",
                         help="also measure the Milvus backend in milvus-lite (the milvus extra) on the same vectors")
    vectors.add_argument("--chroma", action="store_true",
                         help="also measure the Chroma backend on a `chroma run` server started here (the chroma extra)")
    vectors.add_argument("--seed", type=int, default=0)
    catalog = sections.add_parser("catalog", help="catalog list/filter latency")
    catalog.add_argument("--rows", type=int, default=1_000_000)
    catalog.add_argument("--sqlite", help="SQLite file to fill (default: a temporary one)")
    catalog.add_argument("--postgres", help="also fill and time this PostgreSQL URL (an empty database)")
    catalog.add_argument("--no-sqlite", action="store_true", help="time PostgreSQL only")
    catalog.add_argument("--repeats", type=int, default=20)
    ray_section = sections.add_parser("ray", help="index build: plain vs 1 and 2 Ray workers, and a killed worker")
    ray_section.add_argument("--images", type=int, default=400)
    ddp = sections.add_parser("ddp", help="train seg: 1 process vs 2 (DDP, gloo) with the same global batch")
    ddp.add_argument("--steps", type=int, default=30)
    ddp.add_argument("--size", type=int, default=128, help="generated images' side in pixels (the patch)")
    ddp.add_argument("--batch", type=int, default=8, help="global batch (patches per step, in all)")
    commands_section = sections.add_parser("commands", help="ingest, classify, segment --auto, evaluate robustness: "
                                                            "plain vs 1 and 2 Ray workers")
    commands_section.add_argument("--images", type=int, default=40)
    ddp_clip = sections.add_parser("ddp-clip", help="train clip: 1 process vs 2 (DDP, gloo) with the same global batch")
    ddp_clip.add_argument("--images", type=int, default=600, help="generated images (two thirds for training)")
    ddp_clip.add_argument("--epochs", type=int, default=3)
    ddp_clip.add_argument("--batch", type=int, default=64, help="global batch (images per step, in all)")
    fault = sections.add_parser("chroma-fault", help="index build on a Chroma server SIGKILLed mid-build, then resumed")
    fault.add_argument("--images", type=int, default=1500)
    fault.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    report = {"machine": {"cpu_count": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                          "load_average_1m": round(os.getloadavg()[0], 1)}}
    if args.section == "vectors":
        report["search"] = bench_vectors(args)
    elif args.section == "ddp":
        from ddp_train import bench_ddp

        report["ddp"] = bench_ddp(args.steps, args.size, args.batch)
    elif args.section == "ddp-clip":
        from ddp_clip import bench_ddp_clip

        report["ddp_clip"] = bench_ddp_clip(args.images, args.epochs, args.batch)
    elif args.section == "chroma-fault":
        from chroma_fault import bench_chroma_fault

        report["chroma_fault"] = bench_chroma_fault(args.images, args.runs)
    elif args.section == "ray":
        from medfm.paths import shared_data_dir
        from ray_build import bench_ray

        shared = shared_data_dir()
        report["ray"] = bench_ray(args.images, shared if shared.is_dir() else None)
    elif args.section == "commands":
        from medfm.paths import shared_data_dir
        from ray_commands import bench_commands

        shared = shared_data_dir()
        report["commands"] = bench_commands(args.images, shared if shared.is_dir() else None)
    else:
        from catalog_rows import bench_catalog

        report["catalog"] = bench_catalog(args)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
