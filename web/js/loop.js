// The annotate → train → auto-segment loop, as MONAI Label runs it in a viewer: train an automatic
// segmenter, or fine-tune the promptable segmenter the tools use (an adapter), on the versions marked
// final (a server job with progress and a cancel button; one training at a time); propose a draft version
// on the open image, or on each image ticked in the list (a job), for the user to correct and save; and go
// on to the next image. "Next" opens, among the next few images in catalog order with no final version,
// the one the chosen model is least sure of (by mean entropy or by how much Monte Carlo dropout passes
// disagree, as active learning ranks them); with no model yet, simply the next such image in catalog order.

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

/** A fine-tuning's validation score (mean box and click Dice) before and after. */
const adapterText = (adapter) => {
  const before = adapter.validation_before?.score, best = adapter.validation_best?.score;
  return before === undefined || best === undefined ? "no validation score"
    : `validation prompt Dice ${before.toFixed(3)} → ${best.toFixed(3)} (${adapter.val_images} held-out images)`;
};

/** What a training is called in notes: `{kind, model}` or `{kind, adapter}` as the server started it. */
const trainingName = (training) => (training.kind === "finetune" ? `adapter ${training.adapter}` : training.model);

export class Loop {
  /**
   * `current()`: the open image's id or null; `open(id)` opens an image; `loadVersion(name, version)` loads
   * a saved version into a new session; `annotationName()`: the name saves use; `onSaved(id)` lists an image's
   * versions again; `ticked()`: the ids ticked in the catalog list; `clearTicked()` unticks them.
   */
  constructor(root, { current, open, loadVersion, annotationName, onSaved, ticked = () => [], clearTicked = () => {} }) {
    this.q = (testid) => root.querySelector(`[data-testid=${testid}]`);
    Object.assign(this, { current, open, loadVersion, annotationName, onSaved, ticked, clearTicked });
    this.job = null;
    this.autoJob = null;
    this.haveModels = false;
    this.q("train-kind").addEventListener("change", () => this.showKind());
    this.q("train-start").addEventListener("click", () => this.train());
    this.q("train-cancel").addEventListener("click", () => this.cancel(this.job));
    this.q("auto-segment").addEventListener("click", () => this.autoSegment());
    this.q("auto-cancel").addEventListener("click", () => this.cancel(this.autoJob));
    this.q("next-unlabelled").addEventListener("click", () => this.next());
    this.q("prompt-adapter").addEventListener("change", () => this.useAdapter());
  }

  /** Prompts segment with the adapter chosen (or the base model) from the next click on: the server switches at once. */
  async useAdapter() {
    const select = this.q("prompt-adapter");
    const adapter = select.value || null;
    try {
      const segmenter = await api("/segmenter/adapter", { method: "PUT", body: { adapter } });
      select.dataset.current = segmenter.adapter ?? "";
      setStatus(segmenter.adapter ? `prompts now segment with adapter ${segmenter.adapter} over ${segmenter.name}`
        : `prompts now segment with ${segmenter.name}`);
    } catch (error) {
      select.value = select.dataset.current ?? "";
      showError(error, "adapter");
    }
  }

  /** The base model and the adapters fine-tuned over it (only those: another base cannot serve the prompts). */
  showAdapters(adapters, segmenter) {
    const select = this.q("prompt-adapter");
    const usable = adapters.filter((a) => a.base_model === segmenter.name);
    select.replaceChildren(
      el("option", { value: "", textContent: `${segmenter.name} (base)` }),
      ...usable.map((a) => el("option", { value: a.name, textContent: `adapter ${a.name}`, title: adapterText(a) })));
    select.value = segmenter.adapter ?? "";
    select.dataset.current = select.value;
  }

  /** Labels are the automatic segmenter's; the method is the fine-tuning's. */
  showKind() {
    const finetune = this.q("train-kind").value === "finetune";
    this.q("train-method").hidden = !finetune;
    this.q("train-labels").disabled = finetune;
  }

  /** The Auto-segment button says how many images it will segment. */
  showTicked(ids) {
    this.q("auto-segment").textContent = ids.length ? `Auto-segment ${ids.length} selected` : "Auto-segment";
  }

  /** The trained models (newest first) into the list, the latest one's score until a training here says more;
   *  follows a training already running (after a reload). */
  async refresh() {
    try {
      const { models, adapters = [], segmenter, training } = await api("/seg-models");
      if (segmenter) this.showAdapters(adapters, segmenter);
      const select = this.q("seg-model");
      const chosen = select.value;
      select.replaceChildren(...models.map((m) => el("option", { value: m.name, textContent: m.name, title: diceText(m) })));
      if (models.some((m) => m.name === chosen)) select.value = chosen;
      this.haveModels = models.length > 0;
      this.q("auto-segment").disabled = !this.haveModels || this.autoJob !== null;
      const note = this.q("train-note");
      if (!note.dataset.state) {
        const latest = [...models.map((m) => ({ ...m, text: `latest model ${m.name}: ${diceText(m)}` })),
          ...adapters.map((a) => ({ ...a, text: `latest adapter ${a.name} (${a.method} over ${a.base_model}): ${adapterText(a)}` }))]
          .sort((a, b) => (a.created < b.created ? 1 : -1))[0];
        if (latest) note.textContent = latest.text;
      }
      if (training && !this.job) this.follow(training);
    } catch (error) {
      showError(error, "models");
    }
  }

  async train() {
    const finetune = this.q("train-kind").value === "finetune";
    let body;
    try {
      body = { budget_minutes: Number(this.q("train-budget").value) };
      if (finetune) body.method = this.q("train-method").value;
      else body.labels = parseLabels(this.q("train-labels").value);
    } catch (error) {
      showError(error, "train");
      return;
    }
    try {
      this.follow(await api(finetune ? "/train/finetune" : "/train/seg", { method: "POST", body }));
    } catch (error) {
      showError(error, "train");
    }
  }

  /** Shows a training job's progress until it ends: what the server answered when it started (`{job, kind, ...}`). */
  async follow(training) {
    const { job } = training;
    const name = trainingName(training);
    this.job = job;
    const progress = this.q("train-progress");
    const note = this.q("train-note");
    this.q("train-start").disabled = true;
    this.q("train-cancel").hidden = false;
    progress.hidden = false;
    progress.value = 0;
    let trained = false;
    note.textContent = `training ${name}…`;
    note.dataset.state = "running";
    try {
      const result = await waitForJob(job, (done, total, state) => {
        progress.value = total ? done / total : 0;
        note.textContent = state === "cancelling" ? `cancelling ${name}…` : `training ${name}… ${Math.round(100 * progress.value)} %`;
      });
      const took = `${result.steps} steps, ${result.training_seconds} s`;
      note.textContent = training.kind === "finetune"
        ? `fine-tuned ${name} (${result.method} over ${result.base_model}; ${took}): ${adapterText(result)}; `
          + "choose it under \u201cprompts use\u201d to segment with it"
        : `trained ${name} (${took}): ${diceText(result)}`;
      note.dataset.state = "done";
      trained = true;
      setStatus(`trained ${name}`);
    } catch (error) {
      const cancelled = error instanceof ApiError && error.message === "cancelled";
      note.textContent = cancelled ? `training of ${name} cancelled` : `training of ${name} failed: ${error.message}`;
      note.dataset.state = cancelled ? "cancelled" : "failed";
      if (!cancelled) showError(error, "train");
    } finally {
      this.job = null;
      this.q("train-start").disabled = false;
      this.q("train-cancel").hidden = true;
      progress.hidden = true;
    }
    await this.refresh();
    if (trained && training.kind !== "finetune") this.q("seg-model").value = training.model;
  }

  async cancel(job) {
    if (!job) return;
    try {
      await api(`/jobs/${encodeURIComponent(job)}/cancel`, { method: "POST" });
    } catch (error) {
      showError(error, "cancel");
    }
  }

  /** The selected model on the images ticked in the list (a job), else on the open image: new draft versions. */
  async autoSegment() {
    const model = this.q("seg-model").value;
    if (!model) { showError("train a model first", "auto-segment"); return; }
    const ticked = this.ticked();
    if (ticked.length) { await this.autoSegmentTicked(model, ticked.map(Number)); return; }
    const imageId = this.current();
    if (imageId === null) { showError("open an image or tick images in the list first", "auto-segment"); return; }
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

  /** A job proposing a draft version on each ticked image, with progress and a cancel button. */
  async autoSegmentTicked(model, imageIds) {
    const button = this.q("auto-segment");
    const progress = this.q("auto-progress");
    button.disabled = true;
    this.q("auto-cancel").hidden = false;
    progress.hidden = false;
    progress.value = 0;
    try {
      const { job, images } = await api("/segment/auto/batch", { method: "POST", body: { image_ids: imageIds, model, name: this.annotationName() } });
      this.autoJob = job;
      const result = await waitForJob(job, (done, total) => {
        progress.value = total ? done / total : 0;
        setStatus(`${model} segmenting ${done} of ${images} images…`);
      });
      const failed = result.failed.length ? `; ${result.failed.length} failed (image ${result.failed[0].image_id}: ${result.failed[0].error})` : "";
      setStatus(`${model} proposed ${result.name} on ${result.saved.length} image${result.saved.length === 1 ? "" : "s"} (drafts)${failed}: open each to correct, save, mark final`,
        result.failed.length ? "warning" : "info");
      this.clearTicked();
      const open = this.current();
      const mine = result.saved.find((s) => String(s.image_id) === String(open));
      if (mine) {
        await this.onSaved(open);
        await this.loadVersion(result.name, mine.version);
      }
    } catch (error) {
      if (error instanceof ApiError && error.message === "cancelled") setStatus("auto-segmentation cancelled; the drafts saved so far stay");
      else showError(error, "auto-segment");
    } finally {
      this.autoJob = null;
      this.q("auto-cancel").hidden = true;
      progress.hidden = true;
      button.disabled = !this.haveModels;
    }
  }

  /** Opens the next image without a final version (the least sure of the next few, with a model). */
  async next() {
    try {
      const params = { after: this.current(), model: this.q("seg-model").value, measure: this.q("next-measure").value };
      const { image_id: id, remaining, uncertainty, measure } = await api(`/unlabelled/next${query(params)}`);
      if (id === null) { setStatus("every image has a final version"); return; }
      const how = measure === "mc-dropout" ? "MC-dropout disagreement" : "mean entropy";
      const unsure = uncertainty === null ? "" : `; the model is least sure of this one (${how} ${uncertainty.toFixed(2)})`;
      setStatus(`${remaining} image${remaining === 1 ? "" : "s"} without a final version${unsure}`);
      await this.open(id);
    } catch (error) {
      showError(error, "next");
    }
  }
}
