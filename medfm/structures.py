"""What a structure in a label map is called and how it looks: one palette and one short SNOMED CT
terminology for the workbench page, PNG/NIfTI label maps (their provenance) and DICOM SEG.

Label value ``v`` is drawn in :func:`default_color` ``(v)`` unless a colour was chosen for it.
A structure may carry a coded name from :func:`terminology`: SNOMED CT concepts taken from
pydicom's bundled ``codes.SCT`` (offline, the codes highdicom writes), each with the segmented
property category a DICOM SEG needs. A structure without a code is written to a SEG as
"Tissue", as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from medfm.errors import MedfmError

if TYPE_CHECKING:
    from pydicom.sr.coding import Code

#: Colours of label values 1, 2, ... (value ``v`` takes ``PALETTE[(v - 1) % 16]``): distinct on grey images.
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#ffe119", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
           "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#800000", "#aaffc3", "#000075")

#: pydicom ``codes.SCT`` keywords offered as structure names, by segmented property category.
_TERMS = {
    "AnatomicalStructure": ("Liver", "Kidney", "Spleen", "Pancreas", "Stomach", "Gallbladder", "Bladder", "Prostate",
                            "Lung", "Heart", "LeftVentricle", "Aorta", "Brain", "Breast", "Thyroid", "Eye", "Retina",
                            "Esophagus", "Duodenum", "Colon", "Rectum", "Trachea", "Uterus", "Ovary", "Femur",
                            "Vertebra", "Skull", "Head"),
    "Tissue": ("Bone", "Muscle", "Fat", "Skin", "BloodVessel"),
    "MorphologicallyAbnormalStructure": ("Neoplasm", "Lesion", "Mass", "Nodule", "Cyst", "Metastasis", "Carcinoma",
                                         "PolypOfColon", "Edema", "Necrosis", "Hemorrhage"),
}


def default_color(value: int) -> str:
    """The palette's colour (``#rrggbb``) of label value ``value`` (1 to 255)."""
    return PALETTE[(int(value) - 1) % len(PALETTE)]


def rgb(color: str) -> tuple[int, int, int]:
    """``(red, green, blue)`` 0 to 255 of a ``#rrggbb`` colour."""
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


@dataclass(frozen=True)
class Term:
    """A coded structure name: SNOMED CT ``code`` (scheme ``SCT``) and its meaning, in a segmented property ``category``."""

    code: str
    meaning: str
    category_code: str
    category_meaning: str
    scheme: str = "SCT"

    def to_dict(self) -> dict[str, str]:
        """``{"code", "scheme", "meaning", "category": {"code", "scheme", "meaning"}}``, as clients and sidecars hold it."""
        return {"code": self.code, "scheme": self.scheme, "meaning": self.meaning,
                "category": {"code": self.category_code, "scheme": self.scheme, "meaning": self.category_meaning}}

    def concepts(self) -> tuple[Code, Code]:
        """``(segmented property category, segmented property type)`` as pydicom codes, for a DICOM SEG."""
        from pydicom.sr.coding import Code

        return (Code(self.category_code, self.scheme, self.category_meaning), Code(self.code, self.scheme, self.meaning))


@cache
def terminology() -> dict[str, Term]:
    """The coded names offered, by SNOMED CT code, in the order of :data:`_TERMS` (read from pydicom's ``codes.SCT``)."""
    from pydicom.sr.codedict import codes

    terms = {}
    for category_keyword, keywords in _TERMS.items():
        category = getattr(codes.SCT, category_keyword)
        for keyword in keywords:
            concept = getattr(codes.SCT, keyword)
            terms[concept.value] = Term(concept.value, concept.meaning, category.value, category.meaning)
    return terms


def term(code: str) -> Term:
    """The :func:`terminology` entry of SNOMED CT ``code``; MedfmError naming a few valid ones otherwise."""
    terms = terminology()
    if code not in terms:
        examples = ", ".join(f"{t.code} ({t.meaning})" for t in list(terms.values())[:3])
        raise MedfmError(f"structure code {code!r} is not in medfm's SNOMED CT list (GET /api/terminology), e.g. {examples}")
    return terms[code]


def structure_style(structure: dict[str, Any] | None, value: int) -> tuple[str, Term | None]:
    """``(colour, coded name or None)`` of label ``value`` from its provenance record ``structure``
    (``{"label", "label_name", "color"?, "code"?}``), the palette's colour where none was chosen."""
    structure = structure or {}
    code = structure.get("code")
    return structure.get("color") or default_color(value), term(code["code"]) if code else None
