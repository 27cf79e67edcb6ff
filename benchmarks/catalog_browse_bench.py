"""The workbench's catalog pages at scale: prints one JSON object.

Run ``python benchmarks/catalog_browse_bench.py [--rows 100000] [--repeats 5]``.

``--rows`` synthetic images (``catalog_rows.fill``: four series per study, three studies per
patient) go into a temporary SQLite catalog. Timed, as ``GET /api/images`` makes them: a page
of 50 from the middle of the catalog through :func:`medfm.catalog.browse.browse` for each sort
(``added``, ``modality``, ``patient``: the database's paging; ``name`` and a text filter: worked
out over every row's few columns), against the peer measured in the same run: reading every
record with :meth:`Catalog.query`, which is what listing a whole catalog (the workbench before
paging, and any text filter) cost. ``ratio`` is the peer's median over the page's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from catalog_rows import PAGE, fill  # noqa: E402

from medfm.catalog import open_catalog  # noqa: E402
from medfm.catalog.browse import browse  # noqa: E402


def median_ms(call, repeats: int) -> float:
    call()  # warm the page cache
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medfm-browse-") as folder:
        url = f"sqlite:///{Path(folder) / 'catalog.sqlite'}"
        fill(url, args.rows)
        with open_catalog(url) as catalog:
            peer = median_ms(lambda: catalog.query(), max(1, args.repeats // 2))
            middle = args.rows // 2
            cases = {f"sort={sort}": {"sort": sort} for sort in ("added", "modality", "patient", "name")}
            cases["text=chest"] = {"text": "chest"}
            pages = {}
            for name, kwargs in cases.items():
                page_ms = median_ms(lambda kw=kwargs: browse(catalog, offset=middle, limit=PAGE, **kw), args.repeats)
                pages[name] = {"page_ms": page_ms, "ratio": round(peer / page_ms, 1)}
                print(f"{name}: {pages[name]}", file=sys.stderr, flush=True)
    print(json.dumps({"rows": args.rows, "page": PAGE, "peer_read_all_ms": peer, "pages": pages}, indent=1))


if __name__ == "__main__":
    main()
