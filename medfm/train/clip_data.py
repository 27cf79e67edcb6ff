"""Image-caption pairs for training medfm-clip from the project's datasets (``../shared/data``).

MedPix-2.0 brings real captions. Every other dataset brings labels and metadata that
template banks turn into captions in the UniMed-CLIP way (modality × body region ×
structure × finding: "an endoscopy image of a colon polyp", "a fetal ultrasound of the
head"...). With ``captions="anatomy"`` every sample's bank also names its body region
and, where the metadata records it, its view (MedPix plane, fundus eye side, POCUS probe),
in words shared across modalities ("head ultrasound", "CT of the head, axial view"), so
that a region word is not learnt from one modality alone. Every sample is assigned to ``train``, ``val`` (loss and recipe choice) or
``test`` (reported numbers only) by a stable hash of its patient/case/subject group, so
that images of one group never straddle splits.

:func:`build_cache` decodes every image once, downsamples it with the model's own
:func:`~medfm.models.preprocess.prepare_plane` to a uint8 tensor, and embeds
every distinct caption once with the frozen MiniLM, so that epochs only touch tensors.
"""

from __future__ import annotations

import csv
import itertools
import json
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

#: MedPix ``location_category`` → region key.
MEDPIX_REGIONS = {"Head": "head", "Thorax": "chest", "Abdomen": "abdomen",
                  "Reproductive and Urinary System": "pelvis", "Spine and Muscles": "msk"}
_MEDPIX_MODALITY_WORDS = {"CT": ["CT", "CT scan", "computed tomography"], "MR": ["MRI", "MR image", "magnetic resonance"]}
#: Region key → the words that name it in anatomy captions (one key per label of the zero-shot region axis).
REGION_WORDS = {"head": ["head"], "chest": ["chest", "thorax"], "abdomen": ["abdomen"], "pelvis": ["pelvis"],
                "msk": ["spine", "musculoskeletal system"], "colon": ["colon", "large bowel"], "skin": ["skin"],
                "eye": ["eye", "retina"], "blood": ["blood"]}
_MEDPIX_REGION_WORDS = {**REGION_WORDS, "head": ["head", "brain"], "pelvis": ["pelvis", "urinary tract"]}
#: Modality key → the words that name it in anatomy captions.
MODALITY_WORDS = {"ct": ["CT"], "mri": ["MRI"], "xray": ["X-ray", "radiograph"], "ultrasound": ["ultrasound", "sonography"],
                  "endoscopy": ["endoscopy"], "dermoscopy": ["dermoscopy"], "fundus": ["fundus photograph"],
                  "microscopy": ["microscopy"]}
#: MedPix ``plane`` values that name a view, as caption words.
MEDPIX_VIEWS = {"Axial": "axial view", "Coronal": "coronal view", "Sagittal": "sagittal view", "Transverse": "transverse view",
                "Frontal": "frontal view", "Lateral": "lateral view", "AP": "AP view", "PA": "PA view"}
#: Caption banks: ``basic`` (the shipped model's) and ``anatomy`` (basic + region and view captions).
CAPTIONS = ("basic", "anatomy")
#: Fractions of groups held out; the rest trains.
TEST_FRACTION, VAL_FRACTION = 0.15, 0.10
#: Cached planes are this size; training crops them to the model's input size.
CACHE_SIZE = 128
VIDEO_FRAMES = 6


@dataclass
class Sample:
    """One plane and its texts. ``frame`` is a video frame or npz row; ``caption`` is a real
    caption (MedPix) and ``templates`` are captions made from labels; ``label`` is the class
    that the templates describe (samples with equal labels are positives for each other); ``view``
    is the view or acquisition in caption words where the metadata records it ("axial view",
    "left eye", "convex probe"), else empty."""

    dataset: str
    path: str
    group: str
    modality: str
    region: str
    label: str
    templates: list[str]
    caption: str | None = None
    frame: int | None = None
    split: str = field(default="")
    view: str = ""


def fill(templates: list[str], **slots: list[str]) -> list[str]:
    """Every template with every combination of slot words, article fixed ("a endoscopy" → "an endoscopy")."""
    out = []
    for template in templates:
        names = [name for name in slots if "{" + name + "}" in template]
        for words in itertools.product(*(slots[name] for name in names)):
            text = template.format(**dict(zip(names, words, strict=False)))
            out.append(" ".join("an" if w == "a" and _vowel_sound(nxt) else w
                                for w, nxt in zip(text.split(), text.split()[1:] + [""], strict=False)))
    return sorted(set(out))


def _vowel_sound(word: str) -> bool:
    return word[:1].lower() in tuple("aeiou") or word.startswith(("MR", "X-"))


GENERIC = ["a {mod} image of {thing}", "{mod} showing {thing}", "{thing} on {mod}", "a {mod} of {thing}"]
ANATOMY = ["{mod} of the {region}", "{region} {mod}", "imaging of the {region}", "{mod} imaging of the {region}"]
ANATOMY_WITH_VIEW = ["{mod} of the {region}, {view}", "{region} {mod}, {view}"]


def anatomy_templates(sample: Sample) -> list[str]:
    """Captions naming ``sample``'s body region in the words every modality shares, and its view if known."""
    slots = {"mod": MODALITY_WORDS[sample.modality], "region": REGION_WORDS[sample.region]}
    return fill(ANATOMY + (ANATOMY_WITH_VIEW if sample.view else []), **slots, view=[sample.view])


def assign_splits(samples: list[Sample]) -> None:
    """Give every sample without a split ``train``, ``val`` or ``test`` by its group: the groups of
    each dataset are ordered by a stable hash and the first fractions held out (at least one group
    each, so that small datasets such as POCUS are represented)."""
    for dataset in sorted({s.dataset for s in samples}):
        groups = sorted({s.group for s in samples if s.dataset == dataset and not s.split}, key=lambda g: zlib.crc32(g.encode()))
        n_test = max(1, round(len(groups) * TEST_FRACTION))
        n_val = max(1, round(len(groups) * VAL_FRACTION))
        split = {g: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, g in enumerate(groups)}
        for sample in samples:
            if sample.dataset == dataset and not sample.split:
                sample.split = split[sample.group]


def _rows(root: Path, name: str) -> list[dict[str, str]]:
    with open(root / name / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def medpix(root: Path) -> Iterator[Sample]:
    for row in _rows(root, "medpix2_image_text_train"):
        region = MEDPIX_REGIONS[row["location_category"]]
        mods = _MEDPIX_MODALITY_WORDS[row["modality"]]
        plane = row["plane"].lower() if row["plane"] in ("Axial", "Coronal", "Sagittal") else ""
        templates = fill(["a {plane} {mod} image of the {region}", "{mod} of the {region}", "a {mod} of the {region}"],
                         plane=[plane] if plane else [""], mod=mods, region=_MEDPIX_REGION_WORDS[region])
        templates = [" ".join(t.split()) for t in templates]
        templates += [f"{mods[0]} showing {row['case_title'].lower()}", f"{row['modality_detail']} of the {row['location'].lower()}"]
        yield Sample("medpix2_image_text_train", row["image"], row["case_id"], row["modality"].lower().replace("mr", "mri"),
                     region, f"medpix:{row['modality']}:{region}:{plane}", templates, caption=row["caption"],
                     view=MEDPIX_VIEWS.get(row["plane"], ""))


def kvasir(root: Path) -> Iterator[Sample]:
    templates = fill(GENERIC, mod=["endoscopy", "colonoscopy"], thing=["a colon polyp", "a colorectal polyp", "a polyp in the colon"])
    for row in _rows(root, "kvasir_seg_polyp"):
        yield Sample("kvasir_seg_polyp", row["image"], row["image"], "endoscopy", "colon", "kvasir:polyp", templates)


def ph2(root: Path) -> Iterator[Sample]:
    findings = {"common_nevus": ["a common nevus", "a benign mole"], "atypical_nevus": ["an atypical nevus", "a dysplastic nevus"],
                "melanoma": ["a melanoma", "a malignant melanoma"]}
    for row in _rows(root, "ph2_dermoscopy"):
        name = row["clinical_diagnosis_name"]
        templates = fill(GENERIC + ["a {mod} image of a skin lesion"], mod=["dermoscopy", "dermatoscopy"], thing=findings[name])
        yield Sample("ph2_dermoscopy", row["image"], row["image"], "dermoscopy", "skin", f"ph2:{name}", templates)


def hc18(root: Path) -> Iterator[Sample]:
    templates = fill(["a fetal ultrasound of the head", "a {mod} of the fetal head", "a {mod} image of a fetal skull",
                      "an obstetric {mod} showing the fetal head"], mod=["ultrasound", "sonography", "prenatal ultrasound"])
    for row in _rows(root, "hc18_fetal_head_us"):
        yield Sample("hc18_fetal_head_us", row["image"], row["subject_group"], "ultrasound", "head", "hc18:fetal_head", templates)


def fundus(root: Path) -> Iterator[Sample]:
    templates = fill(["a colour fundus photograph of the retina", "a {mod} of the retina", "a {mod} showing retinal vessels",
                      "a {mod} of the eye"], mod=["fundus photograph", "fundus image", "retinal photograph"])
    for row in _rows(root, "fundus_vessels"):
        view = {"L": "left eye", "R": "right eye"}.get(row["eye"], "")
        yield Sample("fundus_vessels", row["image"], f"{row['dataset']}:{row['subject']}", "fundus", "eye", "fundus:retina", templates,
                     view=view)


def bccd(root: Path) -> Iterator[Sample]:
    templates = fill(GENERIC, mod=["microscopy", "light microscopy", "blood smear"],
                     thing=["blood cells", "red and white blood cells", "a peripheral blood smear"])
    for row in _rows(root, "bccd_blood_cells"):
        # BCCD's own val split is the test split here; its train split is divided into train and val.
        sample = Sample("bccd_blood_cells", row["image"], row["image"], "microscopy", "blood", "bccd:cells", templates)
        sample.split = "test" if row["split"] == "val" else ""
        yield sample


def pocus(root: Path) -> Iterator[Sample]:
    findings = {"regular": ["a normal lung", "healthy lungs with A-lines"], "COVID-19": ["covid-19 findings", "covid-19 pneumonia"],
                "Viral pneumonia": ["viral pneumonia", "B-lines of viral pneumonia"]}
    for row in _rows(root, "pocus_lung_ultrasound_video"):
        templates = fill(["a lung ultrasound with {thing}", "a {mod} of the lung showing {thing}", "a chest {mod} with {thing}"],
                         mod=["ultrasound", "point-of-care ultrasound"], thing=findings[row["label"]])
        count = int(row["decoded_frames"] or 1)
        for frame in sorted({round(x) for x in np.linspace(0, count - 1, min(count, VIDEO_FRAMES))}):
            yield Sample("pocus_lung_ultrasound_video", row["file"], f"pocus:{row['split_group']}", "ultrasound", "chest",
                         f"pocus:{row['label']}", templates, frame=frame if row["type"] == "video" else None,
                         view=f"{row['probe']} probe" if row["probe"] else "")


def pneumonia(root: Path, per_split: dict[str, int] = {"train": 700, "val": 150}) -> Iterator[Sample]:  # noqa: B006
    names = {0: ["a normal chest", "clear lungs"], 1: ["pneumonia", "a lung infiltrate"]}
    path = "volumes_3d_smoke/medmnist/pneumoniamnist_balanced_subset.npz"
    labels = np.load(root / path)
    for source, count in per_split.items():
        for index in range(min(count, len(labels[f"{source}_labels"]))):
            label = int(labels[f"{source}_labels"][index].item())
            templates = fill(["a {mod} showing {thing}", "a pediatric {mod} with {thing}", "an X-ray of the chest"],
                             mod=["chest X-ray", "chest radiograph"], thing=names[label])
            sample = Sample("pneumoniamnist", f"{path}::{source}", f"pneumoniamnist:{source}:{index}", "xray", "chest",
                            f"pneumonia:{label}", templates, frame=index)
            # The npz's own val rows are the test split; its train rows are divided into train and val.
            sample.split = "test" if source == "val" else ""
            yield sample


READERS = (medpix, kvasir, ph2, hc18, fundus, bccd, pocus, pneumonia)


def collect(root: Path, captions: str = "basic") -> list[Sample]:
    """Every sample of every dataset under ``root``, each with its split and the ``captions`` bank (see
    :data:`CAPTIONS`); the splits do not depend on the bank."""
    from medfm.errors import MedfmError

    if captions not in CAPTIONS:
        raise MedfmError(f"captions must be one of {', '.join(CAPTIONS)}; got {captions!r}")
    samples = [sample for reader in READERS for sample in reader(root)]
    if captions == "anatomy":
        for sample in samples:
            sample.templates = sorted(set(sample.templates + anatomy_templates(sample)))
    assign_splits(samples)
    return samples


#: Columns of a split manifest: everything that places a sample and labels it, but not its template bank.
MANIFEST_COLUMNS = ("dataset", "path", "frame", "group", "split", "modality", "region", "label", "caption")


def write_split_manifest(samples: list[Sample], path: Path) -> int:
    """Every sample's place and split as CSV (paths relative to the data folder), in :func:`collect`'s
    order; returns the rows. ``medfm train clip --manifest-only`` writes it, and so does every training run."""
    from medfm.io.formats import atomic_path

    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, MANIFEST_COLUMNS)
        writer.writeheader()
        for sample in samples:
            row = {column: getattr(sample, column) for column in MANIFEST_COLUMNS}
            writer.writerow({**row, "frame": "" if sample.frame is None else sample.frame, "caption": sample.caption or ""})
    return len(samples)


def read_split_manifest(path: Path, split: str | None = None) -> list[Sample]:
    """The samples of a :func:`write_split_manifest` file (without template banks), only ``split``'s if given."""
    from medfm.errors import MedfmError, display_path

    try:
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise MedfmError(f"{display_path(path)}: cannot read the manifest ({exc.strerror})") from None
    if not rows or set(rows[0]) != set(MANIFEST_COLUMNS):
        raise MedfmError(f"{display_path(path)}: not a split manifest from `medfm train clip --manifest-only` "
                         f"(needs columns {', '.join(MANIFEST_COLUMNS)})")
    samples = [Sample(row["dataset"], row["path"], row["group"], row["modality"], row["region"], row["label"], [],
                      caption=row["caption"] or None, frame=int(row["frame"]) if row["frame"] else None, split=row["split"])
               for row in rows]
    return [s for s in samples if split is None or s.split == split]


def read_plane(root: Path, sample: Sample) -> np.ndarray:
    """The raw plane ``(rows, columns[, C])`` of ``sample``, as stored."""
    if sample.path.endswith(".npz::train") or sample.path.endswith(".npz::val"):
        file, source = sample.path.split("::")
        return np.load(root / file)[f"{source}_images"][sample.frame]
    if sample.frame is not None:
        import av

        with av.open(str(root / sample.dataset / sample.path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index == sample.frame:
                    return frame.to_ndarray(format="rgb24")
            raise ValueError(f"{sample.path}: has no frame {sample.frame}")
    from medfm.io import load

    return load(root / sample.dataset / sample.path).frame(0, 0)


def evaluation_prompts() -> list[str]:
    """The zero-shot prompts of :func:`medfm.train.clip_eval.evaluate`: every modality and body-region label
    in every template of its axis."""
    from medfm.tasks.domains import AXES

    return [template.format(label) for labels, templates in AXES.values() for label in labels.values() for template in templates]


def build_cache(root: Path, cache: Path, text_batch: int = 128, captions: str = "basic") -> Path:
    """Decode, downsample and embed everything once into ``cache`` (a ``.pt`` file); reuse it if present.

    The file holds ``pixels`` ``(N, 3, CACHE_SIZE, CACHE_SIZE)`` uint8, ``samples`` (JSON),
    ``texts`` (every distinct caption, and the validation's zero-shot prompts so that training never
    loads MiniLM), ``text_features`` ``(T, 384)`` float32 and ``captions`` (the bank).
    """
    if cache.exists():
        return cache
    from medfm.models.encoders.medfm_clip import MiniLM
    from medfm.models.preprocess import prepare_plane

    samples = collect(root, captions)
    pixels = torch.empty((len(samples), 3, CACHE_SIZE, CACHE_SIZE), dtype=torch.uint8)
    for index, sample in enumerate(samples):
        pixels[index] = (prepare_plane(read_plane(root, sample), CACHE_SIZE) * 255).round().to(torch.uint8)
    texts = sorted({text for s in samples for text in s.templates + ([s.caption] if s.caption else [])} | set(evaluation_prompts()))
    text_features = MiniLM()(texts, batch_size=text_batch)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial")
    torch.save({"pixels": pixels, "samples": json.dumps([asdict(s) for s in samples]), "texts": texts,
                "text_features": text_features, "captions": captions}, partial)
    partial.replace(cache)
    return cache


def load_cache(cache: Path, captions: str | None = None) -> tuple[torch.Tensor, list[Sample], list[str], torch.Tensor]:
    """``(pixels, samples, texts, text_features)`` as :func:`build_cache` wrote them; if ``captions`` is
    given, the cache must hold that caption bank (caches from before the choice hold ``basic``)."""
    from medfm.errors import MedfmError, display_path

    data = torch.load(cache, weights_only=True)
    held = data.get("captions", "basic")
    if captions is not None and held != captions:
        raise MedfmError(f"{display_path(cache)}: holds the {held!r} caption bank, not {captions!r}; give another --cache")
    return data["pixels"], [Sample(**s) for s in json.loads(data["samples"])], data["texts"], data["text_features"]
