// The Report panel: a draft report of the open image from similar captioned cases (each
// sentence links to the case it came from, which opens on a click), editable, and downloadable
// as a DICOM SR marked machine-generated. An answer for an image no longer open is dropped.

import { api, setStatus, showError } from "./api.js";
import { el } from "./panels.js";

export class Report {
  /** `onOpen(id)` opens a retrieved case. */
  constructor(root, onOpen) {
    this.root = root;
    this.onOpen = onOpen;
    this.button = root.querySelector("[data-testid=report-run]");
    this.srButton = root.querySelector("[data-testid=report-sr]");
    this.note = root.querySelector("[data-testid=report-note]");
    this.list = root.querySelector("[data-testid=report-sentences]");
    this.imageId = null;
    this.seq = 0;
    this.edited = false;
    this.button.addEventListener("click", () => this.draft());
    this.srButton.addEventListener("click", () => this.downloadSr());
  }

  setImage(id) {
    this.imageId = id;
    this.seq++; // a draft on its way is about the image shown before
    this.list.replaceChildren();
    delete this.list.dataset.imageId;
    this.note.textContent = "";
    this.button.disabled = !id;
    this.srButton.disabled = true;
  }

  async draft() {
    if (!this.imageId) return;
    const imageId = this.imageId;
    const seq = ++this.seq;
    this.button.disabled = true;
    this.note.textContent = "Drafting from similar cases…";
    try {
      const result = await api("/report", { method: "POST", body: { image_id: imageId } });
      if (seq !== this.seq || imageId !== this.imageId) return;
      this.render(result);
    } catch (error) {
      if (seq === this.seq) { this.note.textContent = ""; showError(error, "report"); }
    } finally {
      if (seq === this.seq) this.button.disabled = !this.imageId;
      this.root.dataset.settled = String(Number(this.root.dataset.settled || 0) + 1); // answers handled, kept or dropped
    }
  }

  render(result) {
    this.edited = false;
    const route = Object.entries(result.route || {}).map(([axis, r]) => `${axis}: ${r.label || "cannot tell"}`).join(", ");
    this.note.textContent = result.sentences.length
      ? `Draft from ${result.contexts.length} similar past case(s) [${route}]: check every sentence against the image.`
      : "No similar captioned case to draft from.";
    this.list.dataset.imageId = String(result.image_id);
    this.list.replaceChildren(...result.sentences.map((sentence) => {
      const text = el("span", { class: "sentence-text", testid: "report-sentence-text", contentEditable: "true", textContent: sentence.text });
      text.addEventListener("input", () => { this.edited = true; });
      const source = el("button", {
        type: "button", class: "link", testid: "report-source", dataset: { imageId: String(sentence.source) },
        textContent: sentence.name ? `case ${sentence.name}` : `case ${sentence.source} (no longer in the catalog)`, disabled: !sentence.name,
        title: `Open the case this sentence came from (similarity ${Number(sentence.score).toFixed(3)})`,
      });
      source.addEventListener("click", () => this.onOpen(sentence.source));
      return el("li", { class: "sentence", testid: "report-sentence", dataset: { source: String(sentence.source) } }, text, source);
    }));
    this.srButton.disabled = !result.sentences.length;
  }

  /** The draft as the user kept it: each sentence's text (edited or not) and its source case. */
  sentences() {
    return [...this.list.querySelectorAll("[data-testid=report-sentence]")].map((item) => ({
      text: item.querySelector("[data-testid=report-sentence-text]").textContent.trim(),
      source: Number(item.dataset.source),
    })).filter((s) => s.text);
  }

  async downloadSr() {
    const imageId = this.imageId;
    const sentences = this.sentences();
    if (!imageId || !sentences.length) return;
    this.srButton.disabled = true;
    try {
      const response = await api("/report/sr", { method: "POST", body: { image_id: imageId, sentences, edited: this.edited } });
      const blob = await response.blob();
      if (imageId !== this.imageId) return;
      const link = el("a", { href: URL.createObjectURL(blob), download: `report-${imageId}.dcm` });
      this.srButton.dataset.bytes = String(blob.size);
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 0);
      setStatus("downloaded the draft as a DICOM SR (machine-generated, unverified)");
    } catch (error) {
      showError(error, "DICOM SR");
    } finally {
      this.srButton.disabled = !this.list.children.length;
    }
  }
}
