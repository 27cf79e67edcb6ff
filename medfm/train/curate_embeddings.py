"""The embeddings ``medfm curate`` chooses by: stored in an index, or computed by an encoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medfm.errors import MedfmError
from medfm.models.registry import ENCODER_DIR_CONFIG, create_encoder, list_encoders
from medfm.train.probe import manifest_embeddings


def embeddings_of(paths: list[str], source: str, model: str | None = None) -> np.ndarray:
    """``(N, D)`` unit embeddings of ``paths`` from ``source``: an encoder (registered name or encoder
    folder) embeds them; an index gives its stored vectors, and ``model`` (which must be the index's)
    embeds the images it lacks."""
    if source in list_encoders() or (Path(source) / ENCODER_DIR_CONFIG).is_file():
        if model is not None:
            raise MedfmError("--model goes with an index in --embeddings; an encoder there embeds everything itself")
        return manifest_embeddings(paths, create_encoder(source), None)
    from medfm.index import open_index

    if "://" not in source and not Path(source).is_dir():
        raise MedfmError(f"--embeddings {source!r} is neither a model, an encoder folder nor an index folder")
    index = open_index(source)
    encoder = create_encoder(model) if model is not None else None
    if encoder is not None:
        index.check_model(encoder.info)
    return manifest_embeddings(paths, encoder, index)
