// Adding files: the file and folder pickers and drag-and-drop of files or folders onto the
// page, sent to POST /api/uploads with byte progress, then the ingest job polled.

import { authHeaders, failureFromText, waitForJob } from "./api.js";

/** POSTs a FormData with XMLHttpRequest, for upload progress: onProgress(sentBytes, totalBytes). */
function postForm(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/api${path}`);
    for (const [key, value] of Object.entries(authHeaders())) xhr.setRequestHeader(key, value);
    xhr.upload.addEventListener("progress", (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try { resolve(JSON.parse(xhr.responseText)); } catch (error) { reject(error); }
      } else {
        reject(failureFromText(xhr.status, xhr.statusText, xhr.responseText));
      }
    });
    xhr.addEventListener("error", () => reject(new Error("the upload was interrupted")));
    xhr.send(form);
  });
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
      const form = new FormData();
      // folders are flattened; the path stays in the name so that equal names do not collide
      for (const [file, path] of pairs) form.append("files", file, path.replaceAll("/", "__"));
      const { job } = await postForm("/uploads", form, (sent, total) => {
        bar.max = total;
        bar.value = sent;
        note.textContent = `uploading ${count}… ${Math.round((100 * sent) / total)} %`;
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
