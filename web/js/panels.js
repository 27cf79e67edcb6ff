// Side panels: the catalog (filter, thumbnails), similar cases and text search, zero-shot
// classification, and the saved annotations of the open image.

import { api, apiUrl, query, showError, waitForJob, setStatus } from "./api.js";

/** A DOM element: `testid`, `dataset` and `class` props, the rest set as properties; children appended. */
export const el = (tag, props = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "testid") node.setAttribute("data-testid", value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key === "class") node.className = value;
    else node[key] = value;
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
};

function describe(image) {
  const dims = [];
  if (image.shape) dims.push(image.shape.slice(0, 2).join("×"));
  if ((image.num_slices || 1) > 1) dims.push(`${image.num_slices} slices`);
  if ((image.num_frames || 1) > 1) dims.push(`${image.num_frames} frames`);
  return dims.join(" · ");
}

export function thumb(id) {
  return el("img", { class: "thumb", src: apiUrl(`/images/${encodeURIComponent(id)}/thumbnail.png`), alt: "", loading: "lazy", decoding: "async" });
}

// ---- catalog ------------------------------------------------------------------------

/** Images per page: the server sorts and pages, so a catalog of any size lists as fast as a small one. */
export const PAGE_SIZE = 50;

/** How a group header names a patient: the pseudonym, or with names asked for, the name the DICOM header gives. */
function patientTitle(image) {
  if (!image.patient) return "No patient (files)";
  const name = image.phi && (image.phi.patient_name || image.phi.patient_id);
  return name ? `Patient ${String(name).replaceAll("^", " ")}` : `Patient ${image.patient}`;
}

export class Catalog {
  /** `onOpen(id)` opens an image; `isOpen(id)` says whether it is the one shown (which cannot be deleted);
   *  `onTicked(ids)` hears of the images ticked in the list (a selection to work on, kept across pages). */
  constructor(root, onOpen, isOpen = () => false, onTicked = () => {}) {
    this.root = root;
    this.onOpen = onOpen;
    this.isOpen = isOpen;
    this.onTicked = onTicked;
    this.ticked = new Set();
    this.list = root.querySelector("[data-testid=catalog-list]");
    this.text = root.querySelector("[data-testid=catalog-filter]");
    this.modality = root.querySelector("[data-testid=modality-filter]");
    this.count = root.querySelector("[data-testid=catalog-count]");
    this.sort = root.querySelector("[data-testid=catalog-sort]");
    this.order = root.querySelector("[data-testid=catalog-order]");
    this.phi = root.querySelector("[data-testid=catalog-phi]");
    this.range = root.querySelector("[data-testid=catalog-range]");
    this.prev = root.querySelector("[data-testid=catalog-prev]");
    this.next = root.querySelector("[data-testid=catalog-next]");
    this.images = [];
    this.total = 0;
    this.offset = 0;
    this.descending = false;
    this.selected = null;
    this.seq = 0;
    this.renaming = false; // a list that arrives during a rename waits, so the typed name is not lost
    let timer = null;
    const fromStart = () => { this.offset = 0; this.load(); };
    this.text.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(fromStart, 250); });
    for (const control of [this.modality, this.sort, this.phi]) control.addEventListener("change", fromStart);
    this.order.addEventListener("click", () => {
      this.descending = !this.descending;
      this.order.textContent = this.descending ? "↑" : "↓";
      this.order.setAttribute("aria-pressed", String(this.descending));
      fromStart();
    });
    this.prev.addEventListener("click", () => { this.offset = Math.max(0, this.offset - PAGE_SIZE); this.load(); });
    this.next.addEventListener("click", () => { this.offset += PAGE_SIZE; this.load(); });
  }

  async load() {
    const seq = ++this.seq;
    try {
      const params = { text: this.text.value.trim(), modality: this.modality.value, sort: this.sort.value,
        order: this.descending ? "desc" : "asc", offset: this.offset, limit: PAGE_SIZE, show_phi: this.phi.checked ? "true" : "" };
      const { images, total, modalities } = await api(`/images${query(params)}`);
      if (seq !== this.seq) return;
      if (!images.length && total && this.offset) { this.offset = Math.max(0, total - PAGE_SIZE); this.load(); return; } // the last page emptied
      this.images = images;
      this.total = total;
      this.fillModalities(modalities || []);
      this.render();
    } catch (error) {
      showError(error, "catalog");
    }
  }

  /** The modality menu: every modality the catalog holds (the server's list, not just this page's). */
  fillModalities(names) {
    const current = this.modality.value;
    const have = [...this.modality.options].map((o) => o.value).filter(Boolean);
    if (have.join() === names.join()) return;
    this.modality.replaceChildren(el("option", { value: "", textContent: "All modalities" }),
      ...names.map((m) => el("option", { value: m, textContent: m })));
    this.modality.value = names.includes(current) ? current : "";
  }

  render() {
    if (this.renaming) return;
    this.count.textContent = `${this.total} image${this.total === 1 ? "" : "s"}`;
    const last = Math.min(this.offset + this.images.length, this.total);
    this.range.textContent = this.total ? `${this.offset + 1}–${last} of ${this.total}` : "";
    this.prev.disabled = this.offset === 0;
    this.next.disabled = last >= this.total;
    this.root.querySelector("[data-testid=catalog-pager]").hidden = this.total <= PAGE_SIZE;
    if (!this.images.length) {
      this.list.replaceChildren(el("li", { class: "empty", textContent: "No images. Drop files here or use “Add files…”." }));
      return;
    }
    const grouped = this.sort.value === "patient";
    const rows = [];
    let patient, study;
    for (const image of this.images) {
      if (grouped && (rows.length === 0 || image.patient !== patient)) {
        rows.push(el("li", { class: "catalog-group patient", testid: "catalog-patient", dataset: { patient: image.patient || "" }, textContent: patientTitle(image) }));
        study = undefined;
      }
      if (grouped && image.study && image.study !== study) {
        rows.push(el("li", { class: "catalog-group study", testid: "catalog-study", dataset: { study: String(image.study) }, textContent: `Study ${image.study}` }));
      }
      [patient, study] = [image.patient, image.study];
      rows.push(this.item(image));
    }
    this.list.replaceChildren(...rows);
  }

  item(image) {
    const title = el("div", { class: "title", testid: "catalog-name", textContent: image.name });
    const rename = el("button", { type: "button", class: "icon", testid: "catalog-rename", textContent: "✎", title: "Rename" });
    const remove = el("button", { type: "button", class: "icon", testid: "catalog-delete", textContent: "✕",
      title: "Delete from the catalog (its files stay on disk; its saved annotations are set aside)" });
    const tick = el("input", { type: "checkbox", class: "catalog-check", testid: "catalog-check", checked: this.ticked.has(String(image.id)),
      title: "Select (Auto-segment works on the selected images)", ariaLabel: `select ${image.name}` });
    const item = el("li", {
      class: "catalog-item" + (String(image.id) === this.selected ? " selected" : ""), testid: "catalog-item",
      dataset: { imageId: image.id, patient: image.patient || "", study: image.study ? String(image.study) : "" }, tabIndex: 0,
      title: `Open ${image.name}`,
    },
    tick,
    thumb(image.id),
    el("div", { class: "meta" },
      ...(image.synthetic ? [el("span", { class: "badge", testid: "synthetic-badge", textContent: "SYNTHETIC", title: "Generated, not acquired" })] : []),
      title,
      el("div", { class: "sub", textContent: [image.modality, image.body_part, image.dataset, image.format].filter(Boolean).join(" · ") }),
      el("div", { class: "sub", textContent: describe(image) })),
    el("div", { class: "actions" }, rename, remove));
    tick.addEventListener("click", (e) => e.stopPropagation());
    tick.addEventListener("change", () => {
      if (tick.checked) this.ticked.add(String(image.id));
      else this.ticked.delete(String(image.id));
      this.onTicked([...this.ticked]);
    });
    item.addEventListener("click", () => this.onOpen(image.id));
    item.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target === item) this.onOpen(image.id); });
    rename.addEventListener("click", (e) => { e.stopPropagation(); this.startRename(image, title); });
    remove.addEventListener("click", (e) => { e.stopPropagation(); this.remove(image); });
    return item;
  }

  startRename(image, title) {
    const input = el("input", { type: "text", value: image.name, maxLength: 200, testid: "catalog-name-input", ariaLabel: "new name" });
    let done = false;
    const finish = async (commit) => {
      if (done) return;
      done = true;
      this.renaming = false;
      const name = input.value.trim();
      if (!commit || !name || name === image.name) { this.render(); return; }
      try {
        const renamed = await api(`/images/${encodeURIComponent(image.id)}`, { method: "PATCH", body: { name } });
        setStatus(`renamed to ${renamed.name}`);
      } catch (error) {
        showError(error, "rename");
      }
      await this.load();
    };
    input.addEventListener("click", (e) => e.stopPropagation());
    input.addEventListener("keydown", (e) => {
      e.stopPropagation();
      if (e.key === "Enter") finish(true);
      if (e.key === "Escape") finish(false);
    });
    input.addEventListener("blur", () => finish(true));
    this.renaming = true;
    title.replaceChildren(input);
    input.focus();
    input.select();
  }

  async remove(image) {
    if (this.isOpen(image.id)) { setStatus(`${image.name} is open: open another image before deleting it`, "warning"); return; }
    if (!window.confirm(`Delete “${image.name}” from the catalog? Its files stay on disk and its saved annotations are set aside.`)) return;
    try {
      await api(`/images/${encodeURIComponent(image.id)}`, { method: "DELETE" });
      if (this.ticked.delete(String(image.id))) this.onTicked([...this.ticked]);
      setStatus(`deleted ${image.name} from the catalog`);
    } catch (error) {
      showError(error, "delete");
    }
    await this.load();
  }

  /** Unticks every image. */
  clearTicked() {
    this.ticked.clear();
    for (const box of this.list.querySelectorAll("[data-testid=catalog-check]")) box.checked = false;
    this.onTicked([]);
  }

  select(id) {
    this.selected = String(id);
    for (const item of this.list.querySelectorAll(".catalog-item")) item.classList.toggle("selected", item.dataset.imageId === this.selected);
  }
}

// ---- similar cases and text search ------------------------------------------------

export class Similar {
  constructor(root, onOpen) {
    this.root = root;
    this.onOpen = onOpen;
    this.list = root.querySelector("[data-testid=similar-list]");
    this.note = root.querySelector("[data-testid=similar-note]");
    this.textInput = root.querySelector("[data-testid=text-search]");
    this.buildButton = root.querySelector("[data-testid=index-build]");
    this.imageId = null;
    this.seq = 0;
    this.onIndexed = () => {};
    root.querySelector("[data-testid=text-search-form]").addEventListener("submit", (e) => {
      e.preventDefault();
      const text = this.textInput.value.trim();
      if (text) this.search({ text }, `Images matching “${text}”`);
    });
    this.buildButton.addEventListener("click", () => this.build());
  }

  async forImage(id) {
    const another = String(id) !== String(this.imageId);
    this.imageId = id;
    const seq = ++this.seq; // an answer for the image shown before is dropped
    // another image's hits go at once; a refresh for the same image keeps its list until the new answer
    if (another) this.list.replaceChildren();
    this.note.textContent = "Searching…";
    try {
      const health = await api("/health");
      if (seq !== this.seq || id !== this.imageId) return;
      if (!health.index_size) {
        this.list.replaceChildren();
        this.note.textContent = "The search index is empty: build it to see similar cases.";
        return;
      }
    } catch (error) {
      showError(error, "health");
      return;
    }
    await this.search({ image_id: id }, "Most similar to the open image");
  }

  async search(params, heading) {
    const seq = ++this.seq;
    this.note.textContent = "Searching…";
    try {
      const { hits } = await api(`/search${query({ ...params, k: 8 })}`);
      if (seq !== this.seq || (params.image_id !== undefined && params.image_id !== this.imageId)) return;
      this.render(hits, params.image_id, heading);
    } catch (error) {
      if (seq !== this.seq) return;
      this.list.replaceChildren();
      this.note.textContent = `Search unavailable: ${error.message}. Build the index to enable it.`;
    }
  }

  render(hits, selfId, heading) {
    const shown = hits.filter((h) => selfId === undefined || String(h.image_id) !== String(selfId));
    this.note.textContent = shown.length ? heading : "No hits yet: the index may be empty. Build it below.";
    this.list.replaceChildren(...shown.map((hit) => {
      const name = hit.name;
      const about = [name, hit.modality, hit.body_part, hit.dataset].filter(Boolean).join(" · ");
      const item = el("li", {
        class: "hit", testid: "similar-item", dataset: { imageId: hit.image_id, score: String(hit.score) }, tabIndex: 0,
        title: `${about}\nsimilarity ${Number(hit.score).toFixed(3)}: click to open`,
      },
      thumb(hit.image_id),
      el("span", { class: "hit-name", textContent: name }),
      el("span", { class: "score", testid: "similar-score", textContent: Number(hit.score).toFixed(3) }));
      item.addEventListener("click", () => this.onOpen(hit.image_id));
      item.addEventListener("keydown", (e) => { if (e.key === "Enter") this.onOpen(hit.image_id); });
      return item;
    }));
  }

  async build() {
    this.buildButton.disabled = true;
    this.note.textContent = "Building the index…";
    try {
      const { job } = await api("/index/build", { method: "POST", body: {} });
      await waitForJob(job, (done, total) => { this.note.textContent = `Building the index… ${done}/${total || "?"}`; });
      setStatus("index built");
      this.onIndexed();
      if (this.imageId) await this.forImage(this.imageId);
      else this.note.textContent = "Index built.";
    } catch (error) {
      showError(error, "index");
      this.note.textContent = "Index build failed.";
    } finally {
      this.buildButton.disabled = false;
    }
  }
}

function modelName(model) {
  if (!model) return "";
  if (typeof model === "string") return `model: ${model}`;
  const hash = model.weights_sha256 ? ` (weights ${String(model.weights_sha256).slice(0, 8)})` : "";
  return `model: ${model.name || model.id || "?"}${hash}`;
}

// ---- zero-shot ----------------------------------------------------------------------

export class ZeroShot {
  constructor(root) {
    this.input = root.querySelector("[data-testid=zeroshot-labels]");
    this.result = root.querySelector("[data-testid=zeroshot-result]");
    this.button = root.querySelector("[data-testid=zeroshot-run]");
    this.imageId = null;
    root.querySelector("[data-testid=zeroshot-form]").addEventListener("submit", (e) => { e.preventDefault(); this.run(); });
  }

  setImage(id) {
    this.imageId = id;
    this.button.disabled = !id;
    this.result.replaceChildren();
  }

  async run() {
    if (!this.imageId) return;
    const labels = [...new Set(this.input.value.split(",").map((s) => s.trim()).filter(Boolean))];
    if (labels.length < 2) { showError("give at least two labels, separated by commas"); return; }
    this.button.disabled = true;
    const imageId = this.imageId;
    try {
      const answer = await api(`/images/${encodeURIComponent(imageId)}/classify`, { method: "POST", body: { labels } });
      if (imageId !== this.imageId) return; // another image was opened meanwhile: this answer is not about it
      const rows = Object.entries(answer.probabilities).sort((a, b) => b[1] - a[1]);
      this.result.replaceChildren(...rows.map(([label, p]) => el("div", {
        class: "bar-row" + (label === answer.prediction ? " top" : ""), testid: "zeroshot-bar", dataset: { label, p: String(p) },
      },
      el("span", { class: "bar-label", textContent: label }),
      el("span", { class: "bar" }, el("span", { class: "fill", style: `width:${(100 * p).toFixed(1)}%` })),
      el("span", { class: "bar-value", textContent: `${(100 * p).toFixed(1)} %` }))),
      el("div", { class: "note", testid: "zeroshot-model", textContent: modelName(answer.model) }));
    } catch (error) {
      if (imageId === this.imageId) showError(error, "zero-shot");
    } finally {
      this.button.disabled = !this.imageId;
    }
  }
}

// ---- saved annotations ----------------------------------------------------------------

/**
 * The saved versions by structure name: [[structure, [[annotation name, version]]]], structures
 * in alphabetical order, each one's versions newest first. A version appears under every
 * structure it holds voxels of; one that holds none, under its annotation's name.
 */
export function byStructure(annotations) {
  const groups = new Map();
  for (const ann of annotations) {
    for (const v of ann.versions) {
      const drawn = Object.keys(v.voxels || {}).map((value) => v.labels?.[value]?.name || `structure ${value}`);
      for (const structure of new Set(drawn.length ? drawn : [ann.name])) {
        if (!groups.has(structure)) groups.set(structure, []);
        groups.get(structure).push([ann.name, v]);
      }
    }
  }
  const newestFirst = ([nameA, a], [nameB, b]) => (Date.parse(b.created) || 0) - (Date.parse(a.created) || 0)
    || nameA.localeCompare(nameB) || b.version - a.version;
  return [...groups].sort(([a], [b]) => a.localeCompare(b)).map(([structure, versions]) => [structure, versions.sort(newestFirst)]);
}

export class Annotations {
  /** `onLoad(name, version)` opens a version; `push(imageId, name, version)` sends a DICOM SEG to the PACS. */
  constructor(root, onLoad, push) {
    this.list = root.querySelector("[data-testid=annotation-list]");
    this.onLoad = onLoad;
    this.push = push;
    this.imageId = null;
    this.annotations = [];
    this.pacs = false;
    this.sent = new Set();
  }

  /** Whether a PACS is configured (from /api/health): DICOM SEG versions then get "Send to PACS". */
  setPacs(on) {
    if (this.pacs === Boolean(on)) return;
    this.pacs = Boolean(on);
    if (this.imageId) this.render(this.annotations);
  }

  async load(imageId) {
    this.imageId = imageId;
    if (!imageId) { this.list.replaceChildren(); return; }
    try {
      const { annotations } = await api(`/images/${encodeURIComponent(imageId)}/annotations`);
      if (imageId !== this.imageId) return;
      this.annotations = annotations;
      this.render(annotations);
    } catch (error) {
      showError(error, "annotations");
    }
  }

  render(annotations) {
    const items = [];
    for (const [structure, versions] of byStructure(annotations)) {
      items.push(el("li", { class: "annotation-group", testid: "annotation-group", dataset: { structure }, textContent: structure }));
      for (const [name, v] of versions) items.push(this.item(name, v, structure));
    }
    this.list.replaceChildren(...(items.length ? items : [el("li", { class: "empty", textContent: "None saved yet." })]));
  }

  item(name, v, structure) {
    const when = v.created ? new Date(v.created).toLocaleString() : "";
    const final = v.status === "final";
    const status = el("span", { class: `status ${v.status}`, testid: "annotation-status", textContent: v.status });
    const mark = el("button", { type: "button", class: "link", testid: "annotation-final", textContent: final ? "Make draft" : "Mark final",
      title: final ? "Make this version a draft again (drafts can be deleted)" : "Mark this version final (final versions cannot be deleted)" });
    const remove = el("button", { type: "button", class: "link", testid: "annotation-delete", textContent: "Delete", disabled: final,
      title: final ? "A final version cannot be deleted: make it a draft first" : "Delete this version (it is set aside on the server; its number is not reused)" });
    const item = el("li", {
      class: "annotation-item", testid: "annotation-item", tabIndex: 0,
      dataset: { name, version: String(v.version), status: v.status, structure }, title: "Load into a new session",
    },
    el("span", { class: "title", textContent: `${name} v${v.version} ` }, status),
    el("span", { class: "sub", textContent: [v.author || "no author", when, v.format === "dicom-seg" ? "DICOM SEG" : "NIfTI"].filter(Boolean).join(" · ") }),
    el("span", { class: "version-actions" }, mark, remove),
    this.pacs && v.format === "dicom-seg" ? this.pushButton(name, v.version) : null);
    item.addEventListener("click", () => this.onLoad(name, v.version));
    item.addEventListener("keydown", (e) => { if (e.key === "Enter" && e.target === item) this.onLoad(name, v.version); });
    mark.addEventListener("click", (e) => { e.stopPropagation(); this.setStatus(name, v.version, final ? "draft" : "final"); });
    remove.addEventListener("click", (e) => { e.stopPropagation(); this.remove(name, v.version); });
    return item;
  }

  async setStatus(name, version, status) {
    const imageId = this.imageId;
    try {
      await api(`/images/${encodeURIComponent(imageId)}/annotations/${encodeURIComponent(name)}/${version}`, { method: "PATCH", body: { status } });
      setStatus(`${name} v${version} is now ${status}`);
    } catch (error) {
      showError(error, "version");
    }
    await this.load(imageId);
  }

  async remove(name, version) {
    if (!window.confirm(`Delete ${name} v${version}? The server sets it aside; the list will no longer show it.`)) return;
    const imageId = this.imageId;
    try {
      await api(`/images/${encodeURIComponent(imageId)}/annotations/${encodeURIComponent(name)}/${version}`, { method: "DELETE" });
      setStatus(`deleted ${name} v${version}`);
    } catch (error) {
      showError(error, "delete version");
    }
    await this.load(imageId);
  }

  pushButton(name, version) {
    const imageId = this.imageId;
    const key = `${imageId}/${name}/${version}`;
    const sent = this.sent.has(key);
    const button = el("button", {
      type: "button", class: "push", testid: "pacs-push", textContent: sent ? "Sent ✓" : "Send to PACS",
      title: sent ? "Stored on the PACS; click to send it again" : "Store this DICOM SEG on the PACS, with its study",
    });
    button.addEventListener("click", async (e) => {
      e.stopPropagation();
      button.disabled = true;
      button.textContent = "Sending…";
      try {
        await this.push(imageId, name, version);
        this.sent.add(key);
        button.textContent = "Sent ✓";
        button.title = "Stored on the PACS; click to send it again";
        setStatus(`${name} v${version} sent to PACS`);
      } catch (error) {
        button.textContent = "Send to PACS";
        showError(error, "send to PACS");
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }
}
