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

/** An ApiError from a failed answer's status and body text ({"detail"} when JSON). */
export function failureFromText(status, statusText, text) {
  let detail = `${status} ${statusText}`;
  try {
    const body = JSON.parse(text);
    if (body && body.detail !== undefined) {
      detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
  } catch (_) { /* not JSON: keep the status line */ }
  return new ApiError(status, detail);
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
  const response = await fetch(`/api${path}`, init);
  if (!response.ok) throw await failure(response);
  const type = response.headers.get("Content-Type") || "";
  return type.includes("json") ? response.json() : response;
}

/** A PNG (or other binary) from the API as a Blob. */
export async function apiBlob(path, { signal } = {}) {
  const response = await fetch(`/api${path}`, { headers: headers(), signal, credentials: "same-origin" });
  if (!response.ok) throw await failure(response);
  return response.blob();
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

/** Polls GET /api/jobs/{job} until done or failed; onProgress(done, total, state) on each poll. */
export async function waitForJob(job, onProgress = () => {}) {
  let delay = 150;
  for (;;) {
    const state = await api(`/jobs/${encodeURIComponent(job)}`);
    onProgress(state.done ?? 0, state.total ?? 0, state.state);
    if (state.state === "done") return state.result;
    if (state.state === "failed") throw new ApiError(500, state.error || "the job failed");
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
