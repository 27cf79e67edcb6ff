// The workbench: wires the catalog, viewer, tools, labels, save and side panels to the
// server's session API. Everything here runs offline against the page's own origin.

import { ApiError, api, query, setStatus, showError, waitForJob } from "./api.js";
import { LabelSet, renderLabelList, setTerminology } from "./labels.js";
import { Loop } from "./loop.js";
import { Pacs, sendToPacs } from "./pacs.js";
import { SideView, displayToVoxel, voxelToDisplay } from "./mpr.js";
import { Annotations, Catalog, Similar, ZeroShot } from "./panels.js";
import { Ask } from "./ask.js";
import { Generate } from "./generate.js";
import { Report } from "./report.js";
import { Tools } from "./tools.js";
import { setupUploads } from "./upload.js";
import { Viewer, ZOOM_STEP, decodeMask } from "./viewer.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

const labels = new LabelSet();
const viewer = new Viewer($("viewport"), labels);
viewer.onViewChange = updateHud;
const state = { info: null, session: null, canUndo: false, canRedo: false, busy: 0, opening: 0 };
const review = { planes: [], axis: "k", label: null }; // the last propagation's planes and scores (showReview)

// ---- busy indicator and serialised requests ---------------------------------------

function busy(delta, text) {
  state.busy = Math.max(0, state.busy + delta);
  $("busy").hidden = state.busy === 0;
  if (text) $("busy").querySelector(".busy-text").textContent = text;
  document.body.dataset.busy = String(state.busy);
}

// Prompt markers mirror the server's history: each undoable step is an entry (a marker on a
// plane, or null for a propagation), so that undo and redo take markers away and back.
const marks = { done: [], undone: [] };

// Each image opened in this page keeps its session while others are open, so going back
// finds the drawing as it was; sessions with changes not yet saved make leaving the page ask.
const kept = new Map(); // image id -> { session, done, undone, planes } of an image not shown now
const unsaved = new Set(); // session ids with changes since their last save

window.addEventListener("beforeunload", (event) => {
  const open = [state.session, ...[...kept.values()].map((k) => k.session)];
  if (open.some((session) => unsaved.has(session))) event.preventDefault();
});

function resetMarks() {
  viewer.marks.clear();
  marks.done = [];
  marks.undone = [];
  viewer.drawOverlay();
}

function pushMark(plane, mark) {
  if (plane) {
    if (!viewer.marks.has(plane)) viewer.marks.set(plane, []);
    viewer.marks.get(plane).push(mark);
  }
  marks.done.push({ plane, mark });
}

function stepMarks(which) {
  const [from, to] = which === "undo" ? [marks.done, marks.undone] : [marks.undone, marks.done];
  const entry = from.pop();
  if (!entry) return;
  if (entry.plane) {
    if (which === "undo") viewer.marks.get(entry.plane)?.pop();
    else {
      if (!viewer.marks.has(entry.plane)) viewer.marks.set(entry.plane, []);
      viewer.marks.get(entry.plane).push(entry.mark);
    }
  }
  to.push(entry);
}

let chain = Promise.resolve();
/** Runs session edits one after another, so that the server sees them in order. */
function serial(task, text) {
  const run = chain.then(async () => {
    busy(+1, text);
    try { return await task(); } catch (error) { showError(error); return undefined; } finally { busy(-1); }
  });
  chain = run.catch(() => {});
  return run;
}

/** A function that runs `task` at most once at a time, rerunning once if called meanwhile. */
function coalesce(task) {
  let running = false;
  let again = false;
  const run = async () => {
    if (running) { again = true; return; }
    running = true;
    try { await task(); } finally {
      running = false;
      if (again) { again = false; run(); }
    }
  };
  return run;
}

// ---- plane, sliders, window/level --------------------------------------------------

const loadSlice = coalesce(() => viewer.loadSlice());
const loadMask = coalesce(async () => {
  if (!state.session) { viewer.clearMask(); return; }
  const session = state.session;
  const [k, t] = [viewer.k, viewer.t];
  try {
    const plane = await api(`/sessions/${session}/mask${query({ k, t })}`);
    if (session === state.session) await applyPlane(plane, false);
  } catch (error) {
    if (expired(error)) renewSession(session); // the new session's start loads its mask
    else showError(error, "mask");
  }
});

function updatePlaneControls() {
  const slider = $("slice-slider");
  slider.max = String(viewer.numSlices - 1);
  slider.value = String(viewer.k);
  $("slice-control").hidden = viewer.numSlices <= 1;
  const frames = $("frame-slider");
  frames.max = String(viewer.numFrames - 1);
  frames.value = String(viewer.t);
  $("frame-control").hidden = viewer.numFrames <= 1;
  const saliency = $("text-saliency"); // shown with the plane it was made on only
  saliency.hidden = !saliency.getAttribute("src") || saliency.dataset.plane !== `${state.info?.id}:${viewer.k},${viewer.t}`;
  updateHud();
}

/** The HUD over the image: "slice 10 / 24 · frame 2 / 5 · 300 %" (zoom relative to fit). */
function updateHud() {
  const parts = [];
  if (viewer.numSlices > 1) parts.push(`slice ${viewer.k + 1} / ${viewer.numSlices}`);
  if (viewer.numFrames > 1) parts.push(`frame ${viewer.t + 1} / ${viewer.numFrames}`);
  if (viewer.info) parts.push(`${Math.round(viewer.zoom * 100)} %`);
  const hud = $("slice-label");
  hud.textContent = parts.join(" · ");
  hud.dataset.k = String(viewer.k);
  hud.dataset.t = String(viewer.t);
  markReviewPlane();
}

function goTo(k, t = viewer.t) {
  if (!state.info || !viewer.setPlane(k, t)) return;
  viewer.clearMask();
  viewer.ruler = null;
  delete $("viewport").dataset.maskPlane;
  viewer.drawOverlay();
  updatePlaneControls();
  clearMeasurements();
  loadSlice();
  loadMask();
  refreshSideViews();
}

function updateWindowInputs() {
  const rgb = viewer.isRgb();
  for (const id of ["wl-center", "wl-width", "wl-preset"]) $(id).disabled = rgb || !state.info;
  $("wl-control").hidden = rgb;
  $("wl-center").value = viewer.center === null ? "" : String(round(viewer.center));
  $("wl-width").value = viewer.width === null ? "" : String(round(viewer.width));
}

/** A new window/level: the planes already here are windowed again in the page, no request. */
function setWindow(center, width) {
  if (!state.info || viewer.isRgb() || !Number.isFinite(center) || !Number.isFinite(width)) return;
  viewer.setWindow(center, width);
  updateWindowInputs();
  if (viewer.raw) viewer.paint(); else loadSlice();
  for (const view of sideViews) view.update(viewState(), mpr.voxel);
}

$("slice-slider").addEventListener("input", (e) => goTo(Number(e.target.value)));
$("frame-slider").addEventListener("input", (e) => goTo(viewer.k, Number(e.target.value)));
for (const id of ["wl-center", "wl-width"]) {
  $(id).addEventListener("change", () => setWindow(Number($("wl-center").value), Number($("wl-width").value)));
}
$("wl-preset").addEventListener("change", (e) => {
  const value = e.target.value;
  e.target.value = "";
  if (value === "auto") {
    const w = state.info && state.info.auto_window;
    if (w) setWindow(w.center, w.width);
  } else if (value) {
    const [c, w] = value.split(",").map(Number);
    setWindow(c, w);
  }
});

// ---- session state -----------------------------------------------------------------

/** Takes a PlaneState: labels, undo/redo, and the mask (jumping to its plane if asked). */
async function applyPlane(plane, follow = true) {
  if (!plane) return;
  if (plane.labels) { labels.merge(plane.labels); }
  state.canUndo = Boolean(plane.can_undo);
  state.canRedo = Boolean(plane.can_redo);
  updateEditButtons();
  if (follow && (plane.k !== viewer.k || plane.t !== viewer.t)) {
    viewer.setPlane(plane.k, plane.t);
    updatePlaneControls();
    loadSlice();
  }
  await viewer.setMaskFromState(plane);
  $("viewport").dataset.revision = String(plane.revision ?? "");
  $("viewport").dataset.maskPlane = `${plane.k},${plane.t}`; // which plane the shown mask belongs to
  if (mpr.on && plane.revision !== mpr.revision) { mpr.revision = plane.revision; refreshSideMasks(); }
}

function updateEditButtons() {
  const open = Boolean(state.session);
  $("undo").disabled = !open || !state.canUndo;
  $("redo").disabled = !open || !state.canRedo;
  $("propagate").disabled = !open || (viewer.numSlices <= 1 && viewer.numFrames <= 1);
  $("save-button").disabled = !open;
  $("fill-holes").disabled = !open;
  $("text-prompt-run").disabled = !open;
  $("smooth").disabled = !open;
  $("measure-roi").disabled = !open || viewer.isRgb();
}

async function startSession(annotation) {
  const old = state.session;
  state.session = null;
  if (old) api(`/sessions/${old}`, { method: "DELETE" }).catch(() => {});
  const body = { image_id: state.info.id };
  if (annotation) body.annotation = annotation;
  const answer = await api("/sessions", { method: "POST", body });
  if (state.info.id !== body.image_id) { // another image was opened meanwhile
    api(`/sessions/${answer.session}`, { method: "DELETE" }).catch(() => {});
    return false;
  }
  state.session = answer.session;
  document.body.dataset.session = answer.session;
  showReview(null);
  resetMarks();
  labels.reset(answer.labels);
  state.canUndo = state.canRedo = false;
  updateEditButtons();
  await loadMask();
  refreshSideMasks();
  return true;
}

/** Back to the session this image had earlier in the page (its drawing and markers), else a new one. */
async function resumeSession() {
  const earlier = kept.get(state.info.id);
  kept.delete(state.info.id);
  if (!earlier) return startSession();
  state.session = earlier.session;
  document.body.dataset.session = earlier.session;
  resetMarks();
  [marks.done, marks.undone] = [earlier.done, earlier.undone];
  for (const [plane, list] of earlier.planes) viewer.marks.set(plane, list);
  labels.reset({});
  updateEditButtons();
  await loadMask(); // the plane's mask, labels and undo state; an expired session is renewed there
  return true;
}

// The server forgets a session idle for an hour (404 "no session ..."): the page then starts
// a new one on the same image, says so, and does the user's action again there.

const EXPIRED_NOTICE = "unsaved drawing expired after an hour idle; carrying on in a new session (saved versions are safe, under Save)";
const renewals = new Map(); // a session the server forgot -> the start of its replacement (true once started)

const expired = (error) => error instanceof ApiError && error.status === 404;

/** Starts (once, however many requests notice) a new session for one the server forgot; true once started. */
function renewSession(gone) {
  if (gone && gone === state.session) {
    state.session = null; // nothing to close: the server has forgotten it
    renewals.set(gone, startSession().then((started) => {
      if (started) setStatus(EXPIRED_NOTICE, "warning");
      return started;
    }, (error) => { showError(error, "session"); return false; }));
  }
  return renewals.get(gone) ?? Promise.resolve(false);
}

/**
 * api() on the current session: `path` after /sessions/{sid}. When the session has expired,
 * renews it and sends the request again there, or (retry: false, for undo, redo, propagate
 * and save, which mean nothing on a blank session) answers null.
 */
async function sessionApi(path, { retry = true, ...options } = {}) {
  const session = state.session;
  try {
    return await api(`/sessions/${session}${path}`, options);
  } catch (error) {
    if (!expired(error) || !(await renewSession(session))) throw error;
    return retry ? api(`/sessions/${state.session}${path}`, options) : null;
  }
}

// ---- opening images ------------------------------------------------------------------

async function openImage(id) {
  const ticket = ++state.opening;
  busy(+1, "opening…");
  try {
    const info = await api(`/images/${encodeURIComponent(id)}`);
    if (ticket !== state.opening) return;
    if (state.session) { // kept for coming back; prompts must not reach it meanwhile
      kept.set(state.info.id, { session: state.session, done: marks.done, undone: marks.undone, planes: new Map(viewer.marks) });
      state.session = null;
      updateEditButtons();
    }
    state.info = info;
    showReview(null);
    catalog.select(id);
    setPlaying(false);
    viewer.setImage(info);
    clearMeasurements();
    setupSideViews(info);
    $("play-control").hidden = (info.num_frames || 1) <= 1;
    $("placeholder").hidden = true;
    $("image-title").textContent = [info.synthetic ? "SYNTHETIC" : null, info.name, info.modality, info.body_part, info.format].filter(Boolean).join(" · ");
    document.body.dataset.imageId = id;
    const dicom = String(info.format || "").toLowerCase().includes("dicom");
    const formatSelect = $("save-format");
    formatSelect.querySelector("option[value=dicom-seg]").disabled = !dicom;
    if (!dicom) formatSelect.value = "nifti";
    $("save-status").textContent = "";
    updatePlaneControls();
    updateWindowInputs();
    loadSlice();
    refreshSideViews();
    annotations.load(id);
    similar.forImage(id);
    zeroShot.setImage(id);
    report.setImage(id);
    ask.setImage(id);
    await serial(() => resumeSession(), "starting session…");
  } catch (error) {
    showError(error, "open");
  } finally {
    busy(-1);
  }
}

// ---- prompts, undo, propagate, labels ------------------------------------------------

function sendPrompt(body) {
  if (!state.session || !state.info) return;
  const value = labels.active;
  const info = labels.get(value) || {};
  if (labels.locked.has(value)) { setStatus(`${info.name || "this structure"} is locked: unlock it to change it`, "warning"); return; }
  const request = { k: viewer.k, t: viewer.t, label: value, label_name: info.name, color: info.color, ...(info.code ? { code: info.code.code } : {}), points: [], point_labels: [],
    locked: [...labels.locked], ...body };
  return serial(async () => {
    const plane = await sessionApi("/prompts", { method: "POST", body: request });
    marks.undone = [];
    pushMark(`${request.k},${request.t}`, { ...body, label: value });
    unsaved.add(state.session);
    viewer.drawOverlay();
    const label = labels.get(value);
    if (label) label.known = true;
    await applyPlane(plane);
    renderLabels();
  }, "segmenting…");
}

/**
 * Segment by words: the server derives a box from the words (the image-text model's saliency) and
 * prompts the active structure with it, one undoable step. An answer for a plane or image no longer
 * shown changes the drawing there, but is not painted here, nor is the view moved to it.
 */
function segmentByWords() {
  const text = $("text-prompt").value.trim();
  if (!state.session || !state.info || !text) return;
  const value = labels.active;
  const info = labels.get(value) || {};
  if (labels.locked.has(value)) { setStatus(`${info.name || "this structure"} is locked: unlock it to change it`, "warning"); return; }
  const session = state.session;
  const request = { text, k: viewer.k, t: viewer.t, label: value, label_name: info.name, color: info.color,
    ...(info.code ? { code: info.code.code } : {}), locked: [...labels.locked], saliency: true };
  const form = $("text-prompt-form");
  const imageId = state.info.id;
  return serial(async () => {
    try {
      if (session !== state.session) return; // another image was opened before this could be sent
      const plane = await sessionApi("/text-prompts", { method: "POST", body: request });
      const key = `${request.k},${request.t}`;
      const mark = { box: plane.box, label: value };
      if (state.info?.id !== imageId) { // the image was left meanwhile: its kept session has the step
        const away = kept.get(imageId);
        if (away) { away.done.push({ plane: key, mark }); away.undone = []; away.planes.set(key, [...(away.planes.get(key) || []), mark]); }
        return;
      }
      marks.undone = [];
      pushMark(key, mark);
      unsaved.add(state.session);
      const label = labels.get(value);
      if (label) label.known = true;
      await applyPlane(plane, false);
      renderLabels();
      viewer.drawOverlay();
      const saliency = $("text-saliency");
      saliency.src = plane.saliency;
      saliency.dataset.plane = `${imageId}:${key}`;
      form.dataset.box = plane.box.join(",");
      updatePlaneControls();
    } catch (error) {
      showError(error, "segment by words");
    } finally {
      form.dataset.settled = String(Number(form.dataset.settled || 0) + 1); // answers handled, shown or not
    }
  }, "segmenting by words…");
}

function history(which) {
  if (!state.session) return;
  return serial(async () => {
    const plane = await sessionApi(`/${which}`, { method: "POST", body: {}, retry: false });
    if (!plane) return;
    stepMarks(which);
    unsaved.add(state.session);
    await applyPlane(plane);
    viewer.drawOverlay();
  }, which === "undo" ? "undoing…" : "redoing…");
}

function propagate() {
  if (!state.session) return;
  const axis = viewer.numSlices > 1 ? "k" : "t";
  const what = axis === "k" ? "slices" : "frames";
  return serial(async () => {
    const answer = await sessionApi("/propagate", { method: "POST", body: { label: labels.active, axis, locked: [...labels.locked] }, retry: false });
    if (!answer) return;
    const { job } = answer;
    const result = await waitForJob(job, (done, total) => busy(0, `propagating through ${what}… ${done}/${total || "?"}`));
    marks.undone = [];
    pushMark(null, null);
    unsaved.add(state.session);
    setStatus(`propagated ${labels.get(labels.active)?.name || ""} through the ${what}`);
    const below = Number($("review-below").value);
    const reviewed = result && result.review;
    showReview(reviewed && below !== reviewed.below ? await sessionApi(`/propagation${query({ label: reviewed.label, below })}`) : reviewed, axis);
    await loadMask();
  }, `propagating through ${what}…`);
}

function renderLabels() {
  renderLabelList($("label-list"), labels, editLabel);
}

function editLabel(value, { name, color, code }) {
  const label = labels.get(value);
  if (!label) return;
  label.name = name;
  label.color = color;
  label.code = code || null;
  renderLabels();
  viewer.renderMask();
  if (state.session) {
    serial(() => sessionApi("/labels", { method: "POST", body: { label: value, name, color, code: code ? code.code : "" } }), "saving label…");
  }
}

labels.onChange(() => { renderLabels(); viewer.renderMask(); for (const view of sideViews) view.update(viewState(), mpr.voxel); });

// ---- brush and eraser: painted here, sent as the plane's new labels (one undoable step) ----------

const stroke = { footprint: null, last: null, plane: null };

/** Marks the brush's disc at display pixel (x, y) in `footprint` (a plane `width` × `height`, raw values `planeRaw`). */
function stamp(footprint, { width, height }, planeRaw, [x, y]) {
  const r = Math.max(0, Math.min(50, Number($("brush-radius").value) || 0));
  // threshold-limited: only pixels whose value lies inside the window shown
  const raw = $("brush-threshold").checked ? planeRaw : null;
  const [low, high] = [viewer.center - viewer.width / 2, viewer.center + viewer.width / 2];
  for (let dy = -Math.ceil(r); dy <= Math.ceil(r); dy += 1) {
    for (let dx = -Math.ceil(r); dx <= Math.ceil(r); dx += 1) {
      const [px, py] = [Math.floor(x) + dx, Math.floor(y) + dy];
      if (!(dx * dx + dy * dy <= r * r + 0.5 && px >= 0 && py >= 0 && px < width && py < height)) continue;
      const i = py * width + px;
      if (!raw || (raw.values[i] >= low && raw.values[i] <= high)) footprint[i] = 1;
    }
  }
}

/** Applies a stroke's footprint to label values: the active structure (or 0 to erase), never over locked ones. */
function applyStroke(values, footprint, value) {
  for (let i = 0; i < values.length; i += 1) {
    if (footprint[i] && !labels.locked.has(values[i])) values[i] = value;
  }
}

function paint(point, erase, phase) {
  if (!state.session || !state.info || viewer.isRgb()) return;
  const { width, height } = viewer.info.display;
  if (phase === "start") {
    if (!erase && labels.locked.has(labels.active)) { setStatus("this structure is locked: unlock it to paint it", "warning"); return; }
    stroke.footprint = new Uint8Array(width * height);
    stroke.last = null;
    stroke.plane = [viewer.k, viewer.t];
  }
  if (!stroke.footprint) return;
  if (point) {
    const from = stroke.last || point;
    const steps = Math.max(1, Math.ceil(Math.hypot(point[0] - from[0], point[1] - from[1])));
    for (let s = 0; s <= steps; s += 1) {
      stamp(stroke.footprint, viewer.info.display, viewer.raw, [from[0] + ((point[0] - from[0]) * s) / steps, from[1] + ((point[1] - from[1]) * s) / steps]);
    }
    stroke.last = point;
    if (!viewer.mask) viewer.mask = { width, height, values: new Uint8Array(width * height) };
    applyStroke(viewer.mask.values, stroke.footprint, erase ? 0 : labels.active); // shown at once, sent at the end
    viewer.renderMask();
  }
  if (phase !== "end") return;
  const { footprint, plane: [k, t] } = stroke;
  stroke.footprint = null;
  const value = erase ? 0 : labels.active;
  const info = labels.get(value) || {};
  serial(async () => {
    // onto the plane as the server has it now (a prompt may have answered meanwhile)
    const current = await sessionApi(`/mask${query({ k, t })}`);
    const base = await decodeMask(current.mask);
    applyStroke(base.values, footprint, value);
    if (value) await sessionApi("/labels", { method: "POST", body: { label: value, name: info.name, color: info.color, ...(info.code ? { code: info.code.code } : {}) } });
    const plane = await sessionApi("/planes", { method: "PUT", body: { k, t, mask: await labelDataUrl(base), locked: [...labels.locked] } });
    marks.undone = [];
    pushMark(null, null);
    unsaved.add(state.session);
    await applyPlane(plane, false);
  }, erase ? "erasing…" : "painting…");
}

// Painting in an MPR side view: the same brush on that view's plane, sent as that plane's new
// labels (one undoable step over every slice it crosses).
const sideStroke = { footprint: null, last: null, view: null, at: null };

function paintSide(view, point, phase) {
  if (!state.session || !view.view || !view.raw) return;
  const erase = tools.tool === "eraser";
  const { width, height } = view.view;
  if (phase === "start") {
    if (!erase && labels.locked.has(labels.active)) { setStatus("this structure is locked: unlock it to paint it", "warning"); return; }
    Object.assign(sideStroke, { footprint: new Uint8Array(width * height), last: null, view, at: [view.index, view.t] });
  }
  if (!sideStroke.footprint || sideStroke.view !== view) return;
  const value = erase ? 0 : labels.active;
  if (point) {
    const from = sideStroke.last || point;
    const steps = Math.max(1, Math.ceil(Math.hypot(point[0] - from[0], point[1] - from[1])));
    for (let s = 0; s <= steps; s += 1) {
      stamp(sideStroke.footprint, view.view, view.raw, [from[0] + ((point[0] - from[0]) * s) / steps, from[1] + ((point[1] - from[1]) * s) / steps]);
    }
    sideStroke.last = point;
    if (!view.mask) view.mask = { width, height, values: new Uint8Array(width * height) };
    applyStroke(view.mask.values, sideStroke.footprint, value); // shown at once, sent at the end
    view.draw();
  }
  if (phase !== "end") return;
  const { footprint, at: [index, t] } = sideStroke;
  sideStroke.footprint = null;
  const info = labels.get(value) || {};
  serial(async () => {
    const current = await sessionApi(`/mask${query({ axis: view.axis, index, t })}`);
    const base = await decodeMask(current.mask);
    applyStroke(base.values, footprint, value);
    if (value) await sessionApi("/labels", { method: "POST", body: { label: value, name: info.name, color: info.color, ...(info.code ? { code: info.code.code } : {}) } });
    const answer = await sessionApi("/planes", { method: "PUT", body: { axis: view.axis, index, t, mask: await labelDataUrl(base), locked: [...labels.locked] } });
    marks.undone = [];
    pushMark(null, null);
    unsaved.add(state.session);
    state.canUndo = Boolean(answer.can_undo);
    state.canRedo = Boolean(answer.can_redo);
    updateEditButtons();
    await loadMask();
    refreshSideMasks();
  }, erase ? "erasing…" : "painting…");
}

/** Label values as a PNG data URL (the value in every colour channel). */
async function labelDataUrl({ width, height, values }) {
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  for (let i = 0; i < values.length; i += 1) {
    image.data[4 * i] = image.data[4 * i + 1] = image.data[4 * i + 2] = values[i];
    image.data[4 * i + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  const blob = await canvas.convertToBlob({ type: "image/png" });
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("the painted mask could not be encoded"));
    reader.readAsDataURL(blob);
  });
}

function smooth() {
  if (!state.session) return;
  const [k, t, label, whole] = [viewer.k, viewer.t, labels.active, $("smooth-scope").value === "whole"];
  return serial(async () => {
    const plane = await sessionApi("/smooth", { method: "POST", body: { k, t, label, sigma: 1.5, whole, locked: [...labels.locked] } });
    if (!plane.changed) { setStatus("the outline is already smooth"); return; }
    marks.undone = [];
    pushMark(null, null);
    unsaved.add(state.session);
    setStatus(`smoothed: ${plane.changed} pixels changed`);
    await applyPlane(plane, false);
    if (whole) refreshSideMasks();
  }, "smoothing…");
}

// ---- propagation review: each plane's score, low-confidence planes marked and stepped through ----

/** Shows a propagation's {label, below, planes: [{k, t, score, low}]} (null hides the panel). */
function showReview(answer, axis = review.axis) {
  review.planes = (answer && answer.planes) || [];
  review.axis = axis;
  review.label = answer ? answer.label : null;
  $("review-panel").hidden = review.planes.length === 0;
  const low = review.planes.filter((p) => p.low);
  const what = axis === "k" ? "slices" : "frames";
  $("review-summary").textContent = review.planes.length
    ? `${review.planes.length} ${what} reached; ${low.length} below ${answer.below} (marked red)` : "";
  $("review-strip").replaceChildren(...review.planes.map((p) => {
    const bar = document.createElement("button");
    bar.type = "button";
    bar.className = p.low ? "low" : "";
    bar.style.height = `${Math.max(8, Math.round(p.score * 100))}%`;
    bar.title = `${axis === "k" ? "slice" : "frame"} ${(axis === "k" ? p.k : p.t) + 1}: score ${p.score.toFixed(2)}`;
    bar.setAttribute("data-testid", "review-plane");
    Object.assign(bar.dataset, { k: String(p.k), t: String(p.t), score: String(p.score), low: String(p.low) });
    bar.addEventListener("click", () => goTo(p.k, p.t));
    return bar;
  }));
  markReviewPlane();
}

/** Marks the shown plane in the strip and puts its score in the HUD. */
function markReviewPlane() {
  const current = review.planes.find((p) => p.k === viewer.k && p.t === viewer.t);
  for (const bar of $("review-strip").children) bar.classList.toggle("current", Number(bar.dataset.k) === viewer.k && Number(bar.dataset.t) === viewer.t);
  const hud = $("slice-label");
  if (current) hud.dataset.score = String(current.score); else delete hud.dataset.score;
  if (current) hud.textContent += ` · score ${current.score.toFixed(2)}${current.low ? " (low)" : ""}`;
}

function stepLow(direction) {
  const position = (p) => (review.axis === "k" ? p.k : p.t);
  const here = review.axis === "k" ? viewer.k : viewer.t;
  const low = review.planes.filter((p) => p.low).sort((a, b) => position(a) - position(b));
  const next = direction > 0 ? low.find((p) => position(p) > here) : [...low].reverse().find((p) => position(p) < here);
  if (next) goTo(next.k, next.t); else setStatus(`no low-confidence plane ${direction > 0 ? "after" : "before"} this one`);
}

function fillHoles() {
  if (!state.session) return;
  const [k, t, label] = [viewer.k, viewer.t, labels.active];
  return serial(async () => {
    const plane = await sessionApi("/fill-holes", { method: "POST", body: { k, t, label, locked: [...labels.locked] } });
    if (!plane.filled) { setStatus("no holes to fill in this structure on this plane"); return; }
    marks.undone = [];
    pushMark(null, null);
    unsaved.add(state.session);
    setStatus(`filled ${plane.filled} pixels`);
    await applyPlane(plane, false);
  }, "filling holes…");
}

// ---- measurements: answers for another image or plane than the one shown are dropped -------------

function clearMeasurements() {
  $("measure-result").textContent = "";
  delete $("measure-result").dataset.label;
  $("length-result").textContent = "";
}

const number = (v, digits = 1) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));

function measureRoi() {
  if (!state.session || !state.info) return;
  const [imageId, k, t, label] = [state.info.id, viewer.k, viewer.t, labels.active];
  return serial(async () => {
    const stats = await sessionApi(`/measure${query({ label, k, t })}`);
    if (!state.info || state.info.id !== imageId || viewer.k !== k || viewer.t !== t) return; // the user moved on
    const units = state.info.units ? ` ${state.info.units}` : "";
    const name = labels.get(label)?.name || `structure ${label}`;
    const { plane, structure } = stats;
    const lines = [`${name} on this plane: ${plane.voxels} px, mean ${number(plane.mean)}${units}, SD ${number(plane.sd)}${units}`
      + (plane.area_mm2 === null ? "" : `, area ${number(plane.area_mm2)} mm²`)];
    if (viewer.numSlices > 1) {
      lines.push(`whole structure: mean ${number(structure.mean)}${units}, SD ${number(structure.sd)}${units}`
        + (structure.volume_ml === null ? "" : `, volume ${number(structure.volume_ml, 2)} mL`));
    }
    const result = $("measure-result");
    result.textContent = lines.join("\n");
    Object.assign(result.dataset, { label: String(label), mean: String(plane.mean), area: String(plane.area_mm2), volume: String(structure.volume_ml) });
  }, "measuring…");
}

function measureLength(a, b, done) {
  const spacing = viewer.pixelMm();
  const [sx, sy] = spacing || [1, 1];
  const length = Math.hypot((b[0] - a[0]) * sx, (b[1] - a[1]) * sy);
  const text = spacing ? `${length.toFixed(1)} mm` : `${length.toFixed(1)} px`;
  viewer.ruler = { a, b, text };
  viewer.drawOverlay();
  if (done) {
    $("length-result").textContent = `length ${text}`;
    $("length-result").dataset.mm = spacing ? length.toFixed(2) : "";
  }
}

// ---- MPR: the views across i and j beside the main one, with a linked crosshair -----------------

const mpr = { on: false, voxel: null, revision: null };
const sideViews = [];

/** Window, mask style and spacing the side views draw with. */
function viewState() {
  return { center: viewer.center, width: viewer.width, opacity: viewer.opacity, outline: viewer.outline,
    maskVisible: viewer.maskVisible, spacingKnown: Boolean(state.info && state.info.spacing_known) };
}

const mprAvailable = () => Boolean(state.info && state.info.views && state.info.views.j);

function setupSideViews(info) {
  for (const view of sideViews) view.setImage(info);
  const views = info.views || {};
  mpr.voxel = views.k ? [Math.floor(info.shape[0] / 2), Math.floor(info.shape[1] / 2), viewer.k] : null;
  mpr.revision = null;
  $("layout-mpr").disabled = !mprAvailable();
  showLayout();
}

function showLayout() {
  const on = mpr.on && mprAvailable();
  $("side-views").hidden = !on;
  $("layout-mpr").classList.toggle("active", on);
  $("layout-mpr").setAttribute("aria-pressed", String(on));
  viewer.crosshair = on && mpr.voxel ? voxelToDisplay(state.info.views.k, mpr.voxel).slice(0, 2) : null;
  $("viewport").dataset.crosshair = viewer.crosshair ? viewer.crosshair.join(",") : "";
  viewer.drawOverlay();
}

/** Shows the side views at the crosshair (fetching planes that changed and the masks). */
const refreshSideViews = coalesce(async () => {
  if (!mpr.on || !mprAvailable() || !mpr.voxel) return;
  mpr.voxel[2] = viewer.k;
  showLayout();
  await Promise.all(sideViews.map((view) => view.load(mpr.voxel[view.axis === "i" ? 0 : 1], viewer.t, state.session, viewState(), mpr.voxel)));
});

const refreshSideMasks = coalesce(async () => {
  if (!mpr.on || !mprAvailable()) return;
  await Promise.all(sideViews.map(async (view) => {
    try { await view.loadMask(state.session); view.draw(); } catch (error) { showError(error, "mask"); }
  }));
});

function pick(voxel) {
  mpr.voxel = voxel.map((v) => Math.round(v));
  if (mpr.voxel[2] !== viewer.k) goTo(mpr.voxel[2]);
  else refreshSideViews();
}

function toggleLayout() {
  if (!mprAvailable()) return;
  mpr.on = !mpr.on;
  showLayout();
  refreshSideViews();
}

// with the brush or eraser chosen, the side views paint; otherwise a click there moves the crosshair
const sidePainter = { active: () => tools.tool === "brush" || tools.tool === "eraser", paint: paintSide };
sideViews.push(new SideView($("view-j"), "j", labels, pick, sidePainter), new SideView($("view-i"), "i", labels, pick, sidePainter));

// ---- video ---------------------------------------------------------------------------------------

let playTimer = null;

function setPlaying(on) {
  clearInterval(playTimer);
  playTimer = null;
  if (on && state.info && viewer.numFrames > 1) {
    const fps = Math.max(1, Math.min(60, Number($("fps").value) || 10));
    playTimer = setInterval(() => goTo(viewer.k, (viewer.t + 1) % viewer.numFrames), 1000 / fps);
  }
  $("play").textContent = playTimer ? "❚❚ Pause" : "▶ Play";
  $("play").setAttribute("aria-pressed", String(Boolean(playTimer)));
}

const tools = new Tools(viewer, {
  prompt: sendPrompt,
  paint,
  length: measureLength,
  crosshair: ([x, y]) => {
    if (!mprAvailable()) return;
    pick(displayToVoxel(state.info.views.k, viewer.k, Math.floor(x), Math.floor(y)));
  },
  scroll: (steps) => goTo(viewer.k + steps),
  window: (() => {
    let start = null;
    return (dx, dy, begin) => {
      if (!state.info || viewer.isRgb()) return;
      if (begin || !start) { start = [viewer.center ?? 0, viewer.width ?? 1]; return; }
      const range = state.info.value_range || [0, 255];
      const perPixel = Math.max((range[1] - range[0]) / 400, 1e-3);
      setWindow(start[0] + dy * perPixel, Math.max(1, start[1] + dx * perPixel));
    };
  })(),
});

function updateToolButtons() {
  for (const button of document.querySelectorAll("button.tool")) {
    const on = button.dataset.tool === tools.tool;
    button.classList.toggle("active", on);
    button.setAttribute("aria-pressed", String(on));
  }
  const negative = $("tool-negative");
  negative.classList.toggle("active", tools.negative);
  negative.setAttribute("aria-pressed", String(tools.negative));
}
tools.onChange(updateToolButtons);
for (const button of document.querySelectorAll("button.tool")) {
  button.addEventListener("click", () => tools.setTool(button.dataset.tool));
}
$("tool-negative").addEventListener("click", () => tools.setNegative(!tools.negative));
$("undo").addEventListener("click", () => history("undo"));
$("redo").addEventListener("click", () => history("redo"));
$("propagate").addEventListener("click", propagate);
$("fit").addEventListener("click", () => viewer.fit());
$("zoom-in").addEventListener("click", () => viewer.zoomBy(ZOOM_STEP));
$("zoom-out").addEventListener("click", () => viewer.zoomBy(1 / ZOOM_STEP));
$("toggle-mask").addEventListener("click", toggleMask);
$("fill-holes").addEventListener("click", fillHoles);
$("text-prompt-form").addEventListener("submit", (e) => { e.preventDefault(); segmentByWords(); });
$("smooth").addEventListener("click", smooth);
$("review-prev-low").addEventListener("click", () => stepLow(-1));
$("review-below").addEventListener("change", () => {
  const below = Number($("review-below").value);
  if (!state.session || review.label === null || !(below >= 0 && below <= 1)) return;
  serial(async () => showReview(await sessionApi(`/propagation${query({ label: review.label, below })}`)), "reviewing…");
});
$("review-next-low").addEventListener("click", () => stepLow(+1));
$("measure-roi").addEventListener("click", measureRoi);
$("layout-mpr").addEventListener("click", toggleLayout);
$("play").addEventListener("click", () => setPlaying(!playTimer));
$("fps").addEventListener("change", () => { if (playTimer) setPlaying(true); });
$("mask-opacity").addEventListener("input", (e) => {
  viewer.opacity = Number(e.target.value) / 100;
  viewer.renderMask();
  for (const view of sideViews) view.update(viewState(), mpr.voxel);
});
$("mask-outline").addEventListener("change", (e) => {
  viewer.outline = e.target.checked;
  viewer.renderMask();
  for (const view of sideViews) view.update(viewState(), mpr.voxel);
});
$("viewport").addEventListener("pointermove", (event) => {
  const [x, y] = viewer.toPlane(event);
  const value = viewer.valueAt(x, y);
  const out = $("pixel-value");
  if (value === null) { out.textContent = ""; delete out.dataset.value; return; }
  const units = state.info.units ? ` ${state.info.units}` : "";
  out.textContent = `(${Math.floor(x)}, ${Math.floor(y)}) ${Number.isInteger(value) ? value : value.toFixed(2)}${units}`;
  out.dataset.value = String(value);
});
$("add-label").addEventListener("click", () => {
  try { labels.add(); } catch (error) { showError(error); }
});

function toggleMask() {
  viewer.maskVisible = !viewer.maskVisible;
  $("toggle-mask").setAttribute("aria-pressed", String(viewer.maskVisible));
  $("toggle-mask").classList.toggle("active", viewer.maskVisible);
  viewer.renderMask();
  viewer.drawOverlay();
  for (const view of sideViews) view.update(viewState(), mpr.voxel);
}

// ---- save and load annotations -------------------------------------------------------

$("save-form").addEventListener("submit", (event) => {
  event.preventDefault();
  save();
});

function save() {
  if (!state.session) return;
  const name = $("save-name").value.trim();
  if (!name) { showError("give the annotation a name"); return; }
  const format = $("save-format").value;
  const imageId = state.info.id;
  return serial(async () => {
    const author = $("save-author").value.trim();
    const answer = await sessionApi("/save", { method: "POST", body: { name, format, ...(author ? { author } : {}) }, retry: false });
    if (!answer) return;
    unsaved.delete(state.session);
    const voxels = Object.values(answer.voxels || {}).reduce((a, b) => a + b, 0);
    $("save-status").textContent = `saved ${answer.name} v${answer.version} (${voxels} voxels)`;
    setStatus(`saved ${answer.name} v${answer.version}`);
    await annotations.load(imageId);
  }, "saving…");
}

// The author's name stays in this browser for the next saves.
$("save-author").value = window.localStorage.getItem("medfm.author") || "";
$("save-author").addEventListener("change", () => window.localStorage.setItem("medfm.author", $("save-author").value.trim()));

function loadAnnotation(name, version) {
  if (!state.info) return;
  // never a lost annotation: loading replaces the drawing, so unsaved work is the user's call
  if (state.session && unsaved.has(state.session)
    && !window.confirm(`This image has changes that are not saved. Loading ${name} v${version} replaces them. Load anyway?\n(Cancel keeps your drawing: save it first.)`)) {
    setStatus(`kept your unsaved drawing; ${name} v${version} not loaded`);
    return;
  }
  return serial(async () => {
    await startSession({ name, version });
    $("save-name").value = name;
    setStatus(`loaded ${name} v${version}`);
  }, "loading annotation…");
}

// ---- uploads ----------------------------------------------------------------------------

setupUploads({
  button: $("upload-button"), folderButton: $("folder-button"), input: $("file-input"), folderInput: $("folder-input"),
  progress: $("upload-progress"), overlay: $("drop-overlay"),
  onError: (error) => showError(error, "upload"),
  onIngested: async ({ image_ids: ids = [], bad = [] }) => {
    if (bad.length) showError(`could not read ${bad.map(([name, why]) => `${name} (${why})`).join(", ")}`);
    await catalog.load();
    health();
    if (ids.length) await openImage(ids[0]);
  },
});

// ---- keyboard ------------------------------------------------------------------------

// Space pans (while held) when the pointer is over the image or the image has the focus.
const spaceForViewer = (event) => event.key === " " && ($("viewport").matches(":hover") || event.target === $("viewport"));
document.addEventListener("keyup", (event) => { if (event.key === " ") tools.setSpace(false); });
window.addEventListener("blur", () => tools.setSpace(false));

document.addEventListener("keydown", (event) => {
  const target = event.target;
  const typing = target instanceof HTMLElement && (target.isContentEditable
    || (target.tagName === "INPUT" && !["range", "button", "checkbox", "color"].includes(target.type))
    || target.tagName === "TEXTAREA" || target.tagName === "SELECT");
  const ctrl = event.ctrlKey || event.metaKey;
  const key = event.key.toLowerCase();
  if (ctrl && key === "s") { event.preventDefault(); save(); return; }
  if (typing) return;
  if (ctrl && key === "z" && !event.shiftKey) { event.preventDefault(); history("undo"); return; }
  if (ctrl && (key === "y" || (key === "z" && event.shiftKey))) { event.preventDefault(); history("redo"); return; }
  if (ctrl || event.altKey) return;
  if (spaceForViewer(event)) { event.preventDefault(); tools.setSpace(true); return; }
  const range = target instanceof HTMLInputElement && target.type === "range";
  const moves = {
    ArrowUp: [1, 0], ArrowDown: [-1, 0], PageUp: [5, 0], PageDown: [-5, 0],
    ArrowRight: viewer.numFrames > 1 ? [0, 1] : [1, 0], ArrowLeft: viewer.numFrames > 1 ? [0, -1] : [-1, 0],
  };
  if (moves[event.key] && !range) {
    event.preventDefault();
    const [dk, dt] = moves[event.key];
    goTo(viewer.k + dk, viewer.t + dt);
    return;
  }
  const actions = {
    p: () => tools.setTool("point"), b: () => tools.setTool("box"), s: () => tools.setTool("scribble"),
    n: () => tools.setNegative(!tools.negative), f: () => viewer.fit(), m: toggleMask,
    r: () => tools.setTool("brush"), e: () => tools.setTool("eraser"), l: () => tools.setTool("length"),
    c: () => tools.setTool("crosshair"), v: toggleLayout, k: () => setPlaying(!playTimer),
    a: () => $("add-label").click(),
    "+": () => viewer.zoomBy(ZOOM_STEP), "=": () => viewer.zoomBy(ZOOM_STEP), "-": () => viewer.zoomBy(1 / ZOOM_STEP),
  };
  if (actions[key]) { event.preventDefault(); actions[key](); }
});

// ---- start ------------------------------------------------------------------------------

const catalog = new Catalog(document.querySelector("[data-testid=catalog-panel]"), openImage,
  (id) => Boolean(state.info) && String(state.info.id) === String(id), (ids) => loop.showTicked(ids));
const similar = new Similar(document.querySelector("[data-testid=similar-panel]"), openImage);
const zeroShot = new ZeroShot(document.querySelector("[data-testid=zeroshot-panel]"));
const report = new Report($("report-panel"), openImage, () => $("save-author").value.trim());
const ask = new Ask($("ask-panel"), openImage);
const generate = new Generate($("generate-panel"), openImage, () => { catalog.load(); health(); });
const annotations = new Annotations(document.querySelector("[data-testid=save-panel]"), loadAnnotation, sendToPacs);
const loop = new Loop($("train-panel"), {
  current: () => state.info?.id ?? null, open: openImage, loadVersion: loadAnnotation,
  annotationName: () => $("save-name").value.trim(), onSaved: (id) => annotations.load(id),
  ticked: () => [...catalog.ticked], clearTicked: () => catalog.clearTicked(),
});
const pacs = new Pacs($("pacs-panel"), async ({ image_ids: ids = [] }) => {
  await catalog.load();
  health();
  if (ids.length) await openImage(ids[0]);
});
similar.onIndexed = () => health();

// The server indexes new images in the background (at start with --demo, after uploads and
// PACS pulls): while the index lags the catalog, look again, and refresh the similar cases
// once it has grown.
const INDEX_POLL_MS = 3000;
let indexedSeen = null;
let indexPoll = null;

async function health() {
  try {
    const h = await api("/health");
    const parts = [`segmenter: ${h.segmenter || "none"}`, `encoder: ${h.encoder || "none"}`, `${h.catalog_images ?? "?"} images`, `index: ${h.index_size ?? 0}`];
    $("model-info").textContent = parts.join(" · ");
    $("model-info").title = `medfm ${h.version || ""}`;
    pacs.setAvailable(h.pacs);
    annotations.setPacs(h.pacs);
    if (indexedSeen !== null && h.index_size !== indexedSeen && state.info) similar.forImage(state.info.id);
    indexedSeen = h.index_size;
    clearTimeout(indexPoll);
    if ((h.index_size ?? 0) < (h.catalog_images ?? 0)) indexPoll = setTimeout(health, INDEX_POLL_MS);
  } catch (error) {
    $("model-info").textContent = "server unreachable";
    showError(error, "health");
  }
}

window.addEventListener("pagehide", () => {
  for (const session of [state.session, ...[...kept.values()].map((k) => k.session)]) {
    if (session) api(`/sessions/${session}`, { method: "DELETE", keepalive: true }).catch(() => {});
  }
});

const round = (v) => Math.round(v * 100) / 100;

updateToolButtons();
updateEditButtons();
updatePlaneControls();
updateWindowInputs();
document.body.dataset.busy = "0";
health();
loop.refresh();
generate.load();
// the palette and coded names first: every structure's colour comes from them
api("/terminology").then(setTerminology, (error) => showError(error, "structure names")).finally(() => {
  labels.reset({});
  catalog.load().then(() => {
    const wanted = new URLSearchParams(window.location.search).get("image");
    if (wanted) openImage(wanted);
  });
  document.body.dataset.ready = "1";
});
