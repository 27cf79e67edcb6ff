"""The model hub: every registered model of every kind, found by what it is for.

medigan's idea (one registry of generators, a selector, one executor) applied to all of
medfm's models: each config in ``configs/`` says its ``kind``, ``modalities`` and
``organs``, and its card (if it ships one) lives in ``cards/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medfm.errors import MedfmError
from medfm.models.registry import CONFIG_DIR, all_configs

CARD_DIR = Path(__file__).parent / "cards"
#: A model whose config names no modality or organ claims none in particular.
ANY = "any"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    kind: str
    family: str
    modalities: tuple[str, ...]
    organs: tuple[str, ...]
    description: str
    ships_weights: bool
    card: str | None

    def serves(self, modality: str | None, organ: str | None) -> bool:
        """Whether this model is meant for ``modality`` and ``organ`` (``None``: any)."""
        return _covers(self.modalities, modality) and _covers(self.organs, organ)


#: Words a user may search by → the DICOM-style codes the configs name modalities with (ask answers "MRI").
_MODALITY_ALIASES = {"mri": "mr", "ultrasound": "us", "x-ray": "xr", "xray": "xr", "radiograph": "xr"}


def _covers(values: tuple[str, ...], wanted: str | None) -> bool:
    if wanted is None or ANY in values:
        return True
    key = wanted.casefold()
    return _MODALITY_ALIASES.get(key, key) in {value.casefold() for value in values}


def list_models(kind: str | None = None, modality: str | None = None, organ: str | None = None) -> list[ModelEntry]:
    """Every registered model, or those of ``kind`` meant for ``modality`` and ``organ``, by name."""
    entries = [_entry(name, config) for name, config in all_configs().items()]
    kinds = {entry.kind for entry in entries}
    if kind is not None and kind not in kinds:
        raise MedfmError(f"unknown model kind {kind!r}; choose one of: {', '.join(sorted(kinds))}")
    return [entry for entry in entries if (kind is None or entry.kind == kind) and entry.serves(modality, organ)]


def model_card(name: str) -> str:
    """The model card of ``name`` (Markdown), or, for a model that ships none, its config in words."""
    configs = all_configs()
    if name not in configs:
        raise MedfmError(f"unknown model {name!r}; `medfm models list` shows them all")
    entry = _entry(name, configs[name])
    if entry.card is not None:
        return (CARD_DIR / entry.card).read_text()
    return "\n".join([
        f"# {name}", "", entry.description, "",
        f"- kind: {entry.kind}; family: {entry.family}",
        f"- modalities: {', '.join(entry.modalities)}; organs: {', '.join(entry.organs)}",
        f"- config: {CONFIG_DIR.name}/{name}.json; no shipped weights or card"
        + (" (a checkpoint is given with --checkpoint)" if configs[name].get("checkpoint_required") else ""),
        "",
    ])


def _entry(name: str, config: dict) -> ModelEntry:
    card = CARD_DIR / f"{name}.md"
    return ModelEntry(
        name=name,
        kind=config.get("kind", "encoder"),
        family=config["family"],
        modalities=tuple(config.get("modalities", [ANY])),
        organs=tuple(config.get("organs", [ANY])),
        description=config.get("description", ""),
        ships_weights="weights" in config,
        card=card.name if card.exists() else None,
    )
