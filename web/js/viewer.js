// The centre canvas: the plane (k, t) as the server renders it, the label map drawn over it
// in each structure's colour, zoom (fit to 16x fit) and pan with the display aspect, and
// window/level.
//
// Layers, all in one "stage" scaled by CSS: the image and the mask canvases have the plane's
// display size in pixels (width x height), so one canvas pixel is one display pixel and the
// coordinates sent to the server are canvas coordinates. A third canvas, the size of the
// viewport, draws the prompt markers and the box or scribble being made.
//
// The view is (zoom, centre): zoom times the fit scale, and the display pixel (float) shown at
// the middle of the viewport. Every mapping between the screen and the plane derives from
// them in layout(): the stage's CSS transform, toPlane() for the tools, toScreen() for the
// markers.

import { apiBlob, apiRaw, query, showError } from "./api.js";
import { rgb } from "./labels.js";

export const MAX_ZOOM = 16;
export const ZOOM_STEP = Math.SQRT2; // one wheel notch, key press or button click

/** Windows raw values ({width, height, values}) into 8-bit grey RGBA pixels of an ImageData.
 * Integer planes go through a table of the plane's value range (one lookup and one 32-bit write
 * per pixel), so a window change costs about as much as copying the plane once. */
export function windowed(ctx, raw, center, width) {
  const image = ctx.createImageData(raw.width, raw.height);
  const out = new Uint32Array(image.data.buffer); // RGBA bytes as one little-endian word: 0xAABBGGRR
  const low = center - width / 2;
  const gain = 255 / width;
  const grey = (v) => {
    const g = Math.round((v - low) * gain);
    const c = g <= 0 ? 0 : g >= 255 ? 255 : g;
    return (0xff000000 | (c << 16) | (c << 8) | c) >>> 0;
  };
  const values = raw.values;
  if (values instanceof Float32Array) {
    for (let i = 0; i < values.length; i += 1) out[i] = grey(values[i]);
    return image;
  }
  if (raw.min === undefined) {
    let [min, max] = [Infinity, -Infinity];
    for (let i = 0; i < values.length; i += 1) { const v = values[i]; if (v < min) min = v; if (v > max) max = v; }
    [raw.min, raw.max] = [min, max];
  }
  const table = new Uint32Array(raw.max - raw.min + 1);
  for (let v = raw.min; v <= raw.max; v += 1) table[v - raw.min] = grey(v);
  const offset = raw.min;
  for (let i = 0; i < values.length; i += 1) out[i] = table[values[i] - offset];
  return image;
}

/** Paints label values (Uint8Array, width x height) into an ImageData: each visible label in its
 * colour at `opacity`, its outline opaque; `outline` alone leaves the inside clear. */
export function paintLabels(ctx, mask, labelSet, { opacity = 0.45, outline = false } = {}) {
  const { width: w, height: h, values } = mask;
  const image = ctx.createImageData(w, h);
  const out = image.data;
  const colors = new Map();
  const fill = outline ? 0 : Math.round(opacity * 255);
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) {
      const i = y * w + x;
      const v = values[i];
      if (!v || labelSet.hidden.has(v)) continue;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1
        || values[i - 1] !== v || values[i + 1] !== v || values[i - w] !== v || values[i + w] !== v;
      if (!edge && !fill) continue;
      let c = colors.get(v);
      if (!c) { c = rgb(labelSet.color(v)); colors.set(v, c); }
      out[4 * i] = c[0];
      out[4 * i + 1] = c[1];
      out[4 * i + 2] = c[2];
      out[4 * i + 3] = edge ? 255 : fill;
    }
  }
  return image;
}

/** A round scale-bar length in mm about `target` screen pixels long at `pxPerMm`. */
export function scaleBarMm(pxPerMm, target = 90) {
  const wanted = target / pxPerMm;
  const steps = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000];
  return steps.reduce((best, s) => (Math.abs(Math.log(s / wanted)) < Math.abs(Math.log(best / wanted)) ? s : best), steps[0]);
}

/** Draws orientation letters at the edges of the box (x0, y0, x1, y1) and a scale bar at its bottom left. */
export function drawAnnotations(ctx, box, letters, pxPerMm) {
  const [x0, y0, x1, y1] = box;
  ctx.save();
  ctx.font = "bold 13px system-ui, sans-serif";
  ctx.fillStyle = "#ffd84d";
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  if (letters) {
    const [mx, my] = [(x0 + x1) / 2, (y0 + y1) / 2];
    ctx.fillText(letters.top, mx, y0 + 10);
    ctx.fillText(letters.bottom, mx, y1 - 10);
    ctx.fillText(letters.left, x0 + 10, my);
    ctx.fillText(letters.right, x1 - 10, my);
  }
  let mm = null;
  if (pxPerMm > 0 && Number.isFinite(pxPerMm)) {
    mm = scaleBarMm(pxPerMm);
    const length = mm * pxPerMm;
    const [bx, by] = [x0 + 12, y1 - 14];
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(bx, by - 4); ctx.lineTo(bx, by); ctx.lineTo(bx + length, by); ctx.lineTo(bx + length, by - 4);
    ctx.stroke();
    ctx.fillStyle = "#fff";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textAlign = "left";
    ctx.fillText(`${mm} mm`, bx, by - 10);
  }
  ctx.restore();
  return mm;
}

/** Decodes a "data:image/png;base64,..." label PNG into {width, height, values: Uint8Array}. */
export async function decodeMask(dataUrl) {
  const comma = dataUrl.indexOf(",");
  const bytes = Uint8Array.from(atob(dataUrl.slice(comma + 1)), (c) => c.charCodeAt(0));
  const bitmap = await createImageBitmap(new Blob([bytes], { type: "image/png" }), {
    colorSpaceConversion: "none", premultiplyAlpha: "none",
  });
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const values = new Uint8Array(bitmap.width * bitmap.height);
  for (let i = 0; i < values.length; i += 1) values[i] = rgba[4 * i];
  bitmap.close();
  return { width: canvas.width, height: canvas.height, values };
}

export class Viewer {
  constructor(viewport, labelSet) {
    this.viewport = viewport;
    this.labels = labelSet;
    this.stage = viewport.querySelector(".stage");
    this.imageCanvas = viewport.querySelector("[data-testid=image-canvas]");
    this.maskCanvas = viewport.querySelector("[data-testid=overlay-canvas]");
    this.drawCanvas = viewport.querySelector("[data-testid=draw-canvas]");
    this.info = null;
    this.k = 0;
    this.t = 0;
    this.center = null;
    this.width = null;
    this.mask = null; // {width, height, values}
    this.maskVisible = true;
    this.scale = 1; // screen pixels per display pixel across (fitScale * zoom)
    this.fitScale = 1;
    this.zoom = 1;
    this.centre = [0, 0]; // display pixel at the viewport's middle
    this.aspect = 1; // display height of one pixel / its width
    this.offset = [0, 0]; // viewport pixel of the plane's top-left corner
    this.rubber = null; // draws the box or scribble being made: (ctx) => {}
    this.onViewChange = () => {};
    this.sliceSeq = 0;
    this.sliceAbort = null;
    this.onPlaneLoaded = () => {};
    this.marks = new Map(); // "k,t" -> prompts made on that plane, drawn as markers
    this.raw = null; // the shown grey plane's values: {key: "id:k,t", width, height, values}
    this.opacity = 0.45;
    this.outline = false;
    this.crosshair = null; // display pixel [x, y] of the linked crosshair (MPR), or null
    this.ruler = null; // a length measurement: {a: [x, y], b: [x, y], mm}
    new ResizeObserver(() => this.layout()).observe(viewport);
  }

  /** Shows a new image (the GET /api/images/{id} answer), on its middle slice, first frame. */
  setImage(info) {
    this.info = info;
    const { width, height } = info.display;
    for (const canvas of [this.imageCanvas, this.maskCanvas]) {
      canvas.width = width;
      canvas.height = height;
    }
    this.imageCanvas.getContext("2d").clearRect(0, 0, width, height);
    this.mask = null;
    this.raw = null;
    this.ruler = null;
    this.crosshair = null;
    this.marks.clear();
    this.renderMask();
    this.aspect = pixelAspect(info);
    this.k = Math.floor((info.num_slices || 1) / 2);
    this.t = Math.min(info.first_frame || 0, (info.num_frames || 1) - 1); // a video starts where it is not blank
    this.center = info.window ? info.window.center : null;
    this.width = info.window ? info.window.width : null;
    this.fit();
  }

  get numSlices() { return this.info ? this.info.num_slices || 1 : 1; }
  get numFrames() { return this.info ? this.info.num_frames || 1 : 1; }

  /** Clamps and sets the plane; returns true when it changed. */
  setPlane(k, t = this.t) {
    k = Math.max(0, Math.min(this.numSlices - 1, Math.round(k)));
    t = Math.max(0, Math.min(this.numFrames - 1, Math.round(t)));
    const changed = k !== this.k || t !== this.t;
    this.k = k;
    this.t = t;
    return changed;
  }

  setWindow(center, width) {
    this.center = center;
    this.width = Math.max(1, width);
  }

  /** Shows the current plane: a grey plane's raw values are fetched once and windowed here
   * (a window change needs no request); colour planes come as slice.png. Stale answers are dropped. */
  async loadSlice() {
    if (!this.info) return;
    const seq = ++this.sliceSeq;
    if (this.sliceAbort) this.sliceAbort.abort();
    this.sliceAbort = new AbortController();
    const id = this.info.id;
    if (!this.isRgb()) {
      const key = `${id}:${this.k},${this.t}`;
      if (this.raw && this.raw.key === key) { this.paint(); return; }
      try {
        const raw = await apiRaw(`/images/${encodeURIComponent(id)}/raw${query({ axis: "k", index: this.k, t: this.t })}`,
          { signal: this.sliceAbort.signal });
        if (seq !== this.sliceSeq || !this.info || this.info.id !== id) return;
        this.raw = { key, ...raw };
        this.paint();
      } catch (error) {
        if (error.name !== "AbortError") showError(error, "image");
      }
      return;
    }
    const params = { k: this.k, t: this.t };
    if (this.center !== null && this.width !== null && !this.isRgb()) {
      params.center = round3(this.center);
      params.width = round3(this.width);
    }
    try {
      const blob = await apiBlob(`/images/${encodeURIComponent(id)}/slice.png${query(params)}`, { signal: this.sliceAbort.signal });
      const bitmap = await createImageBitmap(blob);
      if (seq !== this.sliceSeq || !this.info || this.info.id !== id) { bitmap.close(); return; }
      const ctx = this.imageCanvas.getContext("2d");
      ctx.imageSmoothingEnabled = false;
      ctx.clearRect(0, 0, this.imageCanvas.width, this.imageCanvas.height);
      ctx.drawImage(bitmap, 0, 0, this.imageCanvas.width, this.imageCanvas.height);
      bitmap.close();
      this.viewport.dataset.loadedPlane = `${this.k},${this.t},${params.center ?? ""},${params.width ?? ""}`;
      this.onPlaneLoaded();
    } catch (error) {
      if (error.name !== "AbortError") showError(error, "image");
    }
  }

  /** Windows the fetched raw plane into the image canvas, here in the page. */
  paint() {
    const raw = this.raw;
    if (!raw || raw.key !== `${this.info.id}:${this.k},${this.t}`) return;
    const ctx = this.imageCanvas.getContext("2d");
    ctx.putImageData(windowed(ctx, raw, this.center, this.width), 0, 0);
    this.viewport.dataset.loadedPlane = `${this.k},${this.t},${round3(this.center)},${round3(this.width)}`;
    this.viewport.dataset.paints = String(Number(this.viewport.dataset.paints || 0) + 1);
    this.onPlaneLoaded();
  }

  /** The image's value at display pixel (x, y) of the shown plane, or null. */
  valueAt(x, y) {
    const raw = this.raw;
    if (!raw || !this.inside([x, y]) || raw.key !== `${this.info.id}:${this.k},${this.t}`) return null;
    return raw.values[Math.floor(y) * raw.width + Math.floor(x)];
  }

  /** Millimetres per display pixel (across, down), or null where the spacing is not a measurement. */
  pixelMm() {
    const view = this.info && this.info.views && this.info.views.k;
    if (!view || !this.info.spacing_known) return null;
    return view.spacing;
  }

  isRgb() { return this.info && (this.info.num_channels || 1) >= 3; }

  /** Shows a PlaneState's mask if it is for the current plane. */
  async setMaskFromState(state) {
    if (!state || state.k !== this.k || state.t !== this.t) return;
    const mask = state.mask ? await decodeMask(state.mask) : null;
    if (state.k !== this.k || state.t !== this.t) return;
    this.mask = mask;
    this.renderMask();
  }

  clearMask() {
    this.mask = null;
    this.renderMask();
  }

  /** Draws the label map: each visible label's colour at the chosen opacity (or its outline only). */
  renderMask() {
    const canvas = this.maskCanvas;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    let count = 0;
    const counts = {};
    const mask = this.mask;
    if (mask && mask.width === canvas.width && mask.height === canvas.height) {
      for (const v of mask.values) {
        if (!v) continue;
        count += 1;
        counts[v] = (counts[v] || 0) + 1;
      }
      if (this.maskVisible) ctx.putImageData(paintLabels(ctx, mask, this.labels, { opacity: this.opacity, outline: this.outline }), 0, 0);
    }
    this.viewport.dataset.maskPixels = String(count);
    this.viewport.dataset.maskLabels = JSON.stringify(counts);
  }

  /** Voxels per label on the shown plane. */
  maskCounts() {
    const counts = {};
    if (!this.mask) return counts;
    for (const v of this.mask.values) if (v) counts[v] = (counts[v] || 0) + 1;
    return counts;
  }

  /** Back to the whole plane, centred, as large as the viewport allows. */
  fit() {
    if (!this.info) return;
    const { width, height } = this.info.display;
    this.zoom = 1;
    this.centre = [width / 2, height / 2];
    this.layout();
  }

  /** Zooms by `factor` (clamped to fit .. MAX_ZOOM x fit) keeping the plane point under viewport
   * pixel (vx, vy) in place; about the viewport's middle when no point is given. */
  zoomBy(factor, vx = this.viewport.clientWidth / 2, vy = this.viewport.clientHeight / 2) {
    if (!this.info) return;
    const zoom = Math.min(MAX_ZOOM, this.zoom * factor);
    if (zoom <= 1 + 1e-9) { this.fit(); return; }
    const [px, py] = this.planeAt(vx, vy);
    this.zoom = zoom;
    const scale = this.fitScale * zoom;
    const [mx, my] = [this.viewport.clientWidth / 2, this.viewport.clientHeight / 2];
    this.centre = [px - (vx - mx) / scale, py - (vy - my) / (scale * this.aspect)];
    this.layout();
  }

  /** Moves the picture by (dx, dy) screen pixels, keeping some of it at the viewport's middle. */
  panBy(dx, dy) {
    if (!this.info || this.zoom <= 1) return;
    this.centre = [this.centre[0] - dx / this.scale, this.centre[1] - dy / (this.scale * this.aspect)];
    this.layout();
  }

  /** Derives the stage's transform from the view (zoom, centre) and the viewport's size. */
  layout() {
    if (!this.info) return;
    const { width, height } = this.info.display;
    const vw = this.viewport.clientWidth;
    const vh = this.viewport.clientHeight;
    if (this.drawCanvas.width !== vw || this.drawCanvas.height !== vh) [this.drawCanvas.width, this.drawCanvas.height] = [vw, vh];
    if (!vw || !vh) return;
    const margin = 8;
    this.fitScale = Math.max(0.01, Math.min((vw - 2 * margin) / width, (vh - 2 * margin) / (height * this.aspect)));
    this.scale = this.fitScale * this.zoom;
    const clamp = (v, max) => Math.max(0, Math.min(max, v));
    this.centre = [clamp(this.centre[0], width), clamp(this.centre[1], height)];
    this.offset = [vw / 2 - this.centre[0] * this.scale, vh / 2 - this.centre[1] * this.scale * this.aspect];
    Object.assign(this.stage.style, {
      width: `${width}px`, height: `${height}px`,
      transform: `translate(${this.offset[0]}px, ${this.offset[1]}px) scale(${this.scale}, ${this.scale * this.aspect})`,
    });
    Object.assign(this.viewport.dataset, {
      scale: this.scale.toFixed(4), aspect: this.aspect.toFixed(4), zoom: this.zoom.toFixed(4),
      offset: this.offset.map((v) => v.toFixed(2)).join(","),
    });
    this.drawOverlay();
    this.onViewChange();
  }

  planeKey() { return `${this.k},${this.t}`; }

  /** Redraws the screen-size canvas: the current plane's prompt markers, then the rubber band. */
  drawOverlay() {
    const canvas = this.drawCanvas;
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (this.info && this.maskVisible) {
      for (const mark of this.marks.get(this.planeKey()) || []) this.drawMark(ctx, mark);
    }
    if (this.info) this.drawGuides(ctx);
    if (this.rubber) this.rubber(ctx);
  }

  /** The crosshair, the length measured, the orientation letters and the scale bar. */
  drawGuides(ctx) {
    const { width, height } = this.info.display;
    const [x0, y0] = this.toScreen([0, 0]);
    const [x1, y1] = this.toScreen([width, height]);
    if (this.crosshair) {
      const [cx, cy] = this.toScreen([this.crosshair[0] + 0.5, this.crosshair[1] + 0.5]);
      ctx.save();
      ctx.strokeStyle = "rgba(80, 200, 255, 0.8)";
      ctx.lineWidth = 1;
      ctx.beginPath();
      ctx.moveTo(x0, cy); ctx.lineTo(x1, cy); ctx.moveTo(cx, y0); ctx.lineTo(cx, y1);
      ctx.stroke();
      ctx.restore();
    }
    if (this.ruler) {
      const [ax, ay] = this.toScreen(this.ruler.a);
      const [bx, by] = this.toScreen(this.ruler.b);
      ctx.save();
      ctx.strokeStyle = "#ffd84d";
      ctx.fillStyle = "#ffd84d";
      ctx.lineWidth = 2;
      ctx.beginPath();
      ctx.moveTo(ax, ay); ctx.lineTo(bx, by);
      ctx.stroke();
      ctx.font = "12px system-ui, sans-serif";
      ctx.fillText(this.ruler.text, bx + 6, by - 6);
      ctx.restore();
    }
    const view = this.info.views && this.info.views.k;
    const spacing = this.pixelMm();
    const vw = this.viewport.clientWidth;
    const vh = this.viewport.clientHeight;
    const box = [Math.max(0, x0), Math.max(0, y0), Math.min(vw, x1), Math.min(vh, y1)];
    const mm = drawAnnotations(ctx, box, view ? view.letters : null, spacing ? this.scale / spacing[0] : null);
    this.viewport.dataset.scaleBarMm = mm === null ? "" : String(mm);
    this.viewport.dataset.letters = view && view.letters ? ["top", "right", "bottom", "left"].map((e) => view.letters[e]).join("") : "";
  }

  drawMark(ctx, mark) {
    const centre = ([x, y]) => this.toScreen([x + 0.5, y + 0.5]);
    ctx.save();
    ctx.lineWidth = 1.5;
    ctx.setLineDash([]);
    if (mark.points) {
      mark.points.forEach((p, i) => {
        const [sx, sy] = centre(p);
        const positive = mark.point_labels[i] === 1;
        ctx.beginPath();
        ctx.arc(sx, sy, 6, 0, 2 * Math.PI);
        ctx.fillStyle = positive ? "#34d058" : "#ff4d4f";
        ctx.strokeStyle = "#fff";
        ctx.fill();
        ctx.stroke();
        ctx.beginPath();
        ctx.strokeStyle = "#fff";
        ctx.moveTo(sx - 2.5, sy);
        ctx.lineTo(sx + 2.5, sy);
        if (positive) { ctx.moveTo(sx, sy - 2.5); ctx.lineTo(sx, sy + 2.5); }
        ctx.stroke();
      });
    }
    if (mark.box) {
      const [x0, y0, x1, y1] = mark.box;
      const [ax, ay] = this.toScreen([x0, y0]);
      const [bx, by] = this.toScreen([x1 + 1, y1 + 1]);
      ctx.strokeStyle = "#ffd84d";
      ctx.setLineDash([5, 4]);
      ctx.strokeRect(ax, ay, bx - ax, by - ay);
    }
    if (mark.scribble) {
      ctx.strokeStyle = mark.scribble.positive ? "#34d058" : "#ff4d4f";
      ctx.lineWidth = 2;
      ctx.beginPath();
      mark.scribble.points.forEach((p, i) => {
        const [sx, sy] = centre(p);
        if (i === 0) ctx.moveTo(sx, sy); else ctx.lineTo(sx, sy);
      });
      ctx.stroke();
    }
    ctx.restore();
  }

  /** Display pixel (x, y) under a mouse event, as floats (outside the plane too). */
  toPlane(event) {
    const [vx, vy] = this.toViewport(event);
    return this.planeAt(vx, vy);
  }

  /** Viewport pixel (x, y) of a mouse event. */
  toViewport(event) {
    const rect = this.viewport.getBoundingClientRect();
    return [event.clientX - rect.left - this.viewport.clientLeft, event.clientY - rect.top - this.viewport.clientTop];
  }

  /** Display pixel (x, y), as floats, at viewport pixel (vx, vy). */
  planeAt(vx, vy) {
    return [(vx - this.offset[0]) / this.scale, (vy - this.offset[1]) / (this.scale * this.aspect)];
  }

  /** Viewport pixel of a display pixel's corner (x, y). */
  toScreen([x, y]) {
    return [this.offset[0] + x * this.scale, this.offset[1] + y * this.scale * this.aspect];
  }

  inside([x, y]) {
    return this.info && x >= 0 && y >= 0 && x < this.info.display.width && y < this.info.display.height;
  }
}

/** Height / width of one display pixel on screen, from the spacing when it is known. */
function pixelAspect(info) {
  const spacing = info.spacing;
  const shape = info.shape;
  if (!info.spacing_known || !Array.isArray(spacing) || spacing.length < 2 || !Array.isArray(shape)) return 1;
  const { width, height } = info.display;
  let sx = null;
  let sy = null;
  if (shape[0] === width && shape[1] === height) [sx, sy] = [spacing[0], spacing[1]];
  else if (shape[1] === width && shape[0] === height) [sx, sy] = [spacing[1], spacing[0]];
  if (!(sx > 0 && sy > 0)) return 1;
  const aspect = sy / sx;
  return aspect > 0.1 && aspect < 10 ? aspect : 1;
}

const round3 = (v) => Math.round(v * 1000) / 1000;
