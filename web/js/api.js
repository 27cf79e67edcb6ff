// Talking to the medfm server: one fetch wrapper that adds the workbench's client header
// (the server takes changes only from requests that carry it: a page on another site cannot
// send it) and the token (from the page's ?token=, when there is one), turns {"detail"}
// errors into Error messages, and polls jobs.

const token = new URLSearchParams(window.location.search).get("token");
if (token) {
  // The server has set its cookie from ?token=; keep the secret out of the address bar,
  // bookmarks and screenshots (requests from this page still send it as a header).
  const url = new URL(window.location.href);
  url.searchParams.delete("token");
  window.history.replaceState(null, "", url.pathname + url.search + url.hash);
}

/** An error from the server, carrying its HTTP status and one-line detail. */
export class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

function headers(extra = {}) {
  const all = { ...extra, "X-Medfm-Client": "workbench" };
  return token ? { ...all, Authorization: `Bearer ${token}` } : all;
}

/** The headers every request from the workbench carries (client header, token when there is one). */
export function authHeaders() {
  return headers();
}

/** What a user reads for answers that carry no message of their own (or one meant for programs). */
const PRODUCT_MESSAGES = {
  401: "this page needs the server's token: open the address medfm serve printed",
  403: "the server refused this request from this page",
  413: "that is more than the server takes at once",
  429: "the server is busy: wait a moment and try again",
  500: "something went wrong on the server (its log has the details); try again",
  502: "the server cannot be reached: is medfm serve still running?",
  503: "the server is busy: wait a moment and try again",
  504: "the server took too long to answer; try again",
};

/** An ApiError from a failed answer's status and body text ({"detail"} when JSON). */
export function failureFromText(status, statusText, text) {
  let detail = PRODUCT_MESSAGES[status] || `the server answered ${status} ${statusText}`.trim();
  try {
    const body = JSON.parse(text);
    // a server's own one-line reason reads as a sentence; its generic ones and lists of fields do not
    if (body && typeof body.detail === "string" && !(status >= 500 || status === 401)) detail = body.detail;
  } catch (_) { /* not JSON: keep the message for the status */ }
  return new ApiError(status, detail);
}

/** fetch(), with a network failure said as a user understands it. */
async function send(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "the server cannot be reached: is medfm serve still running?");
  }
}

async function failure(response) {
  return failureFromText(response.status, response.statusText, await response.text().catch(() => ""));
}

/** fetch(`/api${path}`) with JSON in and out; throws ApiError on a non-2xx answer. */
export async function api(path, { method = "GET", body, form, signal, keepalive } = {}) {
  const init = { method, headers: headers(), signal, credentials: "same-origin", keepalive };
  if (form) {
    init.body = form;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = headers({ "Content-Type": "application/json" });
  }
  const response = await send(`/api${path}`, init);
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response;
}

/** A PNG (or other binary) from the API as a Blob. */
export async function apiBlob(path, { signal } = {}) {
  const response = await send(`/api${path}`, { headers: headers(), signal, credentials: "same-origin" });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

const RAW_TYPES = { int16: Int16Array, uint16: Uint16Array, float32: Float32Array };

/** A raw plane (GET /api/images/{id}/raw): {width, height, values} with values in the image's units. */
export async function apiRaw(path, { signal } = {}) {
  const response = await send(`/api${path}`, { headers: headers(), signal, credentials: "same-origin" });
  if (!response.ok) throw await failure(response);
  const [height, width] = (response.headers.get("X-Medfm-Shape") || "").split(",").map(Number);
  const Type = RAW_TYPES[response.headers.get("X-Medfm-Dtype")];
  if (!Type || !(width > 0 && height > 0)) throw new ApiError(500, "the server sent a plane this page cannot read");
  const values = new Type(await response.arrayBuffer()); // little-endian, as every browser's typed arrays are
  if (values.length !== width * height) throw new ApiError(500, "the server sent an incomplete plane");
  return { width, height, values };
}

/** A URL usable in <img src>: the token travels as the cookie the server set when it answered
 *  this page's ?token= (never in image URLs, which end up in logs and the browser's history). */
export function apiUrl(path) {
  return `/api${path}`;
}

/** A query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") q.set(key, String(value));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls GET /api/jobs/{job} until done, failed or cancelled; onProgress(done, total, state) on each poll. */
export async function waitForJob(job, onProgress = () => {}) {
  let delay = 150;
  for (;;) {
    const state = await api(`/jobs/${encodeURIComponent(job)}`);
    onProgress(state.done ?? 0, state.total ?? 0, state.state);
    if (state.state === "done") return state.result;
    if (state.state === "failed") throw new ApiError(500, state.error || "the job failed");
    if (state.state === "cancelled") throw new ApiError(0, "cancelled");
    await sleep(delay);
    delay = Math.min(delay * 1.5, 1000);
  }
}

// ---- status line -------------------------------------------------------------------

let statusTimer = null;

/** Shows one line in the status bar; "info" fades, "warning" and "error" stay until replaced. */
export function setStatus(text, kind = "info") {
  const line = document.querySelector("[data-testid=status-line]");
  if (!line) return;
  line.textContent = text;
  line.dataset.kind = kind;
  clearTimeout(statusTimer);
  if (kind === "info" && text) {
    statusTimer = setTimeout(() => { line.textContent = ""; line.dataset.kind = ""; }, 6000);
  }
}

/** Shows an error (ApiError or other) in the status line, once, without a stack trace. */
export function showError(error, context = "") {
  if (error && error.name === "AbortError") return;
  const message = error instanceof Error ? error.message : String(error);
  setStatus(context ? `${context}: ${message}` : message, "error");
}
