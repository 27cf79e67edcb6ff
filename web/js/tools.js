// Mouse on the viewer: the prompt tools (point, box, scribble; positive or negative),
// right-drag window/level, wheel scrolling, Ctrl+wheel zoom, and pan by middle-drag or by
// dragging with Space held. Produces prompt bodies in display pixels.

import { ZOOM_STEP } from "./viewer.js";

export const TOOLS = ["point", "box", "scribble", "brush", "eraser", "length", "crosshair"];

export class Tools {
  /**
   * viewer: the Viewer; handlers: {prompt(body), window(dx, dy, start), scroll(steps),
   * paint(point, erase, phase: "start"/"move"/"end"), length(a, b, done), crosshair(point)}.
   * body: {points, point_labels} | {box: [x0, y0, x1, y1]} | {scribble: {points, positive}}.
   */
  constructor(viewer, handlers) {
    this.viewer = viewer;
    this.handlers = handlers;
    this.tool = "point";
    this.negative = false;
    this.drag = null;
    this.space = false; // Space held: a left drag pans
    this.listeners = [];
    const el = viewer.viewport;
    el.addEventListener("contextmenu", (e) => e.preventDefault());
    // the zoom buttons sit over the image: pressing them is not drawing
    el.addEventListener("pointerdown", (e) => { if (!e.target.closest("button")) this.down(e); });
    el.addEventListener("pointermove", (e) => this.move(e));
    el.addEventListener("pointerup", (e) => this.up(e));
    el.addEventListener("pointercancel", () => this.cancel());
    el.addEventListener("mousedown", (e) => { if (e.button === 1) e.preventDefault(); }); // no autoscroll
    el.addEventListener("wheel", (e) => this.wheel(e), { passive: false });
  }

  /** Wheel: the next or previous slice; with Ctrl (or a trackpad pinch), zoom about the mouse. */
  wheel(event) {
    event.preventDefault();
    if (event.ctrlKey) {
      const lines = event.deltaMode === 1 ? 33 : 1; // Firefox counts lines
      const notches = Math.max(-1, Math.min(1, (event.deltaY * lines) / 100)); // one mouse notch, or part of a pinch
      this.viewer.zoomBy(ZOOM_STEP ** -notches, ...this.viewer.toViewport(event));
      return;
    }
    if (Math.abs(event.deltaY) < 1) return;
    this.handlers.scroll(event.deltaY > 0 ? 1 : -1);
  }

  /** Space held or released (the page's key handler tells): a left drag pans meanwhile. */
  setSpace(held) {
    this.space = held;
    this.viewer.viewport.classList.toggle("grab", held);
  }

  setTool(tool) {
    if (!TOOLS.includes(tool)) return;
    this.tool = tool;
    this.changed();
  }

  setNegative(negative) {
    this.negative = negative;
    this.changed();
  }

  onChange(fn) { this.listeners.push(fn); }

  changed() {
    this.viewer.viewport.dataset.tool = this.tool;
    for (const fn of this.listeners) fn(this);
  }

  down(event) {
    if (!this.viewer.info) return;
    const el = this.viewer.viewport;
    el.focus({ preventScroll: true });
    if (event.button === 1 || (event.button === 0 && this.space)) {
      this.drag = { kind: "pan", x: event.clientX, y: event.clientY };
    } else if (event.button === 2) {
      this.drag = { kind: "window", x: event.clientX, y: event.clientY };
      this.handlers.window(0, 0, true);
    } else if (event.button === 0) {
      const p = this.viewer.toPlane(event);
      const positive = !(this.negative || event.shiftKey);
      if (this.tool === "brush" || this.tool === "eraser") {
        this.drag = { kind: "paint", erase: this.tool === "eraser" || !positive };
        this.handlers.paint(p, this.drag.erase, "start");
      } else if (this.tool === "length") {
        this.drag = { kind: "length", start: p };
      } else if (this.tool === "crosshair") {
        this.drag = { kind: "crosshair" };
        if (this.viewer.inside(p)) this.handlers.crosshair(p);
      } else if (this.tool === "point") {
        this.drag = { kind: "point", start: p, positive };
      } else if (this.tool === "box") {
        this.drag = { kind: "box", start: p, end: p };
      } else {
        this.drag = { kind: "scribble", points: [p], positive };
      }
    } else {
      return;
    }
    el.setPointerCapture(event.pointerId);
    event.preventDefault();
  }

  move(event) {
    const drag = this.drag;
    if (!drag) return;
    if (drag.kind === "window") {
      this.handlers.window(event.clientX - drag.x, event.clientY - drag.y, false);
      return;
    }
    if (drag.kind === "pan") {
      this.viewer.panBy(event.clientX - drag.x, event.clientY - drag.y);
      [drag.x, drag.y] = [event.clientX, event.clientY];
      return;
    }
    const p = this.viewer.toPlane(event);
    if (drag.kind === "paint") { this.handlers.paint(p, drag.erase, "move"); return; }
    if (drag.kind === "length") { this.handlers.length(drag.start, p, false); return; }
    if (drag.kind === "crosshair") { if (this.viewer.inside(p)) this.handlers.crosshair(p); return; }
    if (drag.kind === "box") drag.end = p;
    else if (drag.kind === "scribble") {
      const last = drag.points[drag.points.length - 1];
      if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= 0.75) drag.points.push(p);
    }
    this.drawRubber();
  }

  up(event) {
    const drag = this.drag;
    this.drag = null;
    this.clearRubber();
    if (!drag || drag.kind === "window" || drag.kind === "pan" || drag.kind === "crosshair") return;
    if (drag.kind === "paint") { this.handlers.paint(null, drag.erase, "end"); return; }
    if (drag.kind === "length") { this.handlers.length(drag.start, this.viewer.toPlane(event), true); return; }
    const v = this.viewer;
    const { width, height } = v.info.display;
    const clampX = (x) => Math.max(0, Math.min(width - 1, Math.floor(x)));
    const clampY = (y) => Math.max(0, Math.min(height - 1, Math.floor(y)));
    if (drag.kind === "point") {
      if (!v.inside(drag.start)) return;
      const [x, y] = drag.start;
      this.handlers.prompt({ points: [[clampX(x), clampY(y)]], point_labels: [drag.positive ? 1 : 0] });
    } else if (drag.kind === "box") {
      const [ax, ay] = drag.start;
      const [bx, by] = v.toPlane(event);
      const box = [clampX(Math.min(ax, bx)), clampY(Math.min(ay, by)), clampX(Math.max(ax, bx)), clampY(Math.max(ay, by))];
      if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return; // a click, not a box
      this.handlers.prompt({ box });
    } else {
      const points = [];
      for (const [x, y] of drag.points) {
        const q = [clampX(x), clampY(y)];
        const last = points[points.length - 1];
        if (!last || last[0] !== q[0] || last[1] !== q[1]) points.push(q);
      }
      if (!drag.points.some((p) => v.inside(p))) return;
      this.handlers.prompt({ scribble: { points, positive: drag.positive } });
    }
  }

  cancel() {
    if (this.drag && this.drag.kind === "paint") this.handlers.paint(null, this.drag.erase, "end");
    this.drag = null;
    this.clearRubber();
  }

  clearRubber() {
    this.viewer.rubber = null;
    this.viewer.drawOverlay();
  }

  /** Draws the box or scribble being made; the viewer redraws it whenever the view changes. */
  drawRubber() {
    const drag = this.drag;
    this.viewer.rubber = (ctx) => this.rubber(ctx, drag);
    this.viewer.drawOverlay();
  }

  rubber(ctx, drag) {
    const v = this.viewer;
    ctx.lineWidth = 2;
    ctx.setLineDash(drag.kind === "box" ? [6, 4] : []);
    ctx.strokeStyle = drag.kind === "scribble" && !drag.positive ? "#ff5c5c" : "#ffd84d";
    ctx.beginPath();
    if (drag.kind === "box") {
      const [ax, ay] = v.toScreen(drag.start);
      const [bx, by] = v.toScreen(drag.end);
      ctx.rect(Math.min(ax, bx), Math.min(ay, by), Math.abs(bx - ax), Math.abs(by - ay));
    } else if (drag.kind === "scribble") {
      drag.points.forEach((p, i) => {
        const [x, y] = v.toScreen(p);
        if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
      });
    }
    ctx.stroke();
  }
}
