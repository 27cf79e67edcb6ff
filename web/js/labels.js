// Structures being drawn: label value -> {name, color, code}, the active one, and the panel
// that lists them (select, rename, recolour, name from the coded list, add). The palette and
// the coded names (SNOMED CT) come from the server (GET /api/terminology): the same ones its
// label maps and DICOM SEGs carry.

/** Colours of label values 1, 2, ... (filled from the server at start). */
export const PALETTE = [];
/** Coded structure names: [{code, scheme, meaning, category}] (filled from the server at start). */
export const TERMS = [];

/** Takes the server's {palette, terms}; also fills the page's list of coded names. */
export function setTerminology({ palette = [], terms = [] }) {
  PALETTE.splice(0, PALETTE.length, ...palette);
  TERMS.splice(0, TERMS.length, ...terms);
  let list = document.getElementById("structure-terms");
  if (!list) {
    list = document.createElement("datalist");
    list.id = "structure-terms";
    list.setAttribute("data-testid", "structure-terms");
    document.body.append(list);
  }
  list.replaceChildren(...terms.map((term) => Object.assign(document.createElement("option"), { value: term.meaning, label: `SNOMED CT ${term.code}` })));
}

/** The coded name whose meaning is `name` (ignoring case), else null. */
export function termNamed(name) {
  const wanted = String(name || "").trim().toLowerCase();
  return TERMS.find((term) => term.meaning.toLowerCase() === wanted) || null;
}

/** The palette's colour of label `value`. */
export function defaultColor(value) {
  return PALETTE.length ? PALETTE[(value - 1 + PALETTE.length) % PALETTE.length] : "#ffffff";
}

/** "#rrggbb" from "#rgb", "#rrggbb", [r, g, b] or "rgb(r, g, b)"; a palette colour otherwise. */
export function normaliseColor(color, value = 1) {
  if (Array.isArray(color) && color.length >= 3) {
    return "#" + color.slice(0, 3).map((c) => Math.max(0, Math.min(255, Math.round(c))).toString(16).padStart(2, "0")).join("");
  }
  if (typeof color === "string") {
    const s = color.trim();
    if (/^#[0-9a-f]{6}$/i.test(s)) return s.toLowerCase();
    if (/^#[0-9a-f]{3}$/i.test(s)) return ("#" + [...s.slice(1)].map((c) => c + c).join("")).toLowerCase();
    const m = s.match(/^rgba?\((\d+)\D+(\d+)\D+(\d+)/i);
    if (m) return normaliseColor([+m[1], +m[2], +m[3]]);
  }
  return defaultColor(value);
}

/** [r, g, b] of "#rrggbb". */
export function rgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

export class LabelSet {
  constructor() {
    this.labels = new Map(); // value -> {name, color, known}
    this.hidden = new Set(); // structures not drawn
    this.locked = new Set(); // structures that prompts and the brush leave as they are
    this.active = 1;
    this.listeners = [];
  }

  /** Replaces the set with the server's {value: {name, color, code?}}; keeps one label at least. */
  reset(serverLabels = {}) {
    this.labels.clear();
    this.hidden.clear();
    this.locked.clear();
    this.merge(serverLabels);
    this.active = 1;
    if (this.labels.size === 0) this.add();
    if (!this.labels.has(this.active)) this.active = Math.min(...this.labels.keys());
    this.changed();
  }

  /** Adds or updates labels from a server answer, marking them known to the server. */
  merge(serverLabels = {}) {
    let changed = false;
    for (const [key, info] of Object.entries(serverLabels || {})) {
      const value = Number(key);
      if (!Number.isInteger(value) || value <= 0) continue;
      const name = (info && info.name) || `structure ${value}`;
      const color = normaliseColor(info && info.color, value);
      const code = (info && info.code) || null;
      const old = this.labels.get(value);
      if (old && old.name === name && old.color === color && old.code?.code === code?.code && old.known) continue;
      this.labels.set(value, { name, color, code, known: true });
      changed = true;
    }
    if (changed) this.changed(); // re-rendering only on a change keeps focus in a name being typed
  }

  /** A new label with the next free value; becomes the active one. */
  add(name) {
    let value = 1;
    while (this.labels.has(value)) value += 1;
    if (value > 255) throw new Error("at most 255 labels");
    this.labels.set(value, { name: name || `structure ${value}`, color: defaultColor(value), code: null, known: false });
    this.active = value;
    this.changed();
    return value;
  }

  get(value) { return this.labels.get(value); }

  color(value) {
    const info = this.labels.get(value);
    return info ? info.color : defaultColor(value);
  }

  /** Makes `value` the label new prompts draw; no re-render (the panel marks it itself). */
  select(value) {
    if (this.labels.has(value)) this.active = value;
  }

  /** Shows or hides structure `value`. */
  toggleHidden(value) {
    if (!this.hidden.delete(value)) this.hidden.add(value);
    this.changed();
  }

  /** Locks or unlocks structure `value`. */
  toggleLocked(value) {
    if (!this.locked.delete(value)) this.locked.add(value);
    this.changed();
  }

  onChange(fn) { this.listeners.push(fn); }

  changed() { for (const fn of this.listeners) fn(this); }
}

/**
 * Renders the labels panel into `list` and wires it: click selects, the name field renames (a
 * name from the coded list takes its code), the swatch recolours; `onEdit(value, {name, color, code})`
 * is called after an edit (`code`: a term, or null for a free-text name).
 */
export function renderLabelList(list, set, onEdit) {
  list.replaceChildren();
  for (const [value, info] of [...set.labels.entries()].sort((a, b) => a[0] - b[0])) {
    const item = document.createElement("li");
    item.className = "label-item" + (value === set.active ? " active" : "");
    item.setAttribute("data-testid", "label-item");
    item.dataset.value = String(value);
    item.title = "Click to draw this structure";

    const swatch = document.createElement("input");
    swatch.type = "color";
    swatch.value = info.color;
    swatch.title = "Colour";
    swatch.setAttribute("data-testid", "label-color");
    swatch.addEventListener("change", () => onEdit(value, { name: info.name, color: swatch.value, code: info.code }));

    const name = document.createElement("input");
    name.type = "text";
    name.value = info.name;
    name.title = "Name of the structure (edit to rename; choose from the list for a SNOMED CT coded name)";
    name.setAttribute("list", "structure-terms");
    name.setAttribute("data-testid", "label-name");
    name.setAttribute("aria-label", `name of label ${value}`);
    name.addEventListener("change", () => {
      const text = name.value.trim();
      const term = termNamed(text);
      if (text) onEdit(value, { name: text, color: info.color, code: term });
      else name.value = info.name;
    });

    const code = document.createElement("span");
    code.className = "label-code";
    code.setAttribute("data-testid", "label-code");
    code.textContent = info.code ? `SCT ${info.code.code}` : "";
    code.title = info.code ? `SNOMED CT ${info.code.code} ${info.code.meaning} (${info.code.category.meaning})` : "";

    const number = document.createElement("span");
    number.className = "label-value";
    number.textContent = String(value);

    const toggle = (testid, on, [onText, offText], title, action) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "icon toggle" + (on ? " active" : "");
      button.textContent = on ? onText : offText;
      button.title = title;
      button.setAttribute("data-testid", testid);
      button.setAttribute("aria-pressed", String(on));
      button.addEventListener("click", (event) => { event.stopPropagation(); action(value); });
      return button;
    };
    const hidden = toggle("label-hide", set.hidden.has(value), ["◌", "◉"], "Show or hide this structure", (v) => set.toggleHidden(v));
    const locked = toggle("label-lock", set.locked.has(value), ["Locked", "Lock"], "Lock: prompts and the brush leave this structure as it is", (v) => set.toggleLocked(v));
    item.append(swatch, name, code, number, hidden, locked);
    const choose = () => {
      set.select(value);
      for (const li of list.children) li.classList.toggle("active", li.dataset.value === String(value));
    };
    item.addEventListener("click", choose);
    name.addEventListener("focus", choose);
    list.append(item);
  }
}
