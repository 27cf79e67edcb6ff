"""A generated medfm-clip training cache for the tests: no shared data needed."""

import json
from dataclasses import asdict

import numpy as np
import torch

from medfm.train.clip_data import CACHE_SIZE, Sample, fill


def write_cache(path, n=40, extra_texts=()):
    """Two synthetic classes (bright disc vs dark stripes) with templated captions and random text features;
    ``extra_texts`` (such as the zero-shot prompts) get features too."""
    rng = np.random.default_rng(0)
    samples, pixels = [], torch.zeros((n, 3, CACHE_SIZE, CACHE_SIZE), dtype=torch.uint8)
    yy, xx = np.mgrid[:CACHE_SIZE, :CACHE_SIZE]
    for i in range(n):
        disc = i % 2 == 0
        image = ((xx - 64) ** 2 + (yy - 64) ** 2 < 900) * 255 if disc else (xx // 8 % 2) * 128
        pixels[i] = torch.from_numpy(np.broadcast_to(image.astype(np.uint8), (3, CACHE_SIZE, CACHE_SIZE)).copy())
        modality, region = ("ct", "head") if disc else ("endoscopy", "colon")
        samples.append(Sample("synthetic", f"{i}.png", str(i), modality, region, modality,
                              fill(["a {m} image", "{m} of a phantom"], m=[modality]),
                              caption=f"case {i // 4} caption" if disc else None, split=["train", "train", "val"][i % 3]))
    texts = sorted({t for s in samples for t in s.templates + ([s.caption] if s.caption else [])} | set(extra_texts))
    torch.save({"pixels": pixels, "samples": json.dumps([asdict(s) for s in samples]), "texts": texts,
                "text_features": torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(len(texts), 384)).astype(np.float32)), dim=1)},
               path)
