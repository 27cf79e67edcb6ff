// The annotate → train → auto-segment loop, as MONAI Label runs it in a viewer: train an automatic
// segmenter on the versions marked final (a server job with progress and a cancel button), propose
// a draft version on the open image for the user to correct and save, and go on to the next image.
// "Next" opens, among the next few images in catalog order with no final version, the one the chosen
// model is least sure of (mean entropy, as active learning ranks them); with no model yet, simply the
// next such image in catalog order.

import { ApiError, api, query, setStatus, showError, waitForJob } from "./api.js";
import { el } from "./panels.js";

/** "1=liver,2=tumour" → {1: "liver", 2: "tumour"}; empty → undefined (the server names what it finds). */
export function parseLabels(text) {
  const trimmed = text.trim();
  if (!trimmed) return undefined;
  const labels = {};
  for (const part of trimmed.split(",")) {
    const match = /^\s*(\d{1,3})\s*=\s*(.+?)\s*$/.exec(part);
    if (!match) throw new Error(`labels are VALUE=NAME pairs, e.g. 1=liver,2=tumour; got "${part.trim()}"`);
    labels[match[1]] = match[2];
  }
  return labels;
}

const diceText = (model) => {
  const scores = Object.values(model.validation || {}).map((label) => `${label.name} ${label.dice?.value?.toFixed(3) ?? "undefined"}`);
  return scores.length ? `validation Dice ${scores.join(", ")} (${model.val_images} held-out images)` : "no validation score";
};

export class Loop {
  /**
   * `current()`: the open image's id or null; `open(id)` opens an image; `loadVersion(name, version)` loads
   * a saved version into a new session; `annotationName()`: the name saves use; `onSaved(id)` lists an image's versions again.
   */
  constructor(root, { current, open, loadVersion, annotationName, onSaved }) {
    this.q = (testid) => root.querySelector(`[data-testid=${testid}]`);
    Object.assign(this, { current, open, loadVersion, annotationName, onSaved });
    this.job = null;
    this.q("train-start").addEventListener("click", () => this.train());
    this.q("train-cancel").addEventListener("click", () => this.cancel());
    this.q("auto-segment").addEventListener("click", () => this.autoSegment());
    this.q("next-unlabelled").addEventListener("click", () => this.next());
  }

  /** The trained models (newest first) into the list, the latest one's score until a training here says more;
   *  follows a training already running (after a reload). */
  async refresh() {
    try {
      const { models, training } = await api("/seg-models");
      const select = this.q("seg-model");
      const chosen = select.value;
      select.replaceChildren(...models.map((m) => el("option", { value: m.name, textContent: m.name, title: diceText(m) })));
      if (models.some((m) => m.name === chosen)) select.value = chosen;
      this.q("auto-segment").disabled = !models.length;
      const note = this.q("train-note");
      if (models.length && !note.dataset.state) note.textContent = `latest model ${models[0].name}: ${diceText(models[0])}`;
      if (training && !this.job) this.follow(training);
    } catch (error) {
      showError(error, "models");
    }
  }

  async train() {
    let body;
    try {
      body = { budget_minutes: Number(this.q("train-budget").value), labels: parseLabels(this.q("train-labels").value) };
    } catch (error) {
      showError(error, "train");
      return;
    }
    try {
      this.follow(await api("/train/seg", { method: "POST", body }));
    } catch (error) {
      showError(error, "train");
    }
  }

  /** Shows a training job's progress until it ends: `{job, model}`. */
  async follow({ job, model }) {
    this.job = job;
    const progress = this.q("train-progress");
    const note = this.q("train-note");
    this.q("train-start").disabled = true;
    this.q("train-cancel").hidden = false;
    progress.hidden = false;
    progress.value = 0;
    let trained = false;
    note.textContent = `training ${model}…`;
    note.dataset.state = "running";
    try {
      const result = await waitForJob(job, (done, total, state) => {
        progress.value = total ? done / total : 0;
        note.textContent = state === "cancelling" ? `cancelling ${model}…` : `training ${model}… ${Math.round(100 * progress.value)} %`;
      });
      note.textContent = `trained ${model} (${result.steps} steps, ${result.training_seconds} s): ${diceText(result)}`;
      note.dataset.state = "done";
      trained = true;
      setStatus(`trained ${model}`);
    } catch (error) {
      const cancelled = error instanceof ApiError && error.message === "cancelled";
      note.textContent = cancelled ? `training of ${model} cancelled` : `training of ${model} failed: ${error.message}`;
      note.dataset.state = cancelled ? "cancelled" : "failed";
      if (!cancelled) showError(error, "train");
    } finally {
      this.job = null;
      this.q("train-start").disabled = false;
      this.q("train-cancel").hidden = true;
      progress.hidden = true;
    }
    await this.refresh();
    if (trained) this.q("seg-model").value = model;
  }

  async cancel() {
    if (!this.job) return;
    try {
      await api(`/jobs/${encodeURIComponent(this.job)}/cancel`, { method: "POST" });
    } catch (error) {
      showError(error, "cancel");
    }
  }

  /** The selected model on the open image: a new draft version, loaded for correcting. */
  async autoSegment() {
    const imageId = this.current();
    const model = this.q("seg-model").value;
    if (imageId === null || !model) { showError(imageId === null ? "open an image first" : "train a model first", "auto-segment"); return; }
    const button = this.q("auto-segment");
    button.disabled = true;
    try {
      const saved = await api("/segment/auto", { method: "POST", body: { image_id: Number(imageId), model, name: this.annotationName() } });
      const sure = Object.values(saved.confidence).map((c) => c.toFixed(2)).join(", ");
      await this.onSaved(imageId);
      if (this.current() === imageId) await this.loadVersion(saved.name, saved.version);
      setStatus(`${model} proposed ${saved.name} v${saved.version} (draft; mean confidence ${sure}): correct it, save, mark final`);
    } catch (error) {
      showError(error, "auto-segment");
    } finally {
      button.disabled = false;
    }
  }

  /** Opens the next image without a final version (the least sure of the next few, with a model). */
  async next() {
    try {
      const { image_id: id, remaining, uncertainty } = await api(`/unlabelled/next${query({ after: this.current(), model: this.q("seg-model").value })}`);
      if (id === null) { setStatus("every image has a final version"); return; }
      const unsure = uncertainty === null ? "" : `; the model is least sure of this one (uncertainty ${uncertainty.toFixed(2)})`;
      setStatus(`${remaining} image${remaining === 1 ? "" : "s"} without a final version${unsure}`);
      await this.open(id);
    } catch (error) {
      showError(error, "next");
    }
  }
}
