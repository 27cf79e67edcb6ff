// Multiplanar reformatting: the two views across the other voxel axes (i and j) beside the main
// one (across k), each windowed here from raw values, with the session's mask, a crosshair
// linked to the others, orientation letters and a scale bar. Geometry comes from the server
// (GET /api/images/{id}: "views"), which derives names, flips and letters from the affine.

import { api, apiRaw, query, showError } from "./api.js";
import { decodeMask, drawAnnotations, paintLabels, windowed } from "./viewer.js";

const AXIS = { i: 0, j: 1, k: 2 };
const IN_PLANE = { k: [0, 1], j: [0, 2], i: [1, 2] }; // voxel axes of a view's columns and rows

/** Voxel [i, j, k] at display pixel (x, y) of plane `index` of `view`. */
export function displayToVoxel(view, index, x, y) {
  const [columns, rows] = IN_PLANE[view.axis];
  const voxel = [0, 0, 0];
  voxel[AXIS[view.axis]] = index;
  voxel[columns] = view.flip_columns ? view.width - 1 - x : x;
  voxel[rows] = view.flip_rows ? view.height - 1 - y : y;
  return voxel;
}

/** [x, y, index]: where voxel [i, j, k] shows in `view`. */
export function voxelToDisplay(view, voxel) {
  const [columns, rows] = IN_PLANE[view.axis];
  const x = view.flip_columns ? view.width - 1 - voxel[columns] : voxel[columns];
  const y = view.flip_rows ? view.height - 1 - voxel[rows] : voxel[rows];
  return [x, y, voxel[AXIS[view.axis]]];
}

export class SideView {
  /** root: the element to draw in; onPick(voxel): a click picked a voxel; while `painter.active()`,
   *  a drag paints instead: `painter.paint(this, [x, y] display pixel or null, "start"/"move"/"end")`. */
  constructor(root, axis, labelSet, onPick, painter = null) {
    this.root = root;
    this.axis = axis;
    this.labels = labelSet;
    this.canvas = root.querySelector("canvas");
    this.title = root.querySelector(".view-title");
    this.view = null;
    this.imageId = null;
    this.index = 0;
    this.t = 0;
    this.raw = null;
    this.mask = null;
    this.picture = document.createElement("canvas"); // the windowed plane at its own size
    this.overlay = document.createElement("canvas"); // its labels
    this.seq = 0;
    this.box = [0, 0, 1, 1]; // where the plane is drawn on the canvas
    let painting = false;
    this.canvas.addEventListener("pointerdown", (event) => {
      if (!this.view || event.button !== 0) return;
      const point = this.toPlane(event);
      if (painter && painter.active()) {
        painting = true;
        this.canvas.setPointerCapture(event.pointerId);
        painter.paint(this, point, "start");
        return;
      }
      if (point) onPick(displayToVoxel(this.view, this.index, Math.floor(point[0]), Math.floor(point[1])));
    });
    this.canvas.addEventListener("pointermove", (event) => { if (painting) painter.paint(this, this.toPlane(event), "move"); });
    const finish = (event) => {
      if (!painting) return;
      painting = false;
      painter.paint(this, this.toPlane(event), "end");
    };
    this.canvas.addEventListener("pointerup", finish);
    this.canvas.addEventListener("pointercancel", finish);
    new ResizeObserver(() => this.draw()).observe(root);
  }

  /** Display pixel [x, y] (fractional) of the view's plane under a pointer event; null outside it. */
  toPlane(event) {
    const rect = this.canvas.getBoundingClientRect();
    const [x0, y0, x1, y1] = this.box;
    const x = ((event.clientX - rect.left - x0) / (x1 - x0)) * this.view.width;
    const y = ((event.clientY - rect.top - y0) / (y1 - y0)) * this.view.height;
    return x < 0 || y < 0 || x >= this.view.width || y >= this.view.height ? null : [x, y];
  }

  setImage(info) {
    this.view = info.views ? info.views[this.axis] : null;
    this.imageId = info.id;
    this.raw = null;
    this.mask = null;
    this.root.hidden = !this.view;
    if (!this.view) return;
    this.title.textContent = this.view.name;
    this.root.dataset.view = this.view.name;
    for (const canvas of [this.picture, this.overlay]) [canvas.width, canvas.height] = [this.view.width, this.view.height];
  }

  /** Shows plane `index` at frame `t` (fetching it when it is another), with `session`'s mask when there is one. */
  async load(index, t, session, window, crosshair) {
    if (!this.view) return;
    this.window = window;
    this.crosshair = crosshair;
    const seq = ++this.seq;
    const id = this.imageId;
    try {
      if (!this.raw || this.index !== index || this.t !== t) {
        const raw = await apiRaw(`/images/${encodeURIComponent(id)}/raw${query({ axis: this.axis, index, t })}`);
        if (seq !== this.seq || id !== this.imageId) return;
        [this.raw, this.index, this.t] = [raw, index, t];
        this.mask = null;
      }
      await this.loadMask(session, seq);
    } catch (error) {
      showError(error, `${this.view.name} view`);
    }
    if (seq === this.seq) this.draw();
  }

  async loadMask(session, seq = this.seq) {
    if (!session || !this.view) { this.mask = null; return; }
    const id = this.imageId;
    const answer = await api(`/sessions/${session}/mask${query({ axis: this.axis, index: this.index, t: this.t })}`);
    const mask = await decodeMask(answer.mask);
    if (seq !== this.seq || id !== this.imageId) return;
    this.mask = mask;
    let count = 0;
    for (const v of mask.values) if (v) count += 1;
    this.root.dataset.maskPixels = String(count);
    this.root.dataset.revision = String(answer.revision);
  }

  /** Redraws with a new window or crosshair (no request). */
  update(window, crosshair) {
    this.window = window;
    this.crosshair = crosshair;
    this.draw();
  }

  draw() {
    const canvas = this.canvas;
    const [vw, vh] = [this.root.clientWidth, this.root.clientHeight];
    if (canvas.width !== vw || canvas.height !== vh) [canvas.width, canvas.height] = [vw, vh];
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, vw, vh);
    if (!this.view || !this.raw || !this.window || !vw || !vh) return;
    const [sx, sy] = this.view.spacing;
    const aspect = sx > 0 && sy > 0 && sy / sx > 0.05 && sy / sx < 20 ? sy / sx : 1;
    const scale = Math.min((vw - 8) / this.view.width, (vh - 8) / (this.view.height * aspect));
    const [w, h] = [this.view.width * scale, this.view.height * scale * aspect];
    const [x0, y0] = [(vw - w) / 2, (vh - h) / 2];
    this.box = [x0, y0, x0 + w, y0 + h];
    this.root.dataset.box = this.box.map((v) => v.toFixed(2)).join(",");
    const pctx = this.picture.getContext("2d");
    pctx.putImageData(windowed(pctx, this.raw, this.window.center, this.window.width), 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.picture, x0, y0, w, h);
    if (this.mask && this.mask.width === this.view.width && this.mask.height === this.view.height && this.window.maskVisible) {
      const octx = this.overlay.getContext("2d");
      octx.putImageData(paintLabels(octx, this.mask, this.labels, this.window), 0, 0);
      ctx.drawImage(this.overlay, x0, y0, w, h);
    }
    if (this.crosshair) {
      const [cx, cy] = voxelToDisplay(this.view, this.crosshair);
      const [px, py] = [x0 + ((cx + 0.5) / this.view.width) * w, y0 + ((cy + 0.5) / this.view.height) * h];
      ctx.strokeStyle = "rgba(80, 200, 255, 0.8)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x0, py); ctx.lineTo(x0 + w, py); ctx.moveTo(px, y0); ctx.lineTo(px, y0 + h);
      ctx.stroke();
      this.root.dataset.crosshair = `${cx},${cy}`;
    }
    const mm = drawAnnotations(ctx, this.box, this.view.letters, this.window.spacingKnown ? scale / sx : null);
    this.root.dataset.scaleBarMm = mm === null ? "" : String(mm);
    this.root.dataset.loaded = `${this.index},${this.t},${this.window.center},${this.window.width}`;
  }
}
