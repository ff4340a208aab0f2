// neurogate explorer: circuits, live steering and study runs. Plain ES module, no build step, no network
// beyond this server. Every text from the server (replies, prompts, labels) goes into the page as text
// nodes, never as HTML.
import { barChart, curveChart, scatterChart, scoreScale, tickText } from "./charts.js";
import { $, h } from "./dom.js";
import { neuronAction, replyAction } from "./attribute.js";

async function api(path) {
  const res = await fetch(path, { headers: { Accept: "application/json" } });
  const data = await res.json();
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

/** A number in ``digits`` significant digits; exponent form below 0.001 so small scores stay short. */
const fmt = (x, digits = 3) => {
  if (x === null || x === undefined) return "–";
  const v = Number(x);
  return v !== 0 && Math.abs(v) < 1e-3 ? v.toExponential(digits - 1) : v.toPrecision(digits);
};
const pct = (r) => (r ? `${Math.round(100 * r.value)}%` : "–");
const ci = (r) => (r ? `[${Math.round(100 * r.low)}–${Math.round(100 * r.high)}]` : "");
const scaleLabel = (symbol, value) => `${symbol}=${Number(value)}`;

function showError(where, err) {
  where.replaceChildren(h("p", { class: "error" }, String(err.message || err)));
}

// ---------------------------------------------------------------------------------------------- tabs

const TABS = ["circuits", "steer", "runs", "audit"];  // audit: its page is audit.js
function selectTab(name, focus = false) {
  for (const t of TABS) {
    const on = t === name;
    $(`tab-${t}`).setAttribute("aria-selected", String(on));
    $(`tab-${t}`).tabIndex = on ? 0 : -1;
    $(`view-${t}`).hidden = !on;
  }
  if (focus) $(`tab-${name}`).focus();
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}
function setupTabs() {
  TABS.forEach((t, i) => {
    const tab = $(`tab-${t}`);
    tab.addEventListener("click", () => selectTab(t));
    tab.addEventListener("keydown", (e) => {
      const step = e.key === "ArrowRight" ? 1 : e.key === "ArrowLeft" ? -1 : 0;
      if (step) selectTab(TABS[(i + step + TABS.length) % TABS.length], true);
    });
  });
  const start = location.hash.slice(1);
  selectTab(TABS.includes(start) ? start : "circuits");
}

// ---------------------------------------------------------------------------------------------- status

const state = { status: null, circuits: [], methods: {} };

async function pollStatus() {
  try {
    state.status = await api("/api/status");
  } catch (err) {
    $("model-status").textContent = `server unreachable (${err.message})`;
    return setTimeout(pollStatus, 2000);
  }
  const live = state.status.live;
  const el = $("model-status");
  el.dataset.state = live.state;
  const model = live.model || "no model";
  el.textContent =
    live.state === "ready" ? `${model} · ready (loaded in ${Number(live.load_seconds).toFixed(1)} s)`
    : live.state === "loading" ? `${model} · loading…`
    : live.state === "failed" ? `${model} · failed: ${live.error}`
    : "live steering off (start with --model)";
  $("run").disabled = live.state !== "ready";
  if (live.state === "loading") setTimeout(pollStatus, 500);
}

// ---------------------------------------------------------------------------------------------- circuits

const circuitView = { data: null, sortKey: "score", sortDir: -1, selected: null, overlay: null, width: 0 };

function fillCircuitSelects() {
  const options = (withNone) => [
    ...(withNone ? [h("option", { value: "" }, "(none)")] : []),
    ...state.circuits.map((c) =>
      h("option", { value: c.id, disabled: c.error ? true : null },
        c.error ? `${c.name} (unreadable)` : `${c.name} · ${c.n_neurons} neurons · ${c.model}`)),
  ];
  $("circuit-a").replaceChildren(...options(false));
  $("circuit-b").replaceChildren(...options(true));
  $("steer-circuit").replaceChildren(...options(false));
  if (!state.circuits.length) {
    $("circuit-summary").textContent = "No circuits: start with --circuit FILE or --runs DIR.";
  }
}

async function loadCircuits() {
  state.circuits = await api("/api/circuits");
  fillCircuitSelects();
  const first = state.circuits.find((c) => !c.error);
  if (first) {
    $("circuit-a").value = first.id;
    $("steer-circuit").value = first.id;
    await showCircuit(first.id);
  }
}

async function showCircuit(id) {
  try {
    circuitView.data = await api(`/api/circuit?id=${encodeURIComponent(id)}`);
  } catch (err) {
    return showError($("circuit-summary"), err);
  }
  circuitView.selected = null;
  await updateOverlay();
  const d = circuitView.data;
  const u = d.universal_skipped.length;
  const skipped = u ? ` ${u} universal neuron${u === 1 ? " was" : "s were"} passed over.` : "";
  $("circuit-summary").textContent =
    `${d.n_neurons} neurons on ${d.spec} (${d.n_layers} layers); ` +
    `${Math.round(100 * d.late_share)}% in the last quarter (${layerRange(d)}).` + skipped;
  renderNeuronTable();
  $("neuron-detail").replaceChildren(h("p", { class: "muted" },
    d.has_profiles ? "Choose a neuron to see its scores and the discovery prompts that drive it."
      : "This circuit file has no per-neuron profiles (made by an older neurogate); scores and means only."));
}

async function updateOverlay() {
  const b = $("circuit-b").value;
  circuitView.overlay = null;
  if (b && circuitView.data) {
    try {
      circuitView.overlay = await api(`/api/overlay?a=${encodeURIComponent(circuitView.data.id)}&b=${encodeURIComponent(b)}`);
    } catch (err) {
      circuitView.overlay = { error: err.message };
    }
  }
  renderCircuitChart();
}

const layerRange = (d) => (d.late_start >= d.n_layers - 1 ? `layer ${d.n_layers - 1}` : `layers ${d.late_start}–${d.n_layers - 1}`);

/** The score panel's note: why scores are clipped or logged, and how to see them otherwise. */
function scoreNote(d, sc) {
  const tops = sc.clipped.map((t) => `layer ${t.layer} reaches ${tickText(t.top)}`).join(", ");
  if (sc.mode === "clip") {
    return `Scores are clipped at ${tickText(sc.cap)} so that one layer does not flatten the others: ${tops}. ` +
      "Triangles mark the clipped neurons; choose log or linear to see every score to scale.";
  }
  if (sc.mode === "log") return "Scores on a log scale: equal steps up are equal ratios, so every layer keeps its spread.";
  if (sc.dominant) return "On this linear scale one layer's top score flattens the others; choose clipped or log.";
  return "";
}

function renderCircuitChart() {
  const d = circuitView.data;
  const o = circuitView.overlay;
  const box = $("circuit-chart");
  if (!d) return box.replaceChildren();
  const select = $("score-scale");
  const sc = scoreScale(d, select.value);
  select.querySelector("option[value=log]").disabled = !sc.canLog;
  const width = Math.max(620, box.clientWidth - 14);
  circuitView.width = box.clientWidth;
  const key = (cls, text) => [h("span", { class: `key ${cls}` }), text];
  const legend = h("p", { class: "legend" }, o && !o.error
    ? [key("a", "this circuit"), key("b", "the other circuit"), key("both", "shared neurons")]
    : [key("a", "neurons in the layer")], key("late", `last quarter of the layers (${layerRange(d)})`),
    " · below: each layer's scores (box: quartiles, line: median, dots: neurons)");
  const note = scoreNote(d, sc);
  const children = [barChart(d, o && !o.error ? o : null, { width, scale: select.value }), legend,
    note ? h("p", { class: "legend", id: "score-note", "data-mode": sc.mode }, note) : null];
  if (o && o.error) children.push(h("p", { class: "error" }, o.error));
  else if (o) children.push(h("p", { class: "summary" },
    `Overlap: ${o.shared} shared neurons of ${o.n_a} and ${o.n_b} (Jaccard ${fmt(o.jaccard, 2)}).`));
  box.replaceChildren(...children.filter(Boolean));
}

const NEURON_COLUMNS = [
  ["layer", "layer"], ["index", "index"], ["score", "score"], ["diff", "diff"],
  ["mean_pos", "mean +"], ["mean_neg", "mean −"], ["universal", "universal"],
];

function renderNeuronTable() {
  const d = circuitView.data;
  const rows = [...d.neurons].sort((a, b) => {
    const x = a[circuitView.sortKey], y = b[circuitView.sortKey];
    return (x > y ? 1 : x < y ? -1 : 0) * circuitView.sortDir;
  });
  const head = h("tr", {}, NEURON_COLUMNS.map(([key, label]) => {
    const sorted = circuitView.sortKey === key;
    return h("th", { scope: "col", "aria-sort": sorted ? (circuitView.sortDir > 0 ? "ascending" : "descending") : "none" },
      h("button", { type: "button", class: "sort", onclick: () => {
        circuitView.sortDir = sorted ? -circuitView.sortDir : (key === "layer" || key === "index" ? 1 : -1);
        circuitView.sortKey = key;
        renderNeuronTable();
      } }, label, sorted ? (circuitView.sortDir > 0 ? " ▲" : " ▼") : ""));
  }));
  const body = rows.map((n) => {
    const key = `${n.layer}:${n.index}`;
    const open = () => showNeuron(n.layer, n.index);
    return h("tr", {
      tabindex: 0, class: circuitView.selected === key ? "selected" : null, "data-neuron": key,
      onclick: open, onkeydown: (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } },
    },
    h("td", {}, n.layer), h("td", {}, n.in_expert ? `${n.index} (${n.in_expert})` : n.index),
    h("td", {}, fmt(n.score)), h("td", {}, fmt(n.diff)),
    h("td", {}, fmt(n.mean_pos)), h("td", {}, fmt(n.mean_neg)),
    h("td", {}, n.universal === null ? "not checked" : n.universal ? "yes" : "no"));
  });
  $("neuron-table").replaceChildren(h("thead", {}, head), h("tbody", {}, body));
}

async function showNeuron(layer, index) {
  const box = $("neuron-detail");
  circuitView.selected = `${layer}:${index}`;
  for (const tr of document.querySelectorAll("#neuron-table tr[data-neuron]")) {
    tr.classList.toggle("selected", tr.dataset.neuron === circuitView.selected);
  }
  let n;
  try {
    n = await api(`/api/neuron?id=${encodeURIComponent(circuitView.data.id)}&layer=${layer}&index=${index}`);
  } catch (err) {
    return showError(box, err);
  }
  const p = n.profile;
  const facts = [
    ["score", fmt(n.score)], ["mean difference", fmt(n.diff)],
    ["mean on positive prompts", fmt(n.mean_pos) + (p ? ` (sd ${fmt(p.std_pos)})` : "")],
    ["mean on negative prompts", fmt(n.mean_neg) + (p ? ` (sd ${fmt(p.std_neg)})` : "")],
    ["universal", n.universal === null ? "not checked (filter off or no profile)" : n.universal ? "yes" : "no"],
  ];
  const prompts = (title, items) => [
    h("h3", {}, title),
    items.length ? h("ol", { class: "prompts" }, items.map((r) => h("li", {},
      h("span", { class: `badge ${r.side}` }, r.side === "positive" ? "+" : "−"), " ",
      h("span", { class: "value" }, fmt(r.value)), " ",
      h("span", { class: "prompt-text" }, r.text ?? `(prompt ${r.index})`))))
      : h("p", { class: "muted" }, "none stored"),
  ];
  box.replaceChildren(
    h("h2", {}, n.label ?? `L${n.layer} #${n.index}`, h("span", { class: "muted" }, ` · rank ${n.rank} of ${n.of}`)),
    h("dl", {}, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])),
    ...(p ? [...prompts("Activates it most", p.most), ...prompts("Activates it least", p.least)]
      : [h("p", { class: "muted" }, "No profile stored with this circuit: rerun discover to record one.")]),
    neuronAction(circuitView.data.id, n.layer, n.index, $("prompt").value.trim()),
  );
}

// ---------------------------------------------------------------------------------------------- steering

const steerView = { controller: null, inflight: null, ran: false, maxTokens: 64, progress: {} };
const VALUE_LIMIT = 10; // the server's bound on m and s

function methodInfo() {
  return state.methods[$("method").value];
}

function setupMethods() {
  const methods = state.status.methods;
  for (const m of methods) state.methods[m.kind] = m;
  $("method").replaceChildren(...methods.map((m) => h("option", { value: m.kind }, `${m.kind} (${m.scale} ${m.symbol})`)));
  $("method").addEventListener("change", () => { configureSlider(true); rerun(); });
  // the slider and the number box show one value: either one sets the other
  $("value").addEventListener("input", () => { $("value-box").value = $("value").value; checkValue(); });
  $("value").addEventListener("change", rerun);
  $("value-box").addEventListener("input", () => { if (checkValue()) $("value").value = $("value-box").value; });
  $("value-box").addEventListener("change", () => { if (checkValue()) rerun(); });
  const live = state.status.live;
  const tokens = $("max-tokens");
  tokens.max = String(live.max_new_tokens_limit || 256);
  tokens.value = String(live.max_new_tokens || 64);
  tokens.addEventListener("input", checkTokens);
  tokens.addEventListener("change", () => { if (checkTokens()) rerun(); });
  configureSlider(true);
  checkTokens();
}

/** The number box's value when it is a number within the server's bounds, else ``null`` (and the box
 * says why). */
function checkValue() {
  const box = $("value-box");
  const v = box.value.trim() === "" ? NaN : Number(box.value);
  const ok = Number.isFinite(v) && Math.abs(v) <= VALUE_LIMIT;
  box.setCustomValidity(ok ? "" : `a number from -${VALUE_LIMIT} to ${VALUE_LIMIT}`);
  box.setAttribute("aria-invalid", String(!ok));
  if (ok) updateValueLabel();
  return ok ? v : null;
}

/** The reply length when it is a whole number from 1 to the server's limit, else ``null``; the help
 * line under it says what the replies will stop at. */
function checkTokens() {
  const box = $("max-tokens");
  const limit = Number(box.max);
  const n = Number(box.value);
  const ok = box.value.trim() !== "" && Number.isInteger(n) && n >= 1 && n <= limit;
  box.setCustomValidity(ok ? "" : `a whole number from 1 to ${limit}`);
  box.setAttribute("aria-invalid", String(!ok));
  $("tokens-help").textContent = ok
    ? `Each reply stops after ${n} tokens (a reply cut there says so); up to ${limit} allowed.`
    : `Reply length: a whole number of tokens from 1 to ${limit}.`;
  return ok ? n : null;
}

function configureSlider(reset) {
  const m = methodInfo();
  const slider = $("value");
  const neuron = m.scale === "multiplier";
  slider.min = "-1";
  slider.max = neuron ? "3" : "2";
  if (reset) slider.value = neuron ? "0" : "1";
  const box = $("value-box");
  box.min = String(-VALUE_LIMIT);
  box.max = String(VALUE_LIMIT);
  if (reset) box.value = slider.value;
  $("steer-circuit").disabled = m.source !== "circuit";
  $("value-help").textContent = neuron
    ? "multiplier m: 1 = unchanged, 0 ablates the neurons, > 1 amplifies, < 0 flips them"
    : "strength s: 0 = unchanged, 1 = the method's full change, < 0 reverses it";
  checkValue();
}

function updateValueLabel() {
  const m = methodInfo();
  const text = `${m.kind} ${scaleLabel(m.symbol, $("value-box").value)}`;
  $("value-label").textContent = text;
  $("value").setAttribute("aria-valuetext", text);
}

function side(name) {
  const el = $(`side-${name}`);
  return { el, text: el.querySelector("[data-role=text]"), meta: el.querySelector("[data-role=meta]"),
    actions: el.querySelector("[data-role=actions]") };
}

function resetSides(label) {
  for (const name of ["unsteered", "steered"]) {
    const s = side(name);
    s.text.textContent = "";
    s.meta.replaceChildren();
    s.actions.replaceChildren();
    s.el.dataset.state = "waiting";
    delete s.el.dataset.class;
    showProgress(name, name === "steered" ? "waiting for the model…" : "waiting for the steered reply…");
  }
  steerView.progress = {};
  $("side-steered").querySelector("[data-role=title]").textContent = label;
  $("side-steered").querySelector("[data-role=detail]").textContent = "";
}

/** A reply card's progress line: a bar (when ``n`` is given) and a sentence; ``null`` hides it. */
function showProgress(name, text, n, max) {
  const box = $(`side-${name}`).querySelector("[data-role=progress]");
  box.hidden = text === null;
  const bar = box.querySelector("progress");
  bar.hidden = n === undefined;
  if (n !== undefined) { bar.max = max; bar.value = n; }
  box.querySelector("span").textContent = text ?? "";
}

const seconds = (x) => (x < 10 ? x.toFixed(1) : String(Math.round(x)));

/** A token arrived on one side: the count, the speed so far and the time left if the reply runs to the
 * limit; the unsteered side, still waiting, learns how long it will take at that speed. */
function onProgress(ev) {
  const p = (steerView.progress[ev.side] ??= { t0: ev.t, n0: ev.n });
  const rate = ev.n > p.n0 && ev.t > p.t0 ? (ev.n - p.n0) / (ev.t - p.t0) : null;
  p.rate = rate;
  const left = rate ? ` · at most ${seconds((ev.max - ev.n) / rate)} s left` : "";
  const speed = rate ? ` · ${rate.toFixed(1)} tokens/s` : "";
  showProgress(ev.side, `${ev.n} of ${ev.max} tokens${speed}${left}`, ev.n, ev.max);
  if (ev.side === "steered" && !steerView.progress.unsteered && side("unsteered").el.dataset.state === "waiting") {
    const then = steerView.unsteeredCached ? "then it is shown at once (generated before)"
      : `then up to ${ev.max} tokens${rate ? `, about ${seconds(ev.max / rate)} s at this speed` : ""}`;
    showProgress("unsteered", `waiting for the steered reply (${ev.n} of ${ev.max} tokens); ${then}`);
  }
}

function describeReply(ev, kl) {
  const parts = [
    h("span", { class: `badge ${ev.class}` }, ev.class),
    ev.verdict ? ` ${state.status.live.judge} judge: ${ev.verdict}${ev.answer !== undefined ? " (of the answer after the thinking)" : ""}`
      : " (degenerate replies are not judged)",
    ev.degenerate ? ` · degenerate: ${ev.degenerate}` : "",
    ` · ${ev.n_tokens} tokens${ev.finished ? "" : ` (cut at the ${steerView.maxTokens}-token limit)`}`,
    ev.tokens_per_s ? ` · ${ev.tokens_per_s.toFixed(1)} tokens/s on ${ev.threads} CPU thread${ev.threads === 1 ? "" : "s"}` : "",
  ];
  if (kl !== undefined) parts.push(` · ${kl}`);
  return parts;
}

/** A finished reply: the text as it is, or a reasoning model's answer under its thinking, collapsed. */
function showReplyText(box, ev) {
  if (ev.answer === undefined) { box.textContent = ev.text; return; }
  const thought = ev.thought ? ` (${ev.thought === "refusal" ? "refuses" : ev.thought === "compliance" ? "complies" : "degenerate"} in thought)` : "";
  box.replaceChildren(
    ev.thinking !== null ? h("details", { class: "thinking" },
      h("summary", {}, `thinking${thought}`), h("pre", { class: "text" }, ev.thinking)) : null,
    h("div", { class: "answer" }, ev.answer || "(no answer after the thinking)"));
}

function rerun() {
  if (steerView.ran) runSteer();
}

async function runSteer(event) {
  if (event) event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (!prompt) return;
  const m = methodInfo();
  const status = $("steer-status");
  const value = checkValue();
  const maxTokens = checkTokens();
  if (value === null || maxTokens === null) {
    status.textContent = value === null ? `error: ${m.symbol} must be a number from -${VALUE_LIMIT} to ${VALUE_LIMIT}`
      : `error: the reply length must be a whole number from 1 to ${$("max-tokens").max}`;
    return;
  }
  const body = {
    prompt, method: m.kind, value, max_new_tokens: maxTokens,
    circuit: m.source === "circuit" ? $("steer-circuit").value || null : null,
  };
  // a click on Run right after editing a box finds the box's own rerun already running: keep it
  const key = JSON.stringify(body);
  if (steerView.inflight === key) return;
  if (steerView.controller) steerView.controller.abort();
  const controller = new AbortController();
  steerView.controller = controller;
  steerView.inflight = key;
  steerView.ran = true;
  steerView.prompt = prompt;
  resetSides(`${m.kind} ${scaleLabel(m.symbol, value)}`);
  status.textContent = "sending…";
  try {
    await streamSteer(body, controller, status);
  } finally {
    if (steerView.controller === controller) steerView.inflight = null;
  }
}

/** Send one comparison and hand its events to the page as they arrive. */
async function streamSteer(body, controller, status) {
  let res;
  try {
    res = await fetch("/api/steer", {
      method: "POST", signal: controller.signal,
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
  } catch (err) {
    if (err.name !== "AbortError") status.textContent = `error: ${err.message}`;
    return;
  }
  if (!res.ok) {
    const data = await res.json().catch(() => ({}));
    status.textContent = `error: ${data.error || (data.detail && JSON.stringify(data.detail)) || res.statusText}`;
    return;
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value: chunk, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(chunk, { stream: true });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line) handleEvent(JSON.parse(line), status);
      }
    }
  } catch (err) {
    if (err.name !== "AbortError") status.textContent = `error: ${err.message}`;
  }
}

function handleEvent(ev, status) {
  if (ev.event === "queued") status.textContent = `waiting: ${ev.ahead} request(s) ahead`;
  else if (ev.event === "status") status.textContent = ev.text;
  else if (ev.event === "start") {
    status.textContent = `generating the steered reply (${ev.label})…`;
    steerView.maxTokens = ev.max_new_tokens;
    steerView.unsteeredCached = ev.unsteered_cached;
    const card = $("side-steered");
    card.querySelector("[data-role=title]").textContent = ev.label;
    const circuit = state.circuits.find((c) => c.id === $("steer-circuit").value);
    card.querySelector("[data-role=detail]").textContent = ev.detail
      || (methodInfo().source === "circuit" && circuit ? `circuit: ${circuit.name} · ${circuit.n_neurons} neurons` : "");
    showProgress("steered", `starting: up to ${ev.max_new_tokens} tokens`, 0, ev.max_new_tokens);
    showProgress("unsteered", ev.unsteered_cached ? "waiting for the steered reply; then shown at once (generated before)"
      : `waiting for the steered reply; then up to ${ev.max_new_tokens} tokens`);
  } else if (ev.event === "progress") {
    if (ev.side === "unsteered" && ev.n === 1) status.textContent = "generating the unsteered reply…";
    onProgress(ev);
  } else if (ev.event === "token") {
    const s = side(ev.side);
    s.el.dataset.state = "streaming";
    s.text.append(document.createTextNode(ev.text));
  } else if (ev.event === "done") {
    const s = side(ev.side);
    showReplyText(s.text, ev);
    s.actions.replaceChildren(replyAction(steerView.prompt, ev.text));
    s.el.dataset.state = "done";
    showProgress(ev.side, null);
    s.el.dataset.class = ev.class;
    const kl = ev.side === "unsteered" ? "KL from unsteered: 0 (reference)" : "KL from unsteered: measuring…";
    s.meta.replaceChildren(...describeReply(ev, kl));
    s.el.lastEvent = ev;
  } else if (ev.event === "kl") {
    const s = side("steered");
    const kl = `KL from unsteered: ${fmt(ev.mean)} nats/token over ${ev.n_tokens} tokens (first token ${fmt(ev.first)})`;
    s.meta.replaceChildren(...describeReply(s.el.lastEvent, kl));
  } else if (ev.event === "error") {
    status.textContent = `error: ${ev.text}`;
    for (const name of ["steered", "unsteered"]) if (side(name).el.dataset.state !== "done") showProgress(name, "stopped (see the error above)");
  }
  else if (ev.event === "end" && !status.textContent.startsWith("error")) status.textContent = "done";
}

function setupSteer() {
  $("steer-form").addEventListener("submit", runSteer);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); runSteer(); }
  });
  setupMethods();
}

// ---------------------------------------------------------------------------------------------- runs

async function loadRuns() {
  const list = $("run-list");
  if (!state.status.has_runs) {
    list.replaceChildren(h("caption", {}, "No runs folder: start with --runs DIR."));
    return;
  }
  const runs = await api("/api/runs");
  const head = h("tr", {}, ["run", "model", "created", "conditions", ""].map((t) => h("th", { scope: "col" }, t)));
  const rows = runs.map((r) => h("tr", {},
    h("td", {}, h("button", { type: "button", class: "link", "data-run": r.id, "data-kind": r.kind, onclick: () => showRun(r.id) }, r.name)),
    h("td", {}, r.model ?? ""), h("td", {}, r.created ?? ""), h("td", {}, r.n_conditions ?? ""),
    h("td", { class: r.error ? "error" : null }, r.error ?? (r.kind === "tune" ? "tuning search (Pareto front)" : "study"))));
  list.replaceChildren(h("caption", {}, `${runs.length} run(s)`), h("thead", {}, head), h("tbody", {}, rows));
}

function rateLink(runId, cond, set, cls, rate) {
  if (!rate) return "–";
  return h("button", {
    type: "button", class: "link rate", "data-key": cond.key, "data-set": set, "data-cls": cls,
    title: `the ${set} replies of ${cond.label} (${rate.k} of ${rate.n} ${cls})`,
    onclick: () => showReplies(runId, cond.key, set, cls),
  }, pct(rate), h("span", { class: "muted ci" }, ` ${ci(rate)}`));
}

async function showRun(id) {
  const view = $("run-view");
  $("reply-view").hidden = true;
  let run;
  try {
    run = await api(`/api/run?id=${encodeURIComponent(id)}`);
  } catch (err) {
    return showError(view, err);
  }
  const openReplies = (p) => showReplies(id, p.key, "harmful", "refusal");
  const charts = [
    ...run.curves.map((c) => h("figure", {}, curveChart(c.points, `${c.kind}: refusal vs ${c.scale} ${c.symbol} (${run.judges[0]} judge)`, c.symbol, openReplies),
      h("figcaption", {}, `${c.kind} · ${c.scale} ${c.symbol} · 95% Wilson intervals`))),
  ];
  if (run.sparsity.length) charts.push(h("figure", {}, curveChart(run.sparsity, `refusal vs circuit size (${run.judges[0]} judge)`, "neurons", openReplies, true),
    h("figcaption", {}, "sparsity: refusal against the number of neurons steered")));
  if (run.pareto) charts.push(h("figure", {}, scatterChart(run.pareto), h("figcaption", {}, `tuning: every trial's ${run.pareto.objectives.y}${run.pareto.judged ? ` (${run.pareto.judged})` : ""} against its ${run.pareto.objectives.x}; large dots and the line: the Pareto front`)));
  else charts.push(h("p", { class: "muted" }, "A study run: tuning searches (neurogate tune) show their Pareto front here."));
  const est = (e) => (e ? h("span", {}, fmt(e.value), h("span", { class: "muted ci" }, ` [${fmt(e.low, 2)}–${fmt(e.high, 2)}]`)) : "–");
  const delta = (p) => (p ? `${p.diff >= 0 ? "+" : ""}${Math.round(100 * p.diff)} pts [${Math.round(100 * p.low)}, ${Math.round(100 * p.high)}], p=${fmt(p.p_value, 2)}` : "–");
  const judge = run.judges[0];
  const cols = ["condition", "group", "neurons", "refusal", "redirect", "compliance", "degenerate", "not served vs baseline",
    "benign refusal", "quality", "perplexity", "KL first", "KL mean"];
  const rows = run.conditions.map((c) => h("tr", {},
    h("th", { scope: "row" }, c.label, c.detail ? h("span", { class: "detail" }, c.detail) : null),
    h("td", {}, c.group), h("td", {}, c.n_neurons ?? "–"),
    ["refusal", "redirect", "compliance", "degenerate"].map((cls) => h("td", {}, cls === "redirect" && !c.rates.harmful.redirect
      ? h("span", { class: "muted na", title: `redirect not measured: ${c.redirect_unknown}` }, "n/a")
      : rateLink(id, c, "harmful", cls, c.rates.harmful[cls]))),
    h("td", { class: "delta" }, delta(c.vs_baseline)),
    h("td", {}, rateLink(id, c, "benign", "refusal", c.rates.benign.refusal)),
    h("td", {}, est(c.quality)), h("td", {}, est(c.perplexity)), h("td", {}, est(c.kl_first)), h("td", {}, est(c.kl_mean))));
  const controls = run.controls.length ? h("div", { class: "table-wrap" }, h("table", { id: "control-table" },
    h("caption", {}, "Specificity controls: refusal difference from the main circuit and from the baseline (paired, McNemar)"),
    h("thead", {}, h("tr", {}, ["control", "type", "vs circuit", "vs baseline"].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, run.controls.map((c) => h("tr", {}, h("th", { scope: "row" }, c.name), h("td", {}, c.type),
      h("td", {}, `${delta(c.vs_circuit)} · ${c.vs_circuit.verdict}`), h("td", {}, `${delta(c.vs_baseline)} · ${c.vs_baseline.verdict}`)))))) : null;
  view.replaceChildren(
    h("h2", {}, run.name, h("span", { class: "muted" }, ` · ${run.model.spec}${run.created ? ` · ${run.created}` : ""}`)),
    h("p", { class: "summary" }, run.circuit.summary),
    h("div", { class: "charts" }, charts),
    h("div", { class: "table-wrap" }, h("table", { id: "condition-table" },
      h("caption", {}, `Rates of the harmful prompts' replies under the ${judge} judge (${judge} judge only, uncalibrated; 95% Wilson intervals); every rate links to the replies behind it.`
        + (run.conditions.some((c) => c.redirect_unknown) ? ` Redirect n/a: not measured (${[...new Set(run.conditions.map((c) => c.redirect_unknown).filter(Boolean))].join("; ")}); there the judge's compliance may include redirects.` : "")),
      h("thead", {}, h("tr", {}, cols.map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, rows))),
    ...(run.directions_note ? [h("p", { class: "note", id: "directions-note" }, run.directions_note)] : []),
    ...(controls ? [controls] : []),
  );
}

async function showReplies(runId, key, set, cls) {
  const box = $("reply-view");
  box.hidden = false;
  let data;
  try {
    data = await api(`/api/replies?id=${encodeURIComponent(runId)}&key=${encodeURIComponent(key)}&set=${set}&cls=${cls}`);
  } catch (err) {
    return showError(box, err);
  }
  let showAll = false;
  const list = h("ol", { class: "replies" });
  const render = () => {
    const shown = data.replies.filter((r) => showAll || r.counted);
    list.replaceChildren(...shown.map((r) => h("li", { class: "reply-item", "data-class": r.class },
      h("p", { class: "prompt-text" }, r.prompt),
      h("pre", { class: "text" }, r.text || "(empty reply)"),
      h("p", { class: "meta" }, h("span", { class: `badge ${r.class}` }, r.class),
        ` under the ${data.judge} judge`,
        data.judges.length > 1 ? ` (${data.judges.map((j) => `${j}: ${r.classes[j]}`).join(", ")})` : "",
        r.degenerate ? ` · degenerate: ${r.degenerate}` : "",
        r.finished ? "" : " · cut at the token limit"))));
    if (!shown.length) list.append(h("li", { class: "muted" }, `No ${cls} replies here.`));
  };
  const toggle = h("label", {}, h("input", { type: "checkbox", onchange: (e) => { showAll = e.target.checked; render(); } }), " show all replies");
  box.replaceChildren(
    h("h2", { tabindex: -1 }, `${data.label} · ${data.set} prompts`),
    h("p", { class: "summary", id: "reply-count" }, `${data.k} of ${data.n} replies are ${cls} (${data.judge} judge only, uncalibrated)`),
    toggle, list);
  render();
  box.querySelector("h2").focus();
}

// ---------------------------------------------------------------------------------------------- start

async function main() {
  setupTabs();
  await pollStatus();
  setupSteer();
  $("circuit-a").addEventListener("change", (e) => showCircuit(e.target.value));
  $("circuit-b").addEventListener("change", updateOverlay);
  $("score-scale").addEventListener("change", renderCircuitChart);
  // redraw the map at its new width (labels keep their size) when the window or the tab changes
  new ResizeObserver(() => {
    const w = $("circuit-chart").clientWidth;
    if (w && Math.abs(w - circuitView.width) > 1) renderCircuitChart();
  }).observe($("circuit-chart"));
  await Promise.all([loadCircuits().catch((e) => showError($("circuit-summary"), e)), loadRuns().catch((e) => showError($("run-view"), e))]);
  document.body.dataset.ready = "true";
}

main();
