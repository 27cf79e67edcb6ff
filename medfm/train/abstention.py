"""Calibrating "none of these": similarity thresholds under which zero-shot answers and search hits abstain.

An image-text model's softmax always names a label, however unlike the image every label
is. The raw cosine similarity between an image and its best label (or a text query and its
best image) is what drops when the right answer is missing, so medfm abstains below a
threshold on it, chosen on held-out data and stored with the model's config.

The protocol, on the project's datasets (:mod:`medfm.train.clip_data`) with their fixed
group-wise splits; thresholds come from ``val``, reported numbers from ``test`` only:

* **zero-shot** — the label set is the modalities (and, separately, the body regions). An
  image asked with the full set is *in set*; asked with its own label removed, *out of set*.
  The score is the best label's cosine similarity.
* **search** — each dataset's own caption templates are text queries; the index holds the
  split's images. With the dataset's images in the index the query is *in set*; with them
  removed, *out of set*. The score is the best hit's cosine similarity.

The threshold keeps ``keep`` (default 95 %) of in-set cases on ``val``; the report gives,
on ``test``, the AUROC of in-set against out-of-set scores and the fractions kept and
abstained at that threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfm.eval.cls_metrics import roc_auc
from medfm.models.encoders.base import Encoder
from medfm.paths import shared_data_dir
from medfm.tasks.domains import MODALITIES, MODALITY_TEMPLATES, REGION_TEMPLATES, REGIONS
from medfm.tasks.zeroshot import label_embeddings
from medfm.train.clip_data import Sample, collect, read_plane

#: Search queries per dataset and split (the first distinct templates, in order).
QUERIES_PER_DATASET = 8


def zero_shot_scores(samples: Sequence[Sample], embeddings: np.ndarray, encoder: Encoder, task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(in-set, out-of-set)`` best-label similarities of every sample for ``task`` (modality or region)."""
    classes, templates = (MODALITIES, MODALITY_TEMPLATES) if task == "modality" else (REGIONS, REGION_TEMPLATES)
    keys = list(classes)
    similarity = embeddings @ label_embeddings(list(classes.values()), encoder, templates).T
    own = np.array([keys.index(getattr(sample, task)) for sample in samples])
    inside = similarity.max(axis=1)
    without = similarity.copy()
    without[np.arange(len(samples)), own] = -np.inf
    return inside, without.max(axis=1)


def search_scores(samples: Sequence[Sample], embeddings: np.ndarray, encoder: Encoder) -> tuple[np.ndarray, np.ndarray]:
    """``(in-set, out-of-set)`` best-hit similarities of each dataset's caption queries."""
    datasets = np.array([sample.dataset for sample in samples])
    inside, outside = [], []
    for dataset in sorted(set(datasets)):
        texts = list(dict.fromkeys(t for s in samples if s.dataset == dataset for t in s.templates))[:QUERIES_PER_DATASET]
        similarity = encoder.encode_text(texts) @ embeddings.T
        inside.extend(similarity.max(axis=1))
        outside.extend(similarity[:, datasets != dataset].max(axis=1))
    return np.array(inside), np.array(outside)


def _split(data: Path, encoder: Encoder, split: str) -> tuple[list[Sample], np.ndarray]:
    samples = [sample for sample in collect(data) if sample.split == split]
    return samples, encoder.encode_planes([read_plane(data, sample) for sample in samples])


def calibrate_abstention(encoder: Encoder, data: Path | None = None, keep: float = 0.95) -> dict:
    """Thresholds from ``val`` and their held-out behaviour on ``test`` (see the module); ``data``
    defaults to :func:`medfm.paths.shared_data_dir`."""
    data = data or shared_data_dir()
    val, test = _split(data, encoder, "val"), _split(data, encoder, "test")
    report: dict = {"model": encoder.info.name, "weights_sha256": encoder.info.weights_sha256, "keep_in_set": keep}
    for name, scores in (("zero_shot_modality", lambda s, e: zero_shot_scores(s, e, encoder, "modality")),
                         ("zero_shot_region", lambda s, e: zero_shot_scores(s, e, encoder, "region")),
                         ("search", lambda s, e: search_scores(s, e, encoder))):
        val_in, _ = scores(*val)
        threshold = float(np.quantile(val_in, 1 - keep))
        test_in, test_out = scores(*test)
        labels = np.r_[np.ones(len(test_in)), np.zeros(len(test_out))].astype(int)
        report[name] = {
            "threshold": round(threshold, 4),
            "test_auroc": round(roc_auc(np.r_[test_in, test_out], labels), 4),
            "test_in_set_kept": round(float((test_in >= threshold).mean()), 4),
            "test_out_of_set_abstained": round(float((test_out < threshold).mean()), 4),
            "test_n": {"in_set": len(test_in), "out_of_set": len(test_out)},
        }
    return report
