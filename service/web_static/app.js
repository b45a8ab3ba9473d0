// The sketch2color page: no framework, no build step. State lives in `state`; every edit calls
// schedule(), which debounces and sends one /api/colorize request, cancelling the one before.

const $ = (id) => document.getElementById(id);
const state = { sketch: null, colorHint: null, hints: [], selected: null, variants: {}, nextId: 1 };
const DEBOUNCE_MS = 250;
const STEP = 0.01; // arrow-key move, as a fraction of the sketch (Shift: 5x)
let timer = null;
let inFlight = null;

// ------------------------------------------------------------------------------ variants

async function loadVariants() {
  try {
    const answer = await fetchJson("/api/variants");
    const select = $("variant");
    for (const v of answer.variants || []) {
      state.variants[v.name] = v;
      const option = new Option(`${v.name}${v.ready ? "" : " (not ready)"}`, v.name);
      option.title = v.description || "";
      select.add(option);
    }
    select.value = answer.default_variant || select.options[0]?.value || "";
    onVariant();
  } catch (e) {
    showError(e.message);
  }
}

function accepts(kind) {
  const v = state.variants[$("variant").value];
  return Boolean(v && (v.accepted_hints || []).includes(kind));
}

function onVariant() {
  const points = accepts("HINT_KIND_POINTS");
  $("canvas").classList.toggle("unused", !points);
  $("color-hint-label").hidden = !accepts("HINT_KIND_COLOR_IMAGE");
  updateCount();
  schedule();
}

// ------------------------------------------------------------------------------ images

function readAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function setSketch(file) {
  if (!file) return;
  state.sketch = await readAsBase64(file);
  // A new drawing starts clean: the last one's hints and colouring belong to it.
  state.hints = [];
  state.selected = null;
  renderHints();
  clearResult();
  showMessage("");
  const img = $("sketch");
  // The page shows what it can; whether the bytes are a usable sketch is the gateway's answer.
  img.src = `data:${file.type || "application/octet-stream"};base64,${state.sketch}`;
  img.hidden = false;
  $("drop-note").hidden = true;
  schedule(0);
}

// ------------------------------------------------------------------------------ hints

function addHint(x, y) {
  const hint = { id: state.nextId++, x: clamp(x), y: clamp(y), color: $("color").value };
  state.hints.push(hint);
  renderHints();
  select(hint.id, true);
  schedule();
}

function removeHint(id) {
  state.hints = state.hints.filter((h) => h.id !== id);
  if (state.selected === id) state.selected = null;
  renderHints();
  $("canvas").focus();
  schedule();
}

function select(id, focus) {
  state.selected = id;
  for (const dot of document.querySelectorAll(".hint")) {
    const mine = Number(dot.dataset.id) === id;
    dot.classList.toggle("selected", mine);
    if (mine && focus) dot.focus();
  }
}

function renderHints() {
  for (const dot of document.querySelectorAll(".hint")) dot.remove();
  for (const h of state.hints) {
    const dot = document.createElement("button");
    dot.type = "button";
    dot.className = "hint";
    dot.dataset.id = h.id;
    dot.style.left = `${100 * h.x}%`;
    dot.style.top = `${100 * h.y}%`;
    dot.style.background = h.color;
    dot.setAttribute("aria-label", `hint ${h.color} at ${Math.round(100 * h.x)}%, ${Math.round(100 * h.y)}%`);
    dot.addEventListener("pointerdown", (e) => startDrag(e, h));
    dot.addEventListener("dblclick", (e) => { e.stopPropagation(); removeHint(h.id); });
    dot.addEventListener("contextmenu", (e) => { e.preventDefault(); removeHint(h.id); });
    dot.addEventListener("keydown", (e) => hintKey(e, h));
    dot.addEventListener("focus", () => select(h.id, false));
    $("stage").append(dot);
  }
  select(state.selected, false);
  updateCount();
}

function updateCount() {
  const n = state.hints.length;
  let text = n ? `${n} hint${n > 1 ? "s" : ""}` : "no hints";
  if (n && !accepts("HINT_KIND_POINTS")) text += ` (not used by ${$("variant").value})`;
  $("hint-count").textContent = text;
}

function position(e) {
  const box = $("sketch").getBoundingClientRect();
  return [(e.clientX - box.left) / box.width, (e.clientY - box.top) / box.height];
}

function startDrag(e, hint) {
  e.preventDefault();
  e.stopPropagation();
  const dot = e.currentTarget;
  dot.setPointerCapture(e.pointerId);
  select(hint.id, true);
  let moved = false;
  const move = (ev) => {
    [hint.x, hint.y] = position(ev).map(clamp);
    dot.style.left = `${100 * hint.x}%`;
    dot.style.top = `${100 * hint.y}%`;
    moved = true;
  };
  const up = () => {
    dot.removeEventListener("pointermove", move);
    dot.removeEventListener("pointerup", up);
    dot.removeEventListener("pointercancel", up);
    if (moved) renderHints(), schedule();
  };
  dot.addEventListener("pointermove", move);
  dot.addEventListener("pointerup", up);
  dot.addEventListener("pointercancel", up);
}

function hintKey(e, hint) {
  const step = e.shiftKey ? 5 * STEP : STEP;
  const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
  if (e.key === "Delete" || e.key === "Backspace") {
    e.preventDefault();
    removeHint(hint.id);
  } else if (moves[e.key]) {
    e.preventDefault();
    hint.x = clamp(hint.x + moves[e.key][0]);
    hint.y = clamp(hint.y + moves[e.key][1]);
    renderHints();
    select(hint.id, true);
    schedule();
  }
}

const clamp = (v) => Math.min(1, Math.max(0, v));

// ------------------------------------------------------------------------------ colouring

function schedule(delay = DEBOUNCE_MS) {
  clearTimeout(timer);
  if (state.sketch) timer = setTimeout(colorize, delay);
}

async function colorize() {
  inFlight?.abort(); // an answer to an older edit is of no use any more
  const variant = $("variant").value;
  if (accepts("HINT_KIND_COLOR_IMAGE") && !accepts("HINT_KIND_POINTS") && !state.colorHint) {
    clearResult(); // this variant colours from a rough colour image: nothing to send until there is one
    showMessage(`${variant} colours from a rough colour image of the sketch: choose one under "Colour-hint image".`);
    return;
  }
  const controller = new AbortController();
  inFlight = controller;
  const body = {
    sketch: state.sketch,
    variant,
    hints: accepts("HINT_KIND_POINTS") ? state.hints.map(({ x, y, color }) => ({ x, y, color })) : [],
    color_hint: accepts("HINT_KIND_COLOR_IMAGE") ? state.colorHint || "" : "",
  };
  $("busy").hidden = false;
  try {
    const answer = await fetchJson("/api/colorize", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    const url = `data:${answer.mime_type};base64,${answer.image}`;
    $("result").src = url;
    $("result").hidden = false;
    const link = $("download");
    link.href = url;
    link.setAttribute("aria-disabled", "false");
    const t = answer.timings || {};
    showMessage(`${answer.variant} v${answer.model_version} · ${answer.width}×${answer.height} · server ` +
      `${ms(t.total_ms)} (decode ${ms(t.decode_ms)}, model ${ms(t.triton_ms)}, encode ${ms(t.encode_ms)}, ` +
      `page server ${ms(t.web_ms)})`);
  } catch (e) {
    if (e.name !== "AbortError") {
      clearResult(); // the picture on screen is not the answer to what is asked now
      showError(e.message);
    }
  } finally {
    if (inFlight === controller) {
      inFlight = null;
      $("busy").hidden = true;
    }
  }
}

async function fetchJson(url, options) {
  const response = await fetch(url, options);
  let answer;
  try {
    answer = await response.json();
  } catch {
    throw new Error(`the server answered ${response.status} ${response.statusText}`);
  }
  if (!response.ok) throw new Error(answer.error?.message || `the server answered ${response.status}`);
  return answer;
}

function clearResult() {
  $("result").hidden = true;
  $("result").removeAttribute("src");
  $("download").removeAttribute("href");
  $("download").setAttribute("aria-disabled", "true");
}

const ms = (v) => `${(v || 0).toFixed(1)} ms`;

function showMessage(text) {
  $("message").textContent = text;
  $("message").classList.remove("error");
}

function showError(text) {
  $("message").textContent = text;
  $("message").classList.add("error");
}

// ------------------------------------------------------------------------------ wiring

const canvas = $("canvas");
canvas.addEventListener("pointerdown", (e) => {
  if (!state.sketch || e.target !== $("sketch")) return;
  e.preventDefault();
  addHint(...position(e));
});
canvas.addEventListener("keydown", (e) => {
  if (e.target === canvas && state.sketch && (e.key === "Enter" || e.key === " ")) {
    e.preventDefault();
    addHint(0.5, 0.5); // then the arrow keys move it
  }
});
canvas.addEventListener("dragover", (e) => { e.preventDefault(); canvas.classList.add("dragover"); });
canvas.addEventListener("dragleave", () => canvas.classList.remove("dragover"));
canvas.addEventListener("drop", (e) => {
  e.preventDefault();
  canvas.classList.remove("dragover");
  setSketch(e.dataTransfer.files[0]);
});
$("sketch-file").addEventListener("change", (e) => setSketch(e.target.files[0]));
$("color-hint-file").addEventListener("change", async (e) => {
  state.colorHint = e.target.files[0] ? await readAsBase64(e.target.files[0]) : null;
  schedule(0);
});
$("variant").addEventListener("change", onVariant);
$("clear").addEventListener("click", () => { state.hints = []; state.selected = null; renderHints(); schedule(); });

loadVariants();
