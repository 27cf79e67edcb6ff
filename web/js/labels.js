// Structures being drawn: label value -> {name, color}, the active one, and the panel
// that lists them (select, rename, recolour, add).

export const PALETTE = [
  "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4",
  "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff", "#9a6324",
];

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
  return PALETTE[(value - 1 + PALETTE.length) % PALETTE.length];
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

  /** Replaces the set with the server's {value: {name, color}}; keeps one label at least. */
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
      const old = this.labels.get(value);
      if (old && old.name === name && old.color === color && old.known) continue;
      this.labels.set(value, { name, color, known: true });
      changed = true;
    }
    if (changed) this.changed(); // re-rendering only on a change keeps focus in a name being typed
  }

  /** A new label with the next free value; becomes the active one. */
  add(name) {
    let value = 1;
    while (this.labels.has(value)) value += 1;
    if (value > 255) throw new Error("at most 255 labels");
    this.labels.set(value, { name: name || `structure ${value}`, color: PALETTE[(value - 1) % PALETTE.length], known: false });
    this.active = value;
    this.changed();
    return value;
  }

  get(value) { return this.labels.get(value); }

  color(value) {
    const info = this.labels.get(value);
    return info ? info.color : PALETTE[(value - 1 + PALETTE.length) % PALETTE.length];
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
 * Renders the labels panel into `list` and wires it: click selects, the name field renames,
 * the swatch recolours; `onEdit(value, {name, color})` is called after an edit.
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
    swatch.addEventListener("change", () => onEdit(value, { name: info.name, color: swatch.value }));

    const name = document.createElement("input");
    name.type = "text";
    name.value = info.name;
    name.title = "Name of the structure (edit to rename)";
    name.setAttribute("data-testid", "label-name");
    name.setAttribute("aria-label", `name of label ${value}`);
    name.addEventListener("change", () => {
      const text = name.value.trim();
      if (text) onEdit(value, { name: text, color: info.color });
      else name.value = info.name;
    });

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
    item.append(swatch, name, number, hidden, locked);
    const choose = () => {
      set.select(value);
      for (const li of list.children) li.classList.toggle("active", li.dataset.value === String(value));
    };
    item.addEventListener("click", choose);
    name.addEventListener("focus", choose);
    list.append(item);
  }
}
