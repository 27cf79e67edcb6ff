"""Segmentation from words in a session: the box :func:`medfm.tasks.text_segment.text_box` derives from the
text (as ``medfm segment --text`` does) prompts the session's structure as a box drawn on the page would."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends

from medfm.server.display import png_bytes, png_data_url
from medfm.server.limits import TextPrompt
from medfm.server.routes.sessions import PromptTarget, plane_state
from medfm.server.sessions import check_unlocked, interaction
from medfm.server.state import ServerState, get_state

router = APIRouter(prefix="/api/sessions", tags=["sessions"])


class TextPromptIn(PromptTarget):
    text: TextPrompt
    #: also return the saliency map (8-bit grey PNG data URL, display orientation)
    saliency: bool = False


def saliency_png(saliency: np.ndarray) -> str:
    """A ``(rows, columns)`` saliency in [0, 1], display orientation, as a grey PNG data URL."""
    from PIL import Image as PILImage

    picture = PILImage.fromarray(np.ascontiguousarray(np.rint(saliency * 255).astype(np.uint8)))
    return png_data_url(png_bytes(picture))


@router.post("/{session_id}/text-prompts")
def add_text_prompt(session_id: str, body: TextPromptIn, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """The structure on plane ``(k, t)`` segmented from ``text`` (one undoable step): a PlaneState with the derived
    ``box`` (display pixels) and, if asked, the ``saliency`` map; 400 when the encoder gives no similarity map."""
    from medfm.tasks.text_segment import text_box, text_prompt_record

    check_unlocked(body.label, frozenset(body.locked))  # said before the encoder runs
    session = state.sessions.get(session_id)
    with state.encoder_lock:
        encoder, grounder = state.encoder, state.grounder
        box, saliency = text_box(session.image.frame(body.k, body.t), body.text, encoder, grounder)
    display = session.display
    segmenter = state.segmenter
    with session.lock:
        session.set_label(body.label, body.label_name, body.color, body.code)
        score = session.interact(segmenter, state.segmenter_lock, body.k, body.t, body.label,
                                 interaction([], [], box, None), frozenset(body.locked),
                                 origin={"text_prompt": text_prompt_record(body.text, encoder, grounder)})
        state.sessions.changed(session)
        answer = plane_state(session, body.k, body.t, score)
    answer["box"] = [float(v) for v in display.box_to_display(box)]
    if body.saliency:
        answer["saliency"] = saliency_png(display.plane_to_display(saliency))
    return answer
