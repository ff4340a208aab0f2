// neurogate explorer: single-prompt attribution on the Steer page. Sends the prompt (and an optional
// target) to /api/attribute and shows the top neurons and the ablation self-check; the same request
// attributes a live reply's first tokens ("Attribute this reply") and places one neuron of the circuit
// map in the ranking ("attribution on a prompt"). Every text from the server goes into the page as text
// nodes, never as HTML.
import { $, h } from "./dom.js";

const num = (x, digits = 4) => (x === null || x === undefined ? "–" : Number(x).toPrecision(digits));
const signed = (x) => (Number(x) >= 0 ? "+" : "") + num(x);

function render(data) {
  const rows = data.neurons.map((n) => h("tr", {},
    h("td", {}, n.rank), h("td", {}, n.layer), h("td", {}, n.neuron),
    h("td", {}, signed(n.attribution)), h("td", {}, signed(n.activation))));
  $("attr-table").replaceChildren(
    h("caption", {}, `top ${data.neurons.length} neurons for ${JSON.stringify(data.target.text)} `
      + `(log p = ${num(data.logprob)}; ${data.target.kind} target`
      + `${data.target_tokens ? `: the reply's first ${data.target_tokens} tokens` : ""})`),
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

/** POST one attribution request; the answer, or an Error with the server's message. */
async function post(body) {
  const res = await fetch("/api/attribute", {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "application/json" },
    body: JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || (data.detail && JSON.stringify(data.detail)) || res.statusText);
  return data;
}

/** Attribute ``prompt`` (with ``extra``: a target, its token count) with the control's settings and
 * show the ranking in the control. */
async function attributeShown(prompt, extra) {
  const status = $("attr-status");
  if (!prompt) { status.textContent = "type a prompt above first"; return; }
  const k = Number($("attr-k").value);
  if (!Number.isInteger(k) || k < 1 || k > 200) { status.textContent = "error: top must be a whole number from 1 to 200"; return; }
  const body = { prompt, top_k: k, target: $("attr-target").value || null,
    circuit: $("attr-compare").checked ? $("steer-circuit").value || null : null, ...extra };
  status.textContent = "attributing…";
  $("attr-run").disabled = true;
  try {
    render(await post(body));
  } catch (err) {
    status.textContent = `error: ${err.message}`;
  } finally {
    $("attr-run").disabled = false;
  }
}

/** How many of a reply's first tokens "Attribute this reply" attributes. */
export const REPLY_TOKENS = 8;

/** The "Attribute this reply" button of a live reply: attributes the reply's first tokens after the
 * prompt that produced it (on the unsteered model) in the control below the replies. */
export function replyAction(prompt, text) {
  return h("button", {
    type: "button", class: "attr-reply", disabled: text ? null : true,
    title: `which neurons of the unsteered model carry this reply's first ${REPLY_TOKENS} tokens`,
    onclick: () => {
      attributeShown(prompt, { target: text.slice(0, 200), target_tokens: REPLY_TOKENS });
      $("attribution").scrollIntoView({ block: "nearest" });
    },
  }, `Attribute this reply (first ${REPLY_TOKENS} tokens)`);
}

/** The neuron view's "attribution on a prompt": a prompt box whose attribution (of the model's next
 * token) says where this neuron ranks among all neurons. ``circuit``: its circuit's id (checked against
 * the model). */
export function neuronAction(circuit, layer, index, prompt) {
  const box = h("input", { type: "text", class: "attr-neuron-prompt", maxlength: 4000, value: prompt || "",
    "aria-label": "prompt to attribute" });
  const out = h("p", { class: "muted attr-neuron-status", role: "status", "aria-live": "polite" });
  const button = h("button", { type: "submit" }, "Attribute");
  const submit = async (event) => {
    event.preventDefault();
    const text = box.value.trim();
    if (!text) { out.textContent = "type a prompt first"; return; }
    out.textContent = "attributing…";
    button.disabled = true;
    try {
      const d = await post({ prompt: text, top_k: 1, circuit, neuron: { layer, index } });
      const n = d.neuron;
      out.textContent = `rank ${n.rank} of ${n.of} neurons for the next token ${JSON.stringify(d.target.text)}: `
        + `attribution ${signed(n.attribution)}, activation ${signed(n.activation)} `
        + `(top neuron: ${signed(d.neurons[0].attribution)})`;
    } catch (err) {
      out.textContent = `error: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  };
  return h("form", { class: "attr-neuron", onsubmit: submit },
    h("h3", {}, "Attribution on a prompt"), h("div", { class: "value-row" }, box, button), out);
}

$("attr-form").addEventListener("submit", (event) => { event.preventDefault(); attributeShown($("prompt").value.trim(), {}); });
