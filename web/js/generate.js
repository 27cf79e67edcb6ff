// The Generate panel: choose a generator and its class or text condition, sample N images as a
// server job, and show them as thumbnails marked SYNTHETIC that open in the viewer. The server
// catalogues them with the synthetic flag, as `medfm generate` marks its files.

import { api, setStatus, showError, waitForJob } from "./api.js";
import { el, thumb } from "./panels.js";

export class Generate {
  /** `onOpen(id)` opens an image; `onCatalogued()` refreshes what lists the catalog. */
  constructor(root, onOpen, onCatalogued) {
    this.onOpen = onOpen;
    this.onCatalogued = onCatalogued;
    this.generator = root.querySelector("[data-testid=generate-generator]");
    this.classSelect = root.querySelector("[data-testid=generate-class]");
    this.condition = root.querySelector("[data-testid=generate-condition]");
    this.n = root.querySelector("[data-testid=generate-n]");
    this.button = root.querySelector("[data-testid=generate-run]");
    this.note = root.querySelector("[data-testid=generate-note]");
    this.list = root.querySelector("[data-testid=generate-list]");
    this.generators = [];
    this.seq = 0;
    this.generator.addEventListener("change", () => this.showConditions());
    root.querySelector("[data-testid=generate-form]").addEventListener("submit", (e) => { e.preventDefault(); this.run(); });
  }

  async load() {
    try {
      ({ generators: this.generators } = await api("/generators"));
    } catch (error) {
      showError(error, "generators");
      return;
    }
    this.generator.replaceChildren(...this.generators.map((g) => el("option", { value: g.name, textContent: g.name })));
    this.note.textContent = this.generators.length ? "" : "No generator yet: train one with medfm train generator into the data directory's generators/ folder.";
    this.showConditions();
  }

  chosen() {
    return this.generators.find((g) => g.name === this.generator.value);
  }

  showConditions() {
    const generator = this.chosen();
    const classes = generator && generator.condition === "class" ? generator.classes : [];
    this.classSelect.replaceChildren(el("option", { value: "", textContent: "every class in turn" }),
      ...classes.map((name) => el("option", { value: name, textContent: name })));
    this.classSelect.hidden = !classes.length;
    this.condition.hidden = !generator || generator.condition !== "text";
    this.button.disabled = !generator;
  }

  async run() {
    const generator = this.chosen();
    if (!generator) return;
    const body = { generator: generator.name, n: Number(this.n.value) };
    if (!this.classSelect.hidden && this.classSelect.value) body.class = this.classSelect.value;
    if (!this.condition.hidden && this.condition.value.trim()) body.condition = this.condition.value.trim();
    const seq = ++this.seq;
    this.button.disabled = true;
    this.note.textContent = "Generating…";
    try {
      const { job } = await api("/generate", { method: "POST", body });
      const result = await waitForJob(job, (done, total) => {
        if (seq === this.seq) this.note.textContent = `Generating… ${done}/${total || body.n}`;
      });
      if (seq !== this.seq) return;
      this.render(result);
      const masks = result.images.some((image) => image.mask_version !== undefined)
        ? " Each has its mask as a draft annotation version \u201cgenerated-mask\u201d." : "";
      this.note.textContent = `${result.images.length} synthetic image(s) from ${result.generator}, ${result.steps} steps: added to the catalog, flagged synthetic.${masks}`;
      setStatus(`generated ${result.images.length} synthetic image(s)`);
      this.onCatalogued();
    } catch (error) {
      if (seq === this.seq) { this.note.textContent = ""; showError(error, "generate"); }
    } finally {
      if (seq === this.seq) this.button.disabled = !this.chosen();
    }
  }

  render(result) {
    this.list.replaceChildren(...result.images.filter((image) => image.image_id !== null).map((image) => {
      const item = el("li", {
        class: "hit synthetic", testid: "generated-item", tabIndex: 0,
        dataset: { imageId: String(image.image_id), condition: image.condition ?? "", seed: String(image.seed) },
        title: `SYNTHETIC: made by ${result.generator} (${image.condition ?? "no condition"}, seed ${image.seed})`
          + `${image.mask_version === undefined ? "" : ", with its mask"}; click to open`,
      },
      thumb(image.image_id),
      el("span", { class: "badge", testid: "synthetic-badge", textContent: "SYNTHETIC" }),
      el("span", { class: "hit-name", textContent: image.condition ?? "" }));
      item.addEventListener("click", () => this.onOpen(image.image_id));
      item.addEventListener("keydown", (e) => { if (e.key === "Enter") this.onOpen(image.image_id); });
      return item;
    }));
  }
}
