// The workbench: wires the catalog, viewer, tools, labels, save and side panels to the
// server's session API. Everything here runs offline against the page's own origin.

import { ApiError, api, query, setStatus, showError, waitForJob } from "./api.js";
import { LabelSet, renderLabelList } from "./labels.js";
import { Pacs, sendToPacs } from "./pacs.js";
import { Annotations, Catalog, Similar, ZeroShot } from "./panels.js";
import { Tools } from "./tools.js";
import { setupUploads } from "./upload.js";
import { Viewer, ZOOM_STEP } from "./viewer.js";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

const labels = new LabelSet();
const viewer = new Viewer($("viewport"), labels);
viewer.onViewChange = updateHud;
const state = { info: null, session: null, canUndo: false, canRedo: false, busy: 0, opening: 0 };

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
}

function goTo(k, t = viewer.t) {
  if (!state.info || !viewer.setPlane(k, t)) return;
  viewer.clearMask();
  delete $("viewport").dataset.maskPlane;
  viewer.drawOverlay();
  updatePlaneControls();
  loadSlice();
  loadMask();
}

function updateWindowInputs() {
  const rgb = viewer.isRgb();
  for (const id of ["wl-center", "wl-width", "wl-preset"]) $(id).disabled = rgb || !state.info;
  $("wl-control").hidden = rgb;
  $("wl-center").value = viewer.center === null ? "" : String(round(viewer.center));
  $("wl-width").value = viewer.width === null ? "" : String(round(viewer.width));
}

function setWindow(center, width) {
  if (!state.info || viewer.isRgb() || !Number.isFinite(center) || !Number.isFinite(width)) return;
  viewer.setWindow(center, width);
  updateWindowInputs();
  loadSlice();
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
    const w = state.info && state.info.window;
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
}

function updateEditButtons() {
  const open = Boolean(state.session);
  $("undo").disabled = !open || !state.canUndo;
  $("redo").disabled = !open || !state.canRedo;
  $("propagate").disabled = !open || (viewer.numSlices <= 1 && viewer.numFrames <= 1);
  $("save-button").disabled = !open;
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
  resetMarks();
  labels.reset(answer.labels);
  state.canUndo = state.canRedo = false;
  updateEditButtons();
  await loadMask();
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
    catalog.select(id);
    viewer.setImage(info);
    $("placeholder").hidden = true;
    $("image-title").textContent = [info.name, info.modality, info.body_part, info.format].filter(Boolean).join(" · ");
    document.body.dataset.imageId = id;
    const dicom = String(info.format || "").toLowerCase().includes("dicom");
    const formatSelect = $("save-format");
    formatSelect.querySelector("option[value=dicom-seg]").disabled = !dicom;
    if (!dicom) formatSelect.value = "nifti";
    $("save-status").textContent = "";
    updatePlaneControls();
    updateWindowInputs();
    loadSlice();
    annotations.load(id);
    similar.forImage(id);
    zeroShot.setImage(id);
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
  const request = { k: viewer.k, t: viewer.t, label: value, label_name: info.name, color: info.color, points: [], point_labels: [], ...body };
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
    const answer = await sessionApi("/propagate", { method: "POST", body: { label: labels.active, axis }, retry: false });
    if (!answer) return;
    const { job } = answer;
    await waitForJob(job, (done, total) => busy(0, `propagating through ${what}… ${done}/${total || "?"}`));
    marks.undone = [];
    pushMark(null, null);
    unsaved.add(state.session);
    setStatus(`propagated ${labels.get(labels.active)?.name || ""} through the ${what}`);
    await loadMask();
  }, `propagating through ${what}…`);
}

function renderLabels() {
  renderLabelList($("label-list"), labels, editLabel);
}

function editLabel(value, { name, color }) {
  const label = labels.get(value);
  if (!label) return;
  label.name = name;
  label.color = color;
  renderLabels();
  viewer.renderMask();
  if (state.session) {
    serial(() => sessionApi("/labels", { method: "POST", body: { label: value, name, color } }), "saving label…");
  }
}

labels.onChange(() => { renderLabels(); viewer.renderMask(); });

const tools = new Tools(viewer, {
  prompt: sendPrompt,
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
$("add-label").addEventListener("click", () => {
  try { labels.add(); } catch (error) { showError(error); }
});

function toggleMask() {
  viewer.maskVisible = !viewer.maskVisible;
  $("toggle-mask").setAttribute("aria-pressed", String(viewer.maskVisible));
  $("toggle-mask").classList.toggle("active", viewer.maskVisible);
  viewer.renderMask();
  viewer.drawOverlay();
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
    const answer = await sessionApi("/save", { method: "POST", body: { name, format }, retry: false });
    if (!answer) return;
    unsaved.delete(state.session);
    const voxels = Object.values(answer.voxels || {}).reduce((a, b) => a + b, 0);
    $("save-status").textContent = `saved ${answer.name} v${answer.version} (${voxels} voxels)`;
    setStatus(`saved ${answer.name} v${answer.version}`);
    await annotations.load(imageId);
  }, "saving…");
}

function loadAnnotation(name, version) {
  if (!state.info) return;
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
    a: () => $("add-label").click(),
    "+": () => viewer.zoomBy(ZOOM_STEP), "=": () => viewer.zoomBy(ZOOM_STEP), "-": () => viewer.zoomBy(1 / ZOOM_STEP),
  };
  if (actions[key]) { event.preventDefault(); actions[key](); }
});

// ---- start ------------------------------------------------------------------------------

const catalog = new Catalog(document.querySelector("[data-testid=catalog-panel]"), openImage);
const similar = new Similar(document.querySelector("[data-testid=similar-panel]"), openImage);
const zeroShot = new ZeroShot(document.querySelector("[data-testid=zeroshot-panel]"));
const annotations = new Annotations(document.querySelector("[data-testid=save-panel]"), loadAnnotation, sendToPacs);
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

labels.reset({});
updateToolButtons();
updateEditButtons();
updatePlaneControls();
updateWindowInputs();
document.body.dataset.busy = "0";
health();
catalog.load().then(() => {
  const wanted = new URLSearchParams(window.location.search).get("image");
  if (wanted) openImage(wanted);
});
document.body.dataset.ready = "1";
