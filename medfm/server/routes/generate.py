"""Generation from the workbench: the generators on offer and sampling jobs whose images are catalogued as synthetic.

Generators are the shipped ones (:func:`medfm.models.registry.list_generators`) and the
folders that ``medfm train generator`` wrote under ``<data_dir>/generators/``: a request
names one of these, never a path. Images are written as ``medfm generate`` writes them
(:func:`medfm.tasks.generate.generate`: PNG with the synthetic mark and provenance) into
``<data_dir>/generated/<job>/`` and ingested, which tags them synthetic in the catalog. An image–mask pair
generator's masks become each image's first annotation version (a draft named :data:`MASK_ANNOTATION`,
its author the generator), to open and correct as any other.
"""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from medfm.errors import MedfmError
from medfm.server.jobs import Progress
from medfm.server.limits import MAX_GENERATED_IMAGES, MAX_GENERATION_STEPS, MAX_GUIDANCE, FiniteFloat
from medfm.server.routes.uploads import ingest_job
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api", tags=["generate"])
log = logging.getLogger("medfm.server")

#: Folders of the data directory: generator model folders, and the images generated (one folder per job).
GENERATORS_FOLDER = "generators"
#: The annotation a pair generator's mask is saved as, on its image.
MASK_ANNOTATION = "generated-mask"
GENERATED_FOLDER = "generated"


def available_generators(data_dir: Path) -> dict[str, tuple[str | Path, dict[str, Any]]]:
    """``{name: (what create_generator takes, config)}``: the shipped generators, then the data directory's."""
    from medfm.models.registry import list_generators, read_model_folder_config

    found: dict[str, tuple[str | Path, dict[str, Any]]] = {name: (name, config) for name, config in list_generators().items()}
    folder = data_dir / GENERATORS_FOLDER
    for model_dir in sorted(folder.iterdir()) if folder.is_dir() else ():
        if model_dir.is_dir() and model_dir.name not in found:
            try:
                found[model_dir.name] = (model_dir, read_model_folder_config(model_dir, "generator"))
            except MedfmError as exc:  # one damaged folder must not hide the others
                log.warning("generator folder %s skipped: %s", model_dir.name, exc)
    return found


@router.get("/generators")
def generators(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    return {"generators": [
        {"name": name, "condition": config.get("condition"), "classes": config.get("classes", []), "size": config.get("size"),
         "channels": config.get("channels"), "method": config.get("method"),
         **{key: config.get("sampling", {}).get(key) for key in ("steps", "guidance")}}
        for name, (_, config) in available_generators(state.data_dir).items()]}


class GenerateIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    generator: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    #: a text condition (text generators) or a class name
    condition: Annotated[str, StringConstraints(max_length=500)] | None = None
    #: a class by name or index (class generators)
    class_: Annotated[str, StringConstraints(max_length=200)] | StrictInt | None = Field(None, alias="class")
    n: StrictInt = Field(4, ge=1, le=MAX_GENERATED_IMAGES)
    steps: StrictInt | None = Field(None, ge=1, le=MAX_GENERATION_STEPS)
    guidance: FiniteFloat | None = Field(None, ge=0, le=MAX_GUIDANCE)
    seed: StrictInt = Field(0, ge=0, le=2**31 - 1)


@router.post("/generate")
def generate(body: GenerateIn, state: ServerState = Depends(get_state)) -> dict[str, str]:
    """Start a sampling job: ``{"job"}`` (poll and cancel it under /api/jobs); 409 while another runs."""
    from medfm.tasks.generate import open_generator

    known = available_generators(state.data_dir)
    if body.generator not in known:
        choices = ", ".join(known) or "none (train one with medfm train generator into <data dir>/generators/NAME)"
        raise MedfmError(f"unknown generator {body.generator!r}; available: {choices}")
    model = open_generator(known[body.generator][0])
    model.resolve(body.condition, body.class_)  # an unknown class or condition is a 400 now, not a failed job
    folder = state.data_dir / GENERATED_FOLDER / uuid.uuid4().hex

    def work(progress: Progress) -> dict[str, Any]:
        from medfm.tasks.generate import generate as generate_images
        from medfm.tasks.generate import samples_folder

        folder.mkdir(parents=True)
        made = generate_images(model, folder, body.n, condition=body.condition, class_=body.class_, steps=body.steps,
                               guidance=body.guidance, seed=body.seed, progress=progress)
        images_folder = samples_folder(folder, model)  # a pair generator's masks are not images to catalogue
        ingest_job(state, images_folder, folder)(lambda done, total: None)
        ids = {Path(record.source_path).name: record.id for record in state.catalog.query(text=str(images_folder))}
        images = [{"image_id": ids.get(Path(image["file"]).name), "condition": image["condition"], "seed": image["seed"],
                   "synthetic": True, **_saved_mask(state, ids.get(Path(image["file"]).name), image, model.name)}
                  for image in made["images"]]
        return {**{key: made[key] for key in ("generator", "weights_sha256", "steps", "guidance")}, "images": images}

    return {"job": state.generation.submit("generate", work, label=body.generator)}


def _saved_mask(state: ServerState, image_id: int | None, image: dict[str, Any], generator: str) -> dict[str, Any]:
    """A pair generator's mask of a catalogued image saved as its draft :data:`MASK_ANNOTATION` version:
    ``{"mask_version"}``; nothing for an image generator's image."""
    from medfm.io import load
    from medfm.structures import default_color

    if "mask" not in image or image_id is None:
        return {}
    labels = load(image["mask"])  # the generator's label map with its provenance, on the image's grid
    values = sorted(int(v) for v in set(labels.array.reshape(-1).tolist()) - {0})
    sidecar = {"image_id": image_id, "author": generator,
               "labels": {str(v): {"name": f"label {v}", "color": default_color(v)} for v in values}}
    return {"mask_version": state.annotations.save(image_id, MASK_ANNOTATION, labels, "nifti", sidecar)["version"]}
