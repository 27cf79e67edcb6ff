// The Ask box: a closed question about the open image (modality, body region, a finding's
// presence, or "A, B or C?") answered offline with a confidence and the similar cases behind it,
// which open on a click. An answer for an image no longer open is dropped.

import { api, showError } from "./api.js";
import { el, thumb } from "./panels.js";

export class Ask {
  /** `onOpen(id)` opens an evidence case. */
  constructor(root, onOpen) {
    this.root = root;
    this.onOpen = onOpen;
    this.input = root.querySelector("[data-testid=ask-question]");
    this.button = root.querySelector("[data-testid=ask-run]");
    this.answer = root.querySelector("[data-testid=ask-answer]");
    this.list = root.querySelector("[data-testid=ask-evidence]");
    this.imageId = null;
    this.seq = 0;
    root.querySelector("[data-testid=ask-form]").addEventListener("submit", (e) => { e.preventDefault(); this.ask(); });
  }

  setImage(id) {
    this.imageId = id;
    this.seq++; // an answer on its way is about the image shown before
    this.button.disabled = !id;
    this.answer.textContent = "";
    delete this.answer.dataset.answer;
    this.list.replaceChildren();
  }

  async ask() {
    const question = this.input.value.trim();
    if (!this.imageId || !question) return;
    const imageId = this.imageId;
    const seq = ++this.seq;
    this.button.disabled = true;
    this.answer.textContent = "Thinking…";
    try {
      const result = await api("/ask", { method: "POST", body: { image_ids: [imageId], question } });
      if (seq !== this.seq || imageId !== this.imageId) return;
      this.render(result);
    } catch (error) {
      if (seq === this.seq) { this.answer.textContent = ""; showError(error, "ask"); }
    } finally {
      if (seq === this.seq) this.button.disabled = !this.imageId;
      this.root.dataset.settled = String(Number(this.root.dataset.settled || 0) + 1); // answers handled, kept or dropped
    }
  }

  render(result) {
    this.answer.dataset.answer = result.answer;
    this.answer.dataset.imageId = String(result.image_ids[0]);
    this.answer.textContent = "image_prediction" in result
      ? `${result.answer} (recorded in the DICOM header: ${result.prediction}; the pixels read as ${result.image_prediction})`
      : `${result.answer} (confidence ${(100 * result.confidence).toFixed(1)} %; ${result.prediction})`;
    this.list.replaceChildren(...(result.evidence || []).map((hit) => {
      const item = el("li", {
        class: "hit", testid: "ask-evidence-item", tabIndex: 0, dataset: { imageId: String(hit.image_id) },
        title: `${hit.name || `case ${hit.image_id}`}${hit.caption ? `: ${hit.caption}` : ""}\nsimilarity ${Number(hit.score).toFixed(3)}: click to open`,
      },
      thumb(hit.image_id),
      el("span", { class: "hit-name", textContent: hit.name || `case ${hit.image_id}` }),
      el("span", { class: "score", textContent: Number(hit.score).toFixed(3) }));
      item.addEventListener("click", () => this.onOpen(hit.image_id));
      item.addEventListener("keydown", (e) => { if (e.key === "Enter") this.onOpen(hit.image_id); });
      return item;
    }));
  }
}
