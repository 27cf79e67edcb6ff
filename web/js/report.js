// The Report panel: a draft report of the open image from similar captioned cases (each
// sentence links to the case it came from, which opens on a click), editable sentence by sentence
// (and sentences of your own added), saved as numbered versions beside the image's annotations
// (a draft, then final), and downloadable as a DICOM SR marked machine-generated: the saved version
// shown, or the text as it stands. The newest saved version shows when an image opens; drafting
// again or loading another version asks first when the text has unsaved edits, and unsaved edits
// stay with their image when another opens, shown again when it comes back. An answer for an
// image no longer open is dropped.

import { api, setStatus, showError } from "./api.js";
import { el } from "./panels.js";

const UNSAVED = "The report has edits that are not saved.";

export class Report {
  /** `onOpen(id)` opens a retrieved case; `author()` is the name saved versions record (may be empty). */
  constructor(root, onOpen, author) {
    this.root = root;
    this.onOpen = onOpen;
    this.author = author;
    const part = (id) => root.querySelector(`[data-testid=${id}]`);
    this.button = part("report-run");
    this.addButton = part("report-add");
    this.saveButton = part("report-save");
    this.finalButton = part("report-final");
    this.srButton = part("report-sr");
    this.note = part("report-note");
    this.list = part("report-sentences");
    this.versions = part("report-versions");
    this.imageId = null;
    this.seq = 0; // what the sentences show: a draft or load on its way is dropped once another starts
    this.listSeq = 0;
    this.shown = null; // the saved version shown, {version, status}; null for a draft not saved
    this.edited = false; // the text differs from the machine's draft
    this.changes = 0; // edits since the last draft, load or save
    this.unsaved = new Map(); // image id → the edited sentences (their elements) and state left behind unsaved
    this.button.addEventListener("click", () => this.draft());
    this.addButton.addEventListener("click", () => this.addSentence());
    this.saveButton.addEventListener("click", () => this.save());
    this.finalButton.addEventListener("click", () => this.markFinal());
    this.srButton.addEventListener("click", () => this.downloadSr());
  }

  get dirty() {
    return this.changes > 0;
  }

  setImage(id) {
    if (this.dirty && this.imageId && String(this.imageId) !== String(id)) {
      // as a segmentation session does, the edits wait for their image instead of being lost
      this.unsaved.set(String(this.imageId), {
        items: [...this.list.children], shown: this.shown, edited: this.edited, changes: this.changes, note: this.note.textContent,
      });
    }
    const kept = id ? this.unsaved.get(String(id)) : undefined;
    this.unsaved.delete(String(id));
    this.imageId = id;
    this.seq++; // a draft on its way is about the image shown before
    this.showSentences([], null);
    this.note.textContent = "";
    this.versions.replaceChildren();
    delete this.versions.dataset.imageId;
    this.button.disabled = !id;
    if (kept) {
      this.list.replaceChildren(...kept.items);
      Object.assign(this, { shown: kept.shown, edited: kept.edited, changes: kept.changes });
      this.note.textContent = `${kept.note} Your unsaved edits, kept from before.`.trim();
      this.update();
    }
    if (id) this.refresh(id, !kept);
  }

  async draft() {
    if (!this.imageId) return;
    if (this.dirty && !window.confirm(`${UNSAVED} Drafting again replaces them. Draft anyway?`)) return;
    const imageId = this.imageId;
    const seq = ++this.seq;
    this.button.disabled = true;
    this.note.textContent = "Drafting from similar cases…";
    try {
      const result = await api("/report", { method: "POST", body: { image_id: imageId } });
      if (seq !== this.seq || imageId !== this.imageId) return;
      const route = Object.entries(result.route || {}).map(([axis, r]) => `${axis}: ${r.label || "cannot tell"}`).join(", ");
      this.note.textContent = result.sentences.length
        ? `Draft from ${result.contexts.length} similar past case(s) [${route}]: check every sentence against the image.`
        : "No similar captioned case to draft from: write your own sentences.";
      this.showSentences(result.sentences, null);
    } catch (error) {
      if (seq === this.seq) { this.note.textContent = ""; showError(error, "report"); }
    } finally {
      if (seq === this.seq) this.button.disabled = !this.imageId;
      this.root.dataset.settled = String(Number(this.root.dataset.settled || 0) + 1); // answers handled, kept or dropped
    }
  }

  /** Shows `sentences` ({text, source, name, score?}) as the report: a fresh draft (`saved` null) or a saved version. */
  showSentences(sentences, saved, edited = false) {
    this.shown = saved;
    this.edited = edited;
    this.changes = 0;
    this.list.dataset.imageId = this.imageId ? String(this.imageId) : "";
    this.list.replaceChildren(...sentences.map((sentence) => this.sentenceItem(sentence)));
    this.update();
  }

  sentenceItem(sentence) {
    const text = el("span", { class: "sentence-text", testid: "report-sentence-text", contentEditable: "true", textContent: sentence.text });
    text.addEventListener("input", () => this.changed());
    const own = sentence.source === null || sentence.source === undefined;
    const source = own ? el("span", { class: "sentence-own", textContent: "your sentence" }) : el("button", {
      type: "button", class: "link", testid: "report-source", dataset: { imageId: String(sentence.source) },
      textContent: sentence.name ? `case ${sentence.name}` : `case ${sentence.source} (no longer in the catalog)`, disabled: !sentence.name,
      title: sentence.score === undefined ? "Open the case this sentence came from"
        : `Open the case this sentence came from (similarity ${Number(sentence.score).toFixed(3)})`,
    });
    if (!own) source.addEventListener("click", () => this.onOpen(sentence.source));
    return el("li", { class: "sentence", testid: "report-sentence", dataset: own ? {} : { source: String(sentence.source) } }, text, source);
  }

  addSentence() {
    if (!this.imageId) return;
    const item = this.sentenceItem({ text: "", source: null });
    this.list.append(item);
    item.querySelector("[data-testid=report-sentence-text]").focus();
    this.changed();
  }

  changed() {
    this.edited = true;
    this.changes++;
    this.update();
  }

  /** The report as the user kept it: each non-empty sentence's text and its source case (null: the user's own). */
  sentences() {
    return [...this.list.querySelectorAll("[data-testid=report-sentence]")].map((item) => ({
      text: item.querySelector("[data-testid=report-sentence-text]").textContent.trim(),
      source: item.dataset.source ? Number(item.dataset.source) : null,
    })).filter((s) => s.text);
  }

  /** Buttons and data-* for what is shown: the saved version and its status, unsaved edits. */
  update() {
    const text = this.imageId && this.sentences().length > 0;
    const savedAsShown = Boolean(this.shown) && !this.dirty;
    this.addButton.disabled = !this.imageId;
    this.saveButton.disabled = !text || savedAsShown;
    this.finalButton.disabled = !text || (savedAsShown && this.shown.status === "final");
    this.srButton.disabled = !text;
    this.root.dataset.shownVersion = this.shown ? String(this.shown.version) : "";
    this.root.dataset.shownStatus = this.shown ? this.shown.status : "";
    this.root.dataset.dirty = String(this.dirty);
    for (const item of this.versions.querySelectorAll("[data-testid=report-version]")) {
      item.classList.toggle("shown", item.dataset.version === this.root.dataset.shownVersion);
    }
  }

  /** Lists the image's saved versions; with `showNewest`, shows the newest unless a draft or load started meanwhile. */
  async refresh(imageId, showNewest = false) {
    const seq = this.seq;
    const listSeq = ++this.listSeq;
    try {
      const { versions } = await api(`/images/${encodeURIComponent(imageId)}/reports`);
      if (imageId !== this.imageId || listSeq !== this.listSeq) return;
      this.versions.dataset.imageId = String(imageId);
      this.versions.replaceChildren(...(versions.length ? versions.map((v) => this.versionItem(v))
        : [el("li", { class: "empty", textContent: "No saved report yet." })]));
      this.update();
      if (showNewest && versions.length && seq === this.seq) await this.load(versions[0].version, false);
    } catch (error) {
      if (imageId === this.imageId) showError(error, "saved reports");
    }
  }

  versionItem(v) {
    const final = v.status === "final";
    const mark = el("button", { type: "button", class: "link", testid: "report-version-status", textContent: final ? "Make draft" : "Mark final",
      title: final ? "Make this version a draft again (drafts can be deleted)" : "Mark this version final (final versions cannot be deleted)" });
    const remove = el("button", { type: "button", class: "link", testid: "report-version-delete", textContent: "Delete", disabled: final,
      title: final ? "A final version cannot be deleted: make it a draft first" : "Delete this version (set aside on the server; its number is not reused)" });
    const when = v.created ? new Date(v.created).toLocaleString() : "";
    const item = el("li", {
      class: "annotation-item", testid: "report-version", tabIndex: 0, title: "Show this version",
      dataset: { version: String(v.version), status: v.status },
    },
    el("span", { class: "title", textContent: `v${v.version} ` }, el("span", { class: `status ${v.status}`, textContent: v.status })),
    el("span", { class: "sub", textContent: [v.author || "no author", when, v.edited ? "edited" : "as drafted"].filter(Boolean).join(" · ") }),
    el("span", { class: "sub", textContent: v.preview }),
    el("span", { class: "version-actions" }, mark, remove));
    item.addEventListener("click", () => this.load(v.version));
    item.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target === item) this.load(v.version); });
    mark.addEventListener("click", (e) => { e.stopPropagation(); this.setVersionStatus(this.imageId, v.version, final ? "draft" : "final"); });
    remove.addEventListener("click", (e) => { e.stopPropagation(); this.remove(v.version); });
    return item;
  }

  /** Shows saved version `version`; with `ask`, asks first when that would replace unsaved edits. */
  async load(version, ask = true) {
    if (!this.imageId) return;
    if (ask && this.dirty && !window.confirm(`${UNSAVED} Loading v${version} replaces them. Load anyway?\n(Cancel keeps your text: save it first.)`)) {
      setStatus(`kept your unsaved report; v${version} not loaded`);
      return;
    }
    const imageId = this.imageId;
    const seq = ++this.seq;
    try {
      const record = await api(`/images/${encodeURIComponent(imageId)}/reports/${version}`);
      if (seq !== this.seq || imageId !== this.imageId) return;
      this.note.textContent = `Saved version ${record.version} (${record.status}${record.author ? `, ${record.author}` : ""}).`;
      this.showSentences(record.sentences, { version: record.version, status: record.status }, record.edited);
    } catch (error) {
      if (seq === this.seq) showError(error, "load report");
    }
  }

  /** Saves the text shown as the image's next version (a draft): its number, or null when nothing was saved. */
  async save() {
    const imageId = this.imageId;
    const sentences = this.sentences();
    if (!imageId || !sentences.length) return null;
    const seq = this.seq;
    const changes = this.changes;
    this.saveButton.disabled = this.finalButton.disabled = true;
    try {
      const author = this.author();
      const saved = await api(`/images/${encodeURIComponent(imageId)}/reports`, {
        method: "POST", body: { sentences, edited: this.edited, ...(author ? { author } : {}) },
      });
      setStatus(`saved report v${saved.version}`);
      if (imageId !== this.imageId) return null;
      if (seq === this.seq) {
        this.shown = { version: saved.version, status: saved.status };
        this.changes -= changes; // edits typed while saving stay unsaved
        this.note.textContent = `Saved version ${saved.version} (draft).`;
      }
      await this.refresh(imageId);
      return saved.version;
    } catch (error) {
      showError(error, "save report");
      return null;
    } finally {
      this.update();
    }
  }

  /** Marks the text shown final, saving it first as a new version when it is not saved as shown. */
  async markFinal() {
    const imageId = this.imageId;
    const version = this.shown && !this.dirty ? this.shown.version : await this.save();
    if (version && imageId === this.imageId) await this.setVersionStatus(imageId, version, "final");
  }

  async setVersionStatus(imageId, version, status) {
    try {
      await api(`/images/${encodeURIComponent(imageId)}/reports/${version}`, { method: "PATCH", body: { status } });
      setStatus(`report v${version} is now ${status}`);
      if (imageId !== this.imageId) return;
      if (this.shown && this.shown.version === version) this.shown = { version, status };
      await this.refresh(imageId);
    } catch (error) {
      showError(error, "report version");
    }
  }

  async remove(version) {
    if (!window.confirm(`Delete report v${version}? The server sets it aside; the list will no longer show it.`)) return;
    const imageId = this.imageId;
    try {
      await api(`/images/${encodeURIComponent(imageId)}/reports/${version}`, { method: "DELETE" });
      setStatus(`deleted report v${version}`);
      if (imageId !== this.imageId) return;
      if (this.shown && this.shown.version === version) { this.shown = null; this.changes++; } // the text stays, unsaved
      await this.refresh(imageId);
    } catch (error) {
      showError(error, "delete report");
    }
  }

  /** Downloads the saved version shown (or, with unsaved edits, the text as it stands) as a DICOM SR. */
  async downloadSr() {
    const imageId = this.imageId;
    const sentences = this.sentences();
    if (!imageId || !sentences.length) return;
    const version = this.shown && !this.dirty ? this.shown.version : null;
    this.srButton.disabled = true;
    try {
      const response = version
        ? await api(`/images/${encodeURIComponent(imageId)}/reports/${version}/sr`)
        : await api("/report/sr", { method: "POST", body: { image_id: imageId, sentences, edited: this.edited } });
      const blob = await response.blob();
      if (imageId !== this.imageId) return;
      const name = version ? `report-${imageId}-v${String(version).padStart(4, "0")}.dcm` : `report-${imageId}.dcm`;
      const link = el("a", { href: URL.createObjectURL(blob), download: name });
      this.srButton.dataset.bytes = String(blob.size);
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 0);
      setStatus(`downloaded ${version ? `report v${version}` : "the report"} as a DICOM SR (marked machine-generated, unverified)`);
    } catch (error) {
      showError(error, "DICOM SR");
    } finally {
      this.update();
    }
  }
}
