"""``medfm curate``: keep a fraction of a data set, chosen in embedding space, as a manifest.

Three ways to choose ``m = round(fraction · N)`` of N images from their ``(N, D)`` unit embeddings:

* ``random`` — uniformly, without replacement (the baseline);
* ``kcenter`` — k-center greedy (Sener & Savarese 2018): start from the image nearest the mean,
  then repeatedly add the image farthest (cosine distance) from everything chosen, so the
  subset covers the space and near-duplicates go last;
* ``prototypes`` — CheXficient-style prototype-driven curation: k-means (scikit-learn) finds
  ``k`` prototypes; the budget is shared equally among clusters, a small (under-represented)
  cluster keeping all its members and its unused share going to the others; inside a large
  cluster k-center greedy from the member nearest the prototype keeps diverse members and drops
  redundant ones.

The chosen rows are written in the data's order, with the data manifest's own columns (image paths,
and every column whose cells name files, such as masks, made relative to the new manifest) and
the ``cluster`` of each for ``prototypes``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfm.errors import MedfmError, display_path
from medfm.io.formats import atomic_path
from medfm.io.manifest import read_rows
from medfm.tasks.batch import IMAGE_COLUMNS, BatchInput

METHODS = ("prototypes", "random", "kcenter")


def subset_size(n: int, fraction: float) -> int:
    """``round(fraction · n)``, at least 1; ``fraction`` must lie in (0, 1]."""
    if not 0 < fraction <= 1:
        raise MedfmError(f"--fraction must be in (0, 1]; got {fraction}")
    if n < 2:
        raise MedfmError(f"curation needs at least 2 images; the data has {n}")
    return max(1, round(fraction * n))


def kcenter_greedy(embeddings: np.ndarray, m: int, first: int | None = None) -> list[int]:
    """``m`` row indices of ``(N, D)`` unit ``embeddings`` by k-center greedy (cosine distance), starting
    at ``first`` (default: the row nearest the renormalised mean)."""
    embeddings = np.asarray(embeddings, np.float64)
    if first is None:
        first = int(np.argmax(embeddings @ embeddings.mean(axis=0)))
    chosen = [first]
    distance = 1.0 - embeddings @ embeddings[first]
    for _ in range(min(m, len(embeddings)) - 1):
        distance[chosen] = -np.inf
        nxt = int(np.argmax(distance))
        chosen.append(nxt)
        distance = np.minimum(distance, 1.0 - embeddings @ embeddings[nxt])
    return chosen


def cluster_quotas(sizes: Sequence[int], m: int) -> list[int]:
    """Water-filling: ``m`` shared as equally as possible among clusters of ``sizes``, none above its size."""
    quotas = [0] * len(sizes)
    remaining, open_clusters = m, [i for i, size in enumerate(sizes) if size > 0]
    while remaining > 0 and open_clusters:
        share, extra = divmod(remaining, len(open_clusters))
        for position, cluster in enumerate(sorted(open_clusters, key=lambda i: (sizes[i] - quotas[i], i))):
            give = min(share + (1 if position >= len(open_clusters) - extra else 0), sizes[cluster] - quotas[cluster])
            quotas[cluster] += give
            remaining -= give
        open_clusters = [i for i in open_clusters if quotas[i] < sizes[i]]
    return quotas


def prototype_selection(embeddings: np.ndarray, m: int, n_prototypes: int | None = None, seed: int = 0) -> tuple[list[int], np.ndarray]:
    """``m`` row indices chosen around k-means prototypes (see the module), and each row's cluster."""
    from sklearn.cluster import KMeans

    embeddings = np.asarray(embeddings, np.float64)
    k = min(len(embeddings), n_prototypes or max(2, round(np.sqrt(len(embeddings)))))
    kmeans = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(embeddings)
    clusters = kmeans.labels_
    members = [np.flatnonzero(clusters == c) for c in range(k)]
    chosen: list[int] = []
    for cluster, quota in enumerate(cluster_quotas([len(rows) for rows in members], m)):
        rows = members[cluster]
        if quota == 0:
            continue
        nearest = int(np.argmin(np.linalg.norm(embeddings[rows] - kmeans.cluster_centers_[cluster], axis=1)))
        chosen.extend(int(rows[i]) for i in kcenter_greedy(embeddings[rows], quota, first=nearest))
    return chosen, clusters


def select(embeddings: np.ndarray, fraction: float, method: str, seed: int = 0) -> tuple[list[int], np.ndarray | None]:
    """The chosen row indices (sorted) of ``(N, D)`` unit embeddings, and the clusters (``prototypes`` only)."""
    if method not in METHODS:
        raise MedfmError(f"unknown curation method {method!r}; choose one of: {', '.join(METHODS)}")
    m = subset_size(len(embeddings), fraction)
    if method == "random":
        return sorted(np.random.default_rng(seed).choice(len(embeddings), m, replace=False).tolist()), None
    if method == "kcenter":
        return sorted(kcenter_greedy(embeddings, m)), None
    chosen, clusters = prototype_selection(embeddings, m, seed=seed)
    return sorted(chosen), clusters


def path_columns(rows: Sequence[dict[str, str]], folder: Path) -> list[str]:
    """The columns whose filled cells all name existing files (relative to ``folder``, the manifest's):
    masks and other per-image files, which must still be found from wherever the subset is written."""
    columns = []
    for column in rows[0]:
        cells = [row[column] for row in rows if row.get(column)]
        if cells and all((folder / cell).is_file() for cell in cells):
            columns.append(column)
    return columns


def _relative(path: Path, base: Path) -> str:
    """``path`` relative to ``base``; absolute where no relative path leads there (another drive)."""
    try:
        return os.path.relpath(path.resolve(), base)
    except ValueError:
        return str(path.resolve())


def curate(inputs: Sequence[BatchInput], embeddings: np.ndarray, out: str | os.PathLike, *, fraction: float, method: str,
           seed: int = 0, source_manifest: str | os.PathLike | None = None) -> dict:
    """Choose among ``inputs`` (with their ``(N, D)`` embeddings) and write manifest ``out``; returns a summary.

    With ``source_manifest`` (the CSV the inputs came from), its rows and columns are kept."""
    if len(embeddings) != len(inputs):
        raise MedfmError(f"got {len(embeddings)} embeddings for {len(inputs)} images")
    chosen, clusters = select(embeddings, fraction, method, seed)
    out = Path(out)
    base = out.parent.resolve()
    if source_manifest is not None and Path(source_manifest).suffix.lower() == ".csv":
        rows = read_rows(source_manifest)
        column = next(c for c in IMAGE_COLUMNS if c in rows[0])
        columns = list(rows[0])
        paths = [c for c in path_columns(rows, Path(source_manifest).parent) if c != column]
    else:
        column, columns, paths = "image", ["image"], []
        rows = [{"image": ""} for _ in inputs]
    if clusters is not None:
        columns.append("cluster")
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for index in chosen:
            row = dict(rows[index])
            row[column] = _relative(Path(inputs[index].path), base)
            for other in paths:
                if row[other]:
                    row[other] = _relative(Path(source_manifest).parent / row[other], base)
            if clusters is not None:
                row["cluster"] = int(clusters[index])
            writer.writerow(row)
    summary = {"manifest": display_path(out), "method": method, "fraction": fraction, "images": len(inputs), "kept": len(chosen)}
    if clusters is not None:
        summary["prototypes"] = int(clusters.max()) + 1
    return summary
