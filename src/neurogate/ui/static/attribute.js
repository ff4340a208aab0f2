// neurogate explorer: single-prompt attribution on the Steer page. Sends the prompt (and an optional
// target) to /api/attribute and shows the top neurons and the ablation self-check. Every text from the
// server goes into the page as text nodes, never as HTML.
import { $, h } from "./dom.js";

const num = (x, digits = 4) => (x === null || x === undefined ? "–" : Number(x).toPrecision(digits));
const signed = (x) => (Number(x) >= 0 ? "+" : "") + num(x);

function render(data) {
  const rows = data.neurons.map((n) => h("tr", {},
    h("td", {}, n.rank), h("td", {}, n.layer), h("td", {}, n.neuron),
    h("td", {}, signed(n.attribution)), h("td", {}, signed(n.activation))));
  $("attr-table").replaceChildren(
    h("caption", {}, `top ${data.neurons.length} neurons for ${JSON.stringify(data.target.text)} `
      + `(log p = ${num(data.logprob)}; ${data.target.kind} target)`),
    h("thead", {}, h("tr", {}, ["rank", "layer", "neuron", "attribution", "activation"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, rows));
  const lines = [data.self_check.line];
  const c = data.comparison;
  if (c) {
    lines.push(`vs the circuit (${c.circuit_size} neurons): ${c.overlap} shared (Jaccard ${num(c.jaccard, 3)}); `
      + `it holds ${(100 * c.share).toFixed(1)}% of the total |attribution|`);
  }
  $("attr-status").replaceChildren(...lines.map((line) => h("span", { class: "line" }, line, h("br"))));
}

async function run(event) {
  event.preventDefault();
  const status = $("attr-status");
  const prompt = $("prompt").value.trim();
  if (!prompt) { status.textContent = "type a prompt above first"; return; }
  const k = Number($("attr-k").value);
  if (!Number.isInteger(k) || k < 1 || k > 200) { status.textContent = "error: top must be a whole number from 1 to 200"; return; }
  const body = { prompt, top_k: k, target: $("attr-target").value || null,
    circuit: $("attr-compare").checked ? $("steer-circuit").value || null : null };
  status.textContent = "attributing…";
  $("attr-run").disabled = true;
  try {
    const res = await fetch("/api/attribute", {
      method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(data.error || (data.detail && JSON.stringify(data.detail)) || res.statusText);
    render(data);
  } catch (err) {
    status.textContent = `error: ${err.message}`;
  } finally {
    $("attr-run").disabled = false;
  }
}

$("attr-form").addEventListener("submit", run);
