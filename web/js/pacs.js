// The PACS panel, shown when the server was started with --pacs: search studies (never patient
// data), expand one to its series, retrieve a study or a series into the catalog (a job,
// polled), and send a saved DICOM SEG back.

import { api, query, setStatus, showError, waitForJob } from "./api.js";
import { el } from "./panels.js";

const OPEN_KEY = "medfm.pacs.open";

/** "20260101" as "2026-01-01"; anything else as it is. */
function showDate(value) {
  const text = String(value || "");
  return /^\d{8}$/.test(text) ? `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6)}` : text;
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

function counts(item, seriesCount) {
  const parts = [];
  if (seriesCount !== undefined && seriesCount !== null) parts.push(plural(Number(seriesCount), "series", "series"));
  if (item.num_instances !== undefined && item.num_instances !== null) parts.push(plural(Number(item.num_instances), "image"));
  return parts.join(" · ");
}

/** Sends a saved DICOM SEG version to the PACS: {"sop_instance_uid", "series_uid"}. */
export function sendToPacs(imageId, name, version) {
  return api("/pacs/push", { method: "POST", body: { image_id: Number(imageId), name, version: Number(version) } });
}

export class Pacs {
  /** `onPulled(result)` gets a finished pull job's result {image_ids}. */
  constructor(root, onPulled) {
    this.root = root;
    this.onPulled = onPulled;
    this.details = root.querySelector("[data-testid=pacs-details]");
    this.modality = root.querySelector("[data-testid=pacs-modality]");
    this.date = root.querySelector("[data-testid=pacs-date]");
    this.searchButton = root.querySelector("[data-testid=pacs-search]");
    this.note = root.querySelector("[data-testid=pacs-note]");
    this.list = root.querySelector("[data-testid=pacs-study-list]");
    this.progress = root.querySelector("[data-testid=pacs-progress]");
    this.available = false;
    this.pulling = false;
    this.seq = 0;
    try {
      if (window.localStorage.getItem(OPEN_KEY) === "0") this.details.open = false;
    } catch (_) { /* storage off: start open */ }
    this.details.addEventListener("toggle", () => {
      try { window.localStorage.setItem(OPEN_KEY, this.details.open ? "1" : "0"); } catch (_) { /* not kept */ }
    });
    root.querySelector("[data-testid=pacs-search-form]").addEventListener("submit", (e) => { e.preventDefault(); this.search(); });
  }

  /** Shows or hides the panel (from /api/health's "pacs"). */
  setAvailable(on) {
    this.available = Boolean(on);
    this.root.hidden = !this.available;
  }

  async search() {
    const seq = ++this.seq;
    const params = { modality: this.modality.value, study_date: this.date.value.replaceAll("-", ""), limit: 50 };
    this.searchButton.disabled = true;
    this.note.textContent = "Searching the PACS…";
    try {
      const { studies } = await api(`/pacs/studies${query(params)}`);
      if (seq !== this.seq) return;
      this.render(studies);
    } catch (error) {
      if (seq !== this.seq) return;
      this.list.replaceChildren();
      this.note.textContent = "PACS search failed.";
      showError(error, "PACS");
    } finally {
      if (seq === this.seq) this.searchButton.disabled = false;
    }
  }

  render(studies) {
    this.note.textContent = studies.length
      ? `${plural(studies.length, "study", "studies")} found: ▸ shows the series, Retrieve opens it here.`
      : "No studies match. Try another modality or date.";
    this.list.replaceChildren(...studies.map((study) => this.studyItem(study)));
  }

  retrieveButton(testid, title, body, what) {
    const button = el("button", { type: "button", class: "pacs-retrieve", testid, textContent: "Retrieve", title, disabled: this.pulling });
    button.addEventListener("click", (e) => { e.stopPropagation(); this.retrieve(body, what); });
    return button;
  }

  studyItem(study) {
    const modalities = (study.modalities || []).join(", ");
    const toggle = el("button", {
      type: "button", class: "pacs-toggle", testid: "pacs-expand", textContent: "▸", title: "Show the series of this study",
    });
    toggle.setAttribute("aria-expanded", "false");
    const series = el("ul", { class: "pacs-series-list", testid: "pacs-series-list", hidden: true });
    const head = el("div", { class: "pacs-head" },
      toggle,
      el("div", { class: "meta" },
        el("div", { class: "title", textContent: [showDate(study.study_date) || "no date", modalities].filter(Boolean).join(" · ") }),
        el("div", { class: "sub", textContent: study.description || "(no description)" }),
        el("div", { class: "sub", textContent: counts(study, study.num_series) })),
      this.retrieveButton("pacs-retrieve-study", "Copy the whole study into the catalog and open it",
        { study_uid: study.study_uid }, "study"));
    const item = el("li", { class: "pacs-study", testid: "pacs-study", dataset: { studyUid: study.study_uid } }, head, series);
    let loaded = false;
    const flip = async () => {
      const open = series.hidden;
      series.hidden = !open;
      toggle.textContent = open ? "▾" : "▸";
      toggle.setAttribute("aria-expanded", String(open));
      if (open && !loaded) {
        loaded = true;
        series.replaceChildren(el("li", { class: "empty", textContent: "Loading series…" }));
        try {
          const answer = await api(`/pacs/studies/${encodeURIComponent(study.study_uid)}/series`);
          series.replaceChildren(...(answer.series.length
            ? answer.series.map((s) => this.seriesItem(s, study.study_uid))
            : [el("li", { class: "empty", textContent: "No series." })]));
        } catch (error) {
          loaded = false;
          series.replaceChildren(el("li", { class: "empty", textContent: "Could not list the series." }));
          showError(error, "PACS");
        }
      }
    };
    head.addEventListener("click", flip);
    return item;
  }

  seriesItem(series, studyUid) {
    const number = series.series_number !== null && series.series_number !== undefined ? `series ${series.series_number}` : "";
    return el("li", { class: "pacs-series", testid: "pacs-series", dataset: { seriesUid: series.series_uid } },
      el("div", { class: "meta" },
        el("div", { class: "title", textContent: [series.modality, series.description].filter(Boolean).join(" · ") || "series" }),
        el("div", { class: "sub", textContent: [number, series.body_part, counts(series)].filter(Boolean).join(" · ") })),
      this.retrieveButton("pacs-retrieve-series", "Copy this series into the catalog and open it",
        { study_uid: studyUid, series_uid: series.series_uid }, "series"));
  }

  setPulling(on) {
    this.pulling = on;
    for (const button of this.root.querySelectorAll(".pacs-retrieve")) button.disabled = on;
  }

  async retrieve(body, what) {
    if (this.pulling) return;
    this.setPulling(true);
    const bar = this.progress.querySelector("progress");
    const note = this.progress.querySelector(".note");
    this.progress.hidden = false;
    bar.max = 1;
    bar.removeAttribute("value"); // indeterminate until the job says more
    note.textContent = `retrieving the ${what}…`;
    try {
      const { job } = await api("/pacs/pull", { method: "POST", body });
      const result = (await waitForJob(job, (done, total, state) => {
        if (total && done) { bar.max = total; bar.value = done; }
        note.textContent = state === "queued" ? `waiting to retrieve the ${what}…` : `retrieving the ${what}… ${done}/${total || "?"}`;
      })) || {};
      const ids = result.image_ids || [];
      bar.max = 1;
      bar.value = 1;
      note.textContent = ids.length ? `retrieved ${plural(ids.length, "image")}` : "retrieved: nothing to open";
      setStatus(ids.length ? `retrieved the ${what} from the PACS` : `retrieved the ${what}, but it holds no image the workbench can open`);
      await this.onPulled(result);
    } catch (error) {
      note.textContent = "retrieve failed";
      showError(error, "PACS retrieve");
    } finally {
      this.setPulling(false);
      setTimeout(() => { if (!this.pulling) this.progress.hidden = true; }, 2500);
    }
  }
}
