"""How much one request may ask for, so that no request holds a model lock for long.

The segmenter and the encoder each serve one request at a time; without caps a prompt of
50,000 points held the segmenter for many seconds while everyone else waited. Request bodies
use these types; a request over a cap is refused with a 400 naming the field and the limit.
(Zero-shot labels are capped where the classification is: ``medfm.server.routes.search``.)
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StrictInt, StringConstraints

from medfm.tasks.text_segment import MAX_TEXT_CHARS

#: Clicks in one prompt request, and clicks a structure may gather on one plane.
MAX_POINTS = 64
MAX_POINTS_PER_PLANE = 256
#: Points of one scribble, and scribble points a structure may gather on one plane.
MAX_SCRIBBLE_POINTS = 4096
MAX_SCRIBBLE_POINTS_PER_PLANE = 16384
#: Characters of a structure's name.
MAX_NAME_CHARS = 64

#: A number that is not NaN or infinite (JSON parsers accept both).
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
#: A display pixel ``(x, y)``.
Point = tuple[FiniteFloat, FiniteFloat]
#: A structure's label value: an integer (not ``true``) from 1 to 255; 0 is background.
LabelValue = Annotated[StrictInt, Field(ge=1, le=255)]
#: A structure's name: 1 to 64 characters once surrounding spaces are stripped.
StructureName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_NAME_CHARS)]
#: A colour as ``#rrggbb``.
Colour = Annotated[str, StringConstraints(pattern=r"^#[0-9a-fA-F]{6}$")]
#: A SNOMED CT code of medfm's structure terminology (``""`` removes a structure's code).
StructureCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{0,18}$")]
#: Images one generation request makes, its sampling steps and classifier-free guidance at most.
MAX_GENERATED_IMAGES = 16
MAX_GENERATION_STEPS = 200
MAX_GUIDANCE = 20.0
#: Retrieved cases one report request keeps, sentences it drafts, images one question is about,
#: evidence cases it returns, sentences one SR export (or saved report) holds, and characters of a saved report.
MAX_REPORT_CASES = 32
MAX_REPORT_SENTENCES = 10
MAX_QUESTION_IMAGES = 16
MAX_EVIDENCE = 50
MAX_SR_SENTENCES = 50
MAX_REPORT_CHARS = 20_000
#: Words to segment by, as sent: room for runs of spaces, which the prompt's own limit (``MAX_TEXT_CHARS``
#: once they are collapsed, with its own message) does not count.
TextPrompt = Annotated[str, StringConstraints(max_length=2 * MAX_TEXT_CHARS)]
