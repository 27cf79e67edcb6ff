"""Synthetic catalog rows at scale, and the latency of the workbench's list/filter calls.

Used by ``benchmarks/scale_bench.py catalog``. Rows go straight into the catalog's
tables (bulk inserts, not :meth:`Catalog.save`, which checks each entry against what is
held and would take hours at 1M); the calls timed are the library's own
:meth:`Catalog.query` and :meth:`Catalog.count`, as the REST server and CLI make them.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import create_engine, insert, text

from medfm.catalog import open_catalog
from medfm.catalog.schema import FileRow, ImageRow, StudyRow
from medfm.catalog.store import normalize_url

MODALITIES = ["CT", "MR", "CR", "DX", "US", "PT", "MG", "XA"]
MODALITY_SHARE = [0.3, 0.25, 0.15, 0.1, 0.08, 0.05, 0.05, 0.02]
BODY_PARTS = ["CHEST", "ABDOMEN", "HEAD", "PELVIS", "KNEE", "SPINE", "BREAST", "HAND", None]
DATASETS = [f"archive-{year}" for year in range(2010, 2025)] + ["rare-study"]
DATASET_SHARE = [0.0666] * 15 + [0.001]
BATCH = 20_000
PAGE = 50


def fill(url: str, rows: int, seed: int = 0) -> float:
    """Write ``rows`` images (one study per 4 images, one file each) into the catalog at ``url``; seconds taken."""
    rng = np.random.default_rng(seed)
    share = np.asarray(DATASET_SHARE) / sum(DATASET_SHARE)
    start = time.perf_counter()
    open_catalog(url).close()  # creates the tables and indexes; every timed call goes through Catalog
    engine = create_engine(normalize_url(url))
    try:
        with engine.begin() as connection:
            for first in range(0, rows, BATCH):
                ids = range(first + 1, min(rows, first + BATCH) + 1)
                modality = rng.choice(MODALITIES, len(ids), p=MODALITY_SHARE)
                body = rng.choice(len(BODY_PARTS), len(ids))
                dataset = rng.choice(DATASETS, len(ids), p=share)
                studies = sorted({(i - 1) // 4 + 1 for i in ids})
                connection.execute(insert(StudyRow), [
                    {"id": s, "study_uid": f"1.2.826.0.1.{s}", "patient_key": f"{s // 3:032x}"} for s in studies])
                connection.execute(insert(ImageRow), [
                    {"id": i, "study_id": (i - 1) // 4 + 1, "series_uid": f"1.2.826.0.2.{i}", "dataset": str(d),
                     "format": "dicom", "source_path": f"/archive/{d}/{i // 1000}/{i}.dcm", "modality": str(m),
                     "body_part": BODY_PARTS[b], "description": f"{m} {BODY_PARTS[b] or 'unknown'} series {i % 997}",
                     "patient_key": f"{((i - 1) // 4 + 1) // 3:032x}", "shape": [512, 512, 1],
                     "spacing": [0.7, 0.7, 1.0], "orientation": "LPS", "metadata": {}, "phi": {}}
                    for i, m, b, d in zip(ids, modality, body, dataset)])
                connection.execute(insert(FileRow), [
                    {"id": i, "path": f"/archive/files/{i}.dcm", "size": 524_288, "mtime_ns": 0,
                     "sha256": f"{i:064x}", "image_id": i} for i in ids])
                print(f"{url.split(':')[0]}: {ids[-1]} rows, {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))  # planner statistics, as a maintained server would have
    finally:
        engine.dispose()
    return time.perf_counter() - start


#: The workbench's calls: name -> keyword arguments of Catalog.query (``None``: Catalog.count).
CALLS = {
    "first_page": {"limit": PAGE},
    "modality_page": {"modality": "ct", "limit": PAGE},
    "rare_modality_page": {"modality": "xa", "limit": PAGE},
    "modality_body_part_page": {"modality": "mr", "body_part": "knee", "limit": PAGE},
    "dataset_page": {"dataset": "archive-2017", "limit": PAGE},
    "rare_dataset_all": {"dataset": "rare-study"},
    "text_common_page": {"text": "chest", "limit": PAGE},
    "text_rare_page": {"text": "no-such-description", "limit": PAGE},
    "count": None,
}


def _plan(url: str, kwargs: dict) -> str | None:
    """SQLite's query plan for a call (which index, if any, it uses)."""
    if not url.startswith("sqlite"):
        return None
    engine = create_engine(normalize_url(url))
    try:
        conditions = [f"images.{key} = :{key}" for key in ("modality", "body_part", "dataset") if key in kwargs]
        sql = "EXPLAIN QUERY PLAN SELECT images.id FROM images" + (" WHERE " + " AND ".join(conditions) if conditions else "")
        sql += " ORDER BY images.id" + (f" LIMIT {kwargs['limit']}" if "limit" in kwargs else "")
        values = {key: str(value).upper() if key != "dataset" else value for key, value in kwargs.items()}
        with engine.connect() as connection:
            return "; ".join(row[-1] for row in connection.execute(text(sql), values))
    finally:
        engine.dispose()


def time_calls(url: str, repeats: int) -> dict:
    results = {}
    with open_catalog(url) as catalog:
        for name, kwargs in CALLS.items():
            call = catalog.count if kwargs is None else (lambda kw=kwargs: catalog.query(**kw))
            call()  # warm the page cache
            latency, found = [], 0
            for _ in range(repeats if not name.startswith("text_rare") else max(3, repeats // 5)):
                start = time.perf_counter()
                answer = call()
                latency.append(time.perf_counter() - start)
                found = answer if isinstance(answer, int) else len(answer)
            p50, worst = np.percentile(latency, 50) * 1e3, max(latency) * 1e3
            results[name] = {"p50_ms": round(float(p50), 2), "max_ms": round(float(worst), 2), "rows": found,
                             **({"plan": _plan(url, kwargs)} if kwargs is not None and url.startswith("sqlite") else {})}
            print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    return results


def bench_catalog(args: argparse.Namespace) -> dict:
    report = {"rows": args.rows, "page": PAGE}
    if not args.no_sqlite:
        report["sqlite"] = _bench_sqlite(args)
    if args.postgres:
        fill_s = fill(args.postgres, args.rows)
        report["postgresql"] = {"fill_s": round(fill_s, 1), "calls": time_calls(args.postgres, args.repeats)}
    return report


def _bench_sqlite(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="medfm-catalog-") as folder:
        sqlite_path = Path(args.sqlite) if args.sqlite else Path(folder) / "catalog.sqlite"
        url = f"sqlite:///{sqlite_path}"
        fresh = not sqlite_path.exists()
        fill_s = fill(url, args.rows) if fresh else None
        return {"fill_s": None if fill_s is None else round(fill_s, 1),
                "file_mb": round(os.path.getsize(sqlite_path) / 2**20, 1), "calls": time_calls(url, args.repeats)}
