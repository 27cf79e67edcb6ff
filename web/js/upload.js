// Adding files: the file and folder pickers and drag-and-drop of files or folders onto the
// page, sent to the server as a chunked upload (POST /api/uploads/chunked, then PUT chunks of
// the files' bytes one after another) with byte progress, resuming after a lost connection;
// then the ingest job polled.

import { api, authHeaders, failureFromText, waitForJob } from "./api.js";

/** Times a chunk is tried again after a lost connection or a server error before the upload fails. */
const RETRIES = 5;

/** PUTs one chunk with XMLHttpRequest, for progress: onProgress(sentBytes). Resolves {received}. */
function putChunk(path, chunk, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", `/api${path}`);
    for (const [key, value] of Object.entries(authHeaders())) xhr.setRequestHeader(key, value);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.upload.addEventListener("progress", (e) => onProgress(e.loaded));
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try { resolve(JSON.parse(xhr.responseText)); } catch (error) { reject(error); }
      } else {
        reject(failureFromText(xhr.status, xhr.statusText, xhr.responseText));
      }
    });
    xhr.addEventListener("error", () => reject(new Error("the upload was interrupted")));
    xhr.send(chunk);
  });
}

/** The bytes [start, end) of the files laid one after another, as a Blob (slices: nothing is read yet). */
function streamSlice(files, starts, start, end) {
  const parts = [];
  for (let n = 0; n < files.length; n++) {
    const from = Math.max(start, starts[n]);
    const to = Math.min(end, starts[n] + files[n].size);
    if (from < to) parts.push(files[n].slice(from - starts[n], to - starts[n]));
  }
  return new Blob(parts);
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Uploads [File, relative path] pairs as one chunked upload: onProgress(sentBytes, totalBytes).
 * A failed chunk is retried from where the server says it stands. Resolves {job} of the ingest.
 */
async function uploadChunked(pairs, onProgress) {
  const files = pairs.map(([file]) => file);
  // folders are flattened; the path stays in the name so that equal names do not collide
  const declared = pairs.map(([file, path]) => ({ name: path.replaceAll("/", "__"), size: file.size }));
  const { upload, chunk_bytes: chunkBytes } = await api("/uploads/chunked", { method: "POST", body: { files: declared } });
  const starts = [];
  let total = 0;
  for (const file of files) { starts.push(total); total += file.size; }
  let offset = 0;
  let failures = 0;
  onProgress(0, total);
  while (offset < total) {
    const end = Math.min(total, offset + chunkBytes);
    try {
      const at = offset;
      ({ received: offset } = await putChunk(`/uploads/chunked/${upload}?offset=${offset}`,
        streamSlice(files, starts, offset, end), (sent) => onProgress(at + sent, total)));
      failures = 0;
    } catch (error) {
      if ((error.status && error.status < 500 && error.status !== 409 && error.status !== 429) || ++failures > RETRIES) {
        await api(`/uploads/chunked/${upload}`, { method: "DELETE" }).catch(() => {});
        throw error;
      }
      await pause(error.status === 429 ? 1000 : 300 * failures);
      ({ received: offset } = await api(`/uploads/chunked/${upload}`)); // go on from what arrived
    }
    onProgress(offset, total);
  }
  return api(`/uploads/chunked/${upload}/finish`, { method: "POST" });
}

/** Every file under a dropped folder entry, as [File, relative path]. */
async function filesOfEntry(entry, prefix = "") {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    return [[file, prefix + file.name]];
  }
  if (!entry.isDirectory) return [];
  const reader = entry.createReader();
  const children = [];
  for (;;) { // readEntries answers in batches until an empty one
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    children.push(...batch);
  }
  const nested = await Promise.all(children.map((child) => filesOfEntry(child, `${prefix}${entry.name}/`)));
  return nested.flat();
}

/** What was dropped: files, and the files inside dropped folders. */
async function droppedFiles(dataTransfer) {
  const entries = [...(dataTransfer.items || [])]
    .filter((item) => item.kind === "file")
    .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
  if (entries.length && entries.every(Boolean)) {
    return (await Promise.all(entries.map((entry) => filesOfEntry(entry)))).flat();
  }
  return [...dataTransfer.files].map((file) => [file, file.name]);
}

/**
 * Wires the pickers, the drop zone and the progress box; `onIngested(result)` gets the
 * ingest job's result {image_ids, bad}; `onError(error)` any failure.
 */
export function setupUploads({ button, folderButton, input, folderInput, progress, overlay, onIngested, onError }) {
  const bar = progress.querySelector("progress");
  const note = progress.querySelector(".note");

  async function upload(pairs) {
    if (!pairs.length) return;
    progress.hidden = false;
    bar.max = 1;
    bar.value = 0;
    const count = `${pairs.length} file${pairs.length === 1 ? "" : "s"}`;
    note.textContent = `uploading ${count}…`;
    try {
      const { job } = await uploadChunked(pairs, (sent, total) => {
        bar.max = Math.max(total, 1);
        bar.value = sent;
        note.textContent = `uploading ${count}… ${total ? Math.round((100 * sent) / total) : 100} %`;
      });
      bar.removeAttribute("value");
      note.textContent = "reading…";
      const result = (await waitForJob(job, (done, total) => {
        if (total) { bar.max = total; bar.value = done; }
        note.textContent = `reading… ${done}/${total || "?"}`;
      })) || {};
      const added = (result.image_ids || []).length;
      note.textContent = `added ${added} image${added === 1 ? "" : "s"}`;
      await onIngested(result);
    } catch (error) {
      note.textContent = "upload failed";
      onError(error);
    } finally {
      bar.max = 1;
      bar.value = 1;
      setTimeout(() => { progress.hidden = true; }, 2500);
    }
  }

  button.addEventListener("click", () => input.click());
  folderButton.addEventListener("click", () => folderInput.click());
  for (const picker of [input, folderInput]) {
    picker.addEventListener("change", () => {
      upload([...picker.files].map((file) => [file, file.webkitRelativePath || file.name]));
      picker.value = "";
    });
  }

  let depth = 0;
  const hasFiles = (e) => e.dataTransfer && [...(e.dataTransfer.types || [])].includes("Files");
  document.addEventListener("dragenter", (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth += 1;
    overlay.hidden = false;
  });
  document.addEventListener("dragover", (e) => { if (hasFiles(e)) e.preventDefault(); });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (!depth) overlay.hidden = true;
  });
  document.addEventListener("drop", async (e) => {
    e.preventDefault();
    depth = 0;
    overlay.hidden = true;
    if (!e.dataTransfer) return;
    try {
      upload(await droppedFiles(e.dataTransfer));
    } catch (error) {
      onError(error);
    }
  });
}
