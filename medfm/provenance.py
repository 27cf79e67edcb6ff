"""What made an output: one frozen record, stamped on every model output medfm writes or returns.

A :class:`Provenance` names the kind of output, the model and the sha256 of its weights
(and the adapter over them, if any), medfm's version, the time, non-identifying
identifiers of the inputs, the prompts and per-structure per-plane scores of a
segmentation, the parameters that shaped the output, and whether the output is
synthetic. It travels inside the files (:attr:`medfm.io.Image.provenance`, written as a
PNG text chunk, a NIfTI comment extension or a DICOM private element, and read back by
:func:`medfm.load`) and beside returned results (``result["provenance"]``).

Fields by kind (what each producer fills; all others keep their defaults):

=================  ==========================================================================
``segmentation``   model, weights; ``inputs``: the image's :func:`pixels_id`; ``prompts``:
                   each prompt's :meth:`~medfm.models.segmenters.Prompt.to_dict`;
                   ``structures``: ``{"label", "label_name", "planes": [{"slice_index",
                   "frame_index", "score"}]}``; ``parameters``: propagation settings.
``classification`` the encoder; ``inputs``: the image's :func:`pixels_id`; ``parameters``:
                   ``method`` (zero-shot or probe), the labels and templates, or the probe's
                   sha256 and operating point; the index that gave evidence.
``search``         the encoder; ``inputs``: the query's :func:`pixels_id` or :func:`text_id`;
                   ``parameters``: the index, ``k``, ``where``, ``exact``.
``generation``     (issue 14: generated, translated, edited, upscaled, forecast images) the
                   generator; ``synthetic=True``; ``inputs``: source images' ids;
                   ``parameters``: ``condition``, ``class``, ``seed``, ``steps``,
                   ``guidance``, ``strength``, ``method``.
``report``         (issue 15: reports and answers) the language model; ``inputs``: the
                   images' ids and the retrieved cases' index ids; ``prompts``: the
                   question; ``parameters``: ``k``, the index, slices or frames chosen.
``adapter``        (issue 13: fine-tuned adapters and trained segmentation nets) the base
                   model and its weights; ``inputs``: the training manifest's sha256;
                   ``parameters``: method, rank, budget, plan, seed.
=================  ==========================================================================

``to_dict`` gives strict JSON with ``"provenance_version"``; :meth:`Provenance.from_dict`
reads it back exactly. Unknown keys and newer versions are **refused**, not dropped: a
record medfm cannot fully read would otherwise lose fields silently on the next write. A
record written before versioning (medfm 0.1's ``metadata["segmentation"]`` dicts)
is read as a segmentation with its extra keys in ``parameters``. Nested values are made
read-only (mappings become :class:`types.MappingProxyType`, lists tuples), so a record
cannot change after it is stamped.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

import numpy as np

from medfm.errors import MedfmError

#: The layout version :meth:`Provenance.to_dict` writes; bumped whenever a field is added or changes meaning.
PROVENANCE_VERSION = 1
#: The kinds of output a record may describe (see the module's table).
KINDS = ("segmentation", "classification", "search", "generation", "report", "adapter")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_REQUIRED = ("kind", "model", "weights_sha256", "created", "medfm_version")
_LEGACY_KEYS = ("model", "weights_sha256", "medfm_version", "prompts", "structures")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _medfm_version() -> str:
    from medfm import __version__

    return __version__


def _frozen(value: Any, where: str) -> Any:
    """A read-only copy of a JSON value; numpy scalars as Python ones, non-finite floats as None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _frozen(v, f"{where}.{k}") for k, v in value.items()})
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_frozen(v, f"{where}[{n}]") for n, v in enumerate(value))
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise MedfmError(f"provenance {where} must hold JSON values (text, numbers, lists, mappings); got {type(value).__name__}")


def _thawed(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_thawed(v) for v in value]
    return value


@dataclass(frozen=True)
class Provenance:
    """The record of what made one output (see the module docstring for each kind's fields).

    ``weights_sha256`` is None only for randomly initialised weights; ``adapter`` and
    ``adapter_sha256`` name an adapter loaded over them. ``inputs`` are identifiers that
    carry no patient data (:func:`pixels_id`, :func:`text_id`, catalog or index ids), never
    paths or names. ``created`` is UTC ISO 8601 to the second.
    """

    kind: str
    model: str
    weights_sha256: str | None
    created: str = field(default_factory=_now)
    medfm_version: str = field(default_factory=_medfm_version)
    adapter: str | None = None
    adapter_sha256: str | None = None
    inputs: tuple[str, ...] = ()
    prompts: tuple[Mapping[str, Any], ...] = ()
    structures: tuple[Mapping[str, Any], ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    synthetic: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise MedfmError(f"provenance kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if not isinstance(self.model, str) or not self.model:
            raise MedfmError(f"provenance needs the model's name; got {self.model!r}")
        for name in ("weights_sha256", "adapter_sha256"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, str) and _SHA256.fullmatch(value)):
                raise MedfmError(f"provenance {name} must be 64 lower-case hex digits or null; got {value!r}")
        if (self.adapter is None) != (self.adapter_sha256 is None):
            raise MedfmError("provenance names an adapter with its sha256, or neither")
        for name in ("created", "medfm_version"):
            if not isinstance(getattr(self, name), str):
                raise MedfmError(f"provenance {name} must be text; got {getattr(self, name)!r}")
        if not isinstance(self.synthetic, bool):
            raise MedfmError(f"provenance synthetic must be true or false; got {self.synthetic!r}")
        if isinstance(self.inputs, str) or not all(isinstance(i, str) for i in self.inputs):
            raise MedfmError("provenance inputs must be a list of identifier strings")
        for name in ("prompts", "structures"):
            entries = _frozen(getattr(self, name), name)
            if not all(isinstance(entry, Mapping) for entry in entries):
                raise MedfmError(f"provenance {name} must be a list of mappings")
            object.__setattr__(self, name, entries)
        if not isinstance(self.parameters, Mapping):
            raise MedfmError("provenance parameters must be a mapping")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "parameters", _frozen(self.parameters, "parameters"))

    def __hash__(self) -> int:
        return hash(self.to_json())

    def to_dict(self) -> dict[str, Any]:
        """Strict-JSON dict: ``{"provenance_version", "kind", "model", ...}``, every field present."""
        return {"provenance_version": PROVENANCE_VERSION, **{f.name: _thawed(getattr(self, f.name)) for f in fields(self)}}

    def to_json(self) -> str:
        """:meth:`to_dict` as compact JSON with sorted keys (one text for one record)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Provenance:
        """The record :meth:`to_dict` gave; MedfmError for a newer version, unknown or missing keys."""
        if not isinstance(record, Mapping):
            raise MedfmError(f"a provenance record is a JSON object; got {type(record).__name__}")
        if "provenance_version" not in record:
            return cls._from_legacy(record)
        version = record["provenance_version"]
        if version != PROVENANCE_VERSION:
            newer = isinstance(version, int) and version > PROVENANCE_VERSION
            raise MedfmError(f"provenance record version {version!r} is "
                             f"{'newer than this medfm reads' if newer else 'not one medfm wrote'} "
                             f"(it reads version {PROVENANCE_VERSION}){': upgrade medfm' if newer else ''}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(record) - known - {"provenance_version"})
        if unknown:
            raise MedfmError(f"provenance record has unknown keys {', '.join(unknown)}: not written by this medfm version")
        missing = [key for key in _REQUIRED if key not in record]
        if missing:
            raise MedfmError(f"provenance record lacks {', '.join(missing)}")
        return cls(**{key: record[key] for key in known if key in record})

    @classmethod
    def from_json(cls, text: str | bytes) -> Provenance:
        try:
            record = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise MedfmError(f"the provenance record is not valid JSON ({exc})") from None
        return cls.from_dict(record)

    @classmethod
    def _from_legacy(cls, record: Mapping[str, Any]) -> Provenance:
        """A segmentation record from before versioning: model, weights, version, prompts, structures, settings."""
        if "model" not in record:
            raise MedfmError("the provenance record has no provenance_version and is no older medfm segmentation record")
        return cls(
            kind="segmentation", model=record["model"], weights_sha256=record.get("weights_sha256"),
            created=record.get("created", "unrecorded"), medfm_version=record.get("medfm_version") or "unrecorded",
            prompts=record.get("prompts", ()), structures=record.get("structures", ()),
            parameters={k: v for k, v in record.items() if k not in _LEGACY_KEYS and k != "created"},
        )


#: The words every synthetic image medfm writes carries where people and other tools look (PNG
#: ``Description`` text, NIfTI ``descrip``, DICOM Derivation Description), besides its provenance record.
SYNTHETIC_NOTE = "SYNTHETIC image made by a medfm generator; not an acquired patient image"


def pixels_id(array: np.ndarray) -> str:
    """``"pixels-sha256:<hex>"`` of an array's dtype, shape and values (C order): names an input without naming the patient."""
    digest = hashlib.sha256(f"{np.dtype(array.dtype).str}{tuple(array.shape)}".encode())
    # a strided view (a transposed or sliced memory map) is hashed along its first axis, never copied whole
    for chunk in [array] if array.flags.c_contiguous or array.ndim == 0 else array:
        digest.update(np.ascontiguousarray(chunk).data)
    return f"pixels-sha256:{digest.hexdigest()}"


def text_id(text: str) -> str:
    """``"text-sha256:<hex>"`` of a text query or prompt, which may name the patient."""
    return f"text-sha256:{hashlib.sha256(text.encode()).hexdigest()}"
