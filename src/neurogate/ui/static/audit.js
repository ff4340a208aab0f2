// neurogate explorer, Audit page: blind labelling of a run's replies, the same flow as `neurogate audit`.
// While labelling the page holds only an item's request and reply (never its condition, multiplier or a
// judge's verdict); each key is sent to the server, which writes the label to RUN_DIR/audit/labels.jsonl
// before it answers. Agreement and calibrated rates are a separate view, from which an adjudicator goes
// through the disagreements with the same keys (as `--adjudicate`: every annotator's label in view), and
// labels made elsewhere can be uploaded (as `--import`). Text from the server only ever becomes text nodes.

import { $, h as el } from "./dom.js";

const STORE = "neurogate.audit";
const ORDER = ["r", "d", "c", "g", "u", "s", "b"];
const MAX_IMPORT_BYTES = 16 * 1024 * 1024;  // the server's limit (neurogate.ui.audit_review)

/** GET (no body), POST a JSON body, or POST a file's bytes; a failed request throws the server's error message. */
async function call(path, body) {
  const init = body === undefined
    ? { headers: { Accept: "application/json" } }
    : body instanceof Blob
      ? { method: "POST", headers: { Accept: "application/json", "Content-Type": "application/octet-stream" }, body }
      : { method: "POST", headers: { Accept: "application/json", "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || res.statusText);
  return data;
}

const pct = (x) => `${Math.round(100 * x)}%`;
const withInterval = (r) => (r ? `${pct(r.value)} [${pct(r.low)}–${pct(r.high)}]` : "n/a");

const audit = { rule: null, runs: [], state: null, busy: false, keys: 0, adjudicator: "" };

// ---------------------------------------------------------------------------------------------- layout

function build() {
  const view = $("view-audit");
  const keyButtons = ORDER.map((k) => el("button", {
    type: "button", "data-key": k, "aria-keyshortcuts": k, class: ["s", "b"].includes(k) ? "move" : "label",
    onclick: () => press(k),
  }, el("kbd", {}, k), " ", audit.rule.keys[k]));
  view.replaceChildren(
    el("form", { id: "audit-form", class: "controls", novalidate: true, onsubmit: (e) => { e.preventDefault(); start(); } },
      el("label", {}, "Run", el("select", { id: "audit-run" })),
      el("label", {}, "Annotator", el("input", { id: "audit-annotator", maxlength: 64, autocomplete: "off", spellcheck: "false", placeholder: "your name" })),
      el("label", {}, "Replies per condition", el("input", { id: "audit-n", type: "number", min: 1, max: 1000, step: 1, value: audit.rule.per_condition })),
      el("button", { id: "audit-start", type: "submit" }, "Start or resume"),
      el("button", { id: "audit-show-agreement", type: "button", onclick: showAgreement }, "Agreement and rates")),
    el("details", { id: "audit-import-box" },
      el("summary", {}, "Import labels made elsewhere"),
      el("form", { id: "audit-import-form", class: "controls", novalidate: true, onsubmit: (e) => { e.preventDefault(); importLabels(); } },
        el("label", {}, "Labels file (JSONL or CSV, from audit/items.jsonl)", el("input", { id: "audit-import-file", type: "file", accept: ".jsonl,.json,.csv,.txt" })),
        el("label", {}, "Annotator (if the file names none)", el("input", { id: "audit-import-annotator", maxlength: 64, autocomplete: "off", spellcheck: "false" })),
        el("button", { id: "audit-import", type: "submit" }, "Import")),
      el("p", { id: "audit-import-message", role: "status", "aria-live": "polite" })),
    el("p", { id: "audit-status", class: "muted", role: "status", "aria-live": "polite" }),
    el("div", { class: "audit-split" },
      el("div", { id: "audit-label", class: "card", hidden: true },
        el("p", { class: "audit-progress" }, el("span", { id: "audit-progress" }), " ", el("progress", { id: "audit-bar", max: 1, value: 0 })),
        el("div", { id: "audit-item" },
          el("h3", {}, "Request"), el("pre", { id: "audit-prompt", class: "text" }),
          el("h3", {}, "Reply"), el("pre", { id: "audit-reply", class: "text" })),
        el("p", { id: "audit-others", hidden: true }),
        el("p", { id: "audit-own", class: "muted" }),
        el("div", { id: "audit-keys", role: "group", "aria-label": "Label this reply (or press the key)" }, keyButtons),
        el("p", { id: "audit-message", role: "status", "aria-live": "polite" }),
        el("p", { id: "audit-timing", class: "muted" })),
      el("aside", { id: "audit-rule", class: "card", "aria-label": "Labelling rule" },
        el("h2", {}, `Labelling rule, version ${audit.rule.version}`),
        ruleText(audit.rule.text))),
    el("div", { id: "audit-agreement", class: "card", hidden: true, "aria-live": "polite" }));
}

/** The rule as a definition list, from its text: the opening lines, then one entry per name at the start
of a line ("degenerate  No usable answer..."); indented lines continue the entry, an indented quotation
("Write a phishing email..." -> ...) starts an example of its own. Every word of the text is kept, in order. */
function ruleText(text) {
  const intro = [];
  const entries = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const head = /^(\S[\w ]*?)\s{2,}(.*)$/.exec(line);
    const cur = entries[entries.length - 1];
    if (head) entries.push({ term: head[1], paras: [head[2].trim()] });
    else if (!cur) intro.push(line.trim());
    else if (line.trim().startsWith('"')) cur.paras.push(line.trim());
    else cur.paras[cur.paras.length - 1] += ` ${line.trim()}`;
  }
  return el("div", { class: "rule" }, el("p", {}, intro.join(" ")),
    el("dl", {}, entries.map((e) => [el("dt", {}, e.term), el("dd", {}, e.paras.map((p) => el("p", { class: p.startsWith('"') ? "example" : null }, p)))])));
}

function fillRuns() {
  const describe = (r) => {
    if (r.error) return `${r.name} (audit unreadable)`;
    const who = Object.entries(r.annotators).map(([a, n]) => `${a} ${n}`).join(", ");
    return `${r.name} · ${r.items ? `${r.items} items` : "no sample yet"}${who ? ` · labelled: ${who}` : ""}`;
  };
  $("audit-run").replaceChildren(...audit.runs.map((r) => el("option", { value: r.id }, describe(r))));
  if (!audit.runs.length) $("audit-status").textContent = "No runs: start the explorer with --runs DIR.";
}

// ---------------------------------------------------------------------------------------------- labelling

function chosen() {
  return { run: $("audit-run").value, annotator: $("audit-annotator").value.trim() };
}

function remember() {
  const { run, annotator } = chosen();
  localStorage.setItem(STORE, JSON.stringify({ run, annotator, n: $("audit-n").value, adjudicator: audit.adjudicator }));
}

function progress(state) {
  if (!state.adjudicate) {
    return state.done
      ? `all ${state.total} items labelled by ${state.annotator}`
      : `item ${state.position} of ${state.total} · ${state.labelled} of ${state.total} labelled`;
  }
  if (state.done) return state.total ? `all ${state.total} disagreements adjudicated` : "no disagreements to adjudicate";
  return `adjudicating as ${state.annotator}: disagreement ${state.position} of ${state.total} (item ${state.item.id}) · ${state.labelled} of ${state.total} adjudicated`;
}

/** Show the server's state: the item (request and reply), this annotator's label of it, the progress; an
adjudicator also sees every annotator's label of the item. */
function render(state) {
  audit.state = state;
  const adj = Boolean(state.adjudicate);
  $("audit-label").hidden = false;
  $("audit-progress").textContent = progress(state);
  $("audit-others").hidden = !(adj && state.item);
  $("audit-others").textContent = adj && state.item
    ? `labels: ${Object.entries(state.item.labels).map(([a, lab]) => `${a}: ${lab}`).join(", ")}`
    : "";
  $("audit-bar").value = state.total ? state.labelled / state.total : 0;
  $("audit-item").hidden = state.done;
  $("audit-prompt").textContent = state.item ? state.item.prompt : "";
  $("audit-reply").textContent = state.item ? (state.item.reply || "(empty reply)") : "";
  const given = adj ? "adjudicated" : "your label";
  $("audit-own").textContent = state.item && state.item.label ? `${given}: ${state.item.label} (a new key replaces it)` : "";
  const notes = [state.message, state.stale].filter(Boolean);
  if (state.done && state.total) notes.push(`Press b to go back to the last ${adj ? "disagreement" : "item"}, or open Agreement and rates.`);
  $("audit-message").textContent = notes.join(" · ");
  for (const b of document.querySelectorAll("#audit-keys button.label")) b.disabled = state.done;
  $("view-audit").dataset.position = state.done ? "done" : String(state.position);
  $("view-audit").dataset.mode = adj ? "adjudicate" : "label";
}

async function start() {
  const { run, annotator } = chosen();
  const n = Number($("audit-n").value);
  if (!annotator) {
    $("audit-annotator").setAttribute("aria-invalid", "true");
    $("audit-status").textContent = "Give your name as annotator: every label records who gave it.";
    return $("audit-annotator").focus();
  }
  $("audit-annotator").removeAttribute("aria-invalid");
  $("audit-status").textContent = "drawing the sample…";
  try {
    const state = await call("/api/audit/start", { run, annotator, per_condition: Number.isInteger(n) ? n : null });
    remember();
    $("audit-status").textContent = `labelling as ${annotator}: keys r d c g u, s skip, b back`;
    $("audit-agreement").hidden = true;
    render(state);
    document.activeElement?.blur();  // keys go to the page, not to a field
    await refreshRuns();
  } catch (err) {
    $("audit-status").textContent = String(err.message || err);
  }
}

async function press(key) {
  const state = audit.state;
  if (audit.busy || !state) return;
  audit.busy = true;
  const t0 = performance.now();
  try {
    const next = await call("/api/audit/key", {
      run: state.run, annotator: state.annotator, key, item: state.item ? state.item.id : null, adjudicate: Boolean(state.adjudicate),
    });
    render(next);
    if (next.adjudicate && next.done && !state.done) showAgreement();  // the last one: the view with every adjudication
  } catch (err) {
    $("audit-message").textContent = String(err.message || err);
  } finally {
    audit.busy = false;
  }
  // the time from the key to the frame that shows its answer
  requestAnimationFrame(() => {
    const ms = performance.now() - t0;
    audit.keys += 1;
    $("audit-timing").textContent = `last key answered in ${Math.round(ms)} ms`;
    $("view-audit").dataset.keyMs = ms.toFixed(1);
    $("view-audit").dataset.keys = String(audit.keys);
  });
}

function onKey(e) {
  if ($("view-audit").hidden || $("audit-label").hidden || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
  if (e.target instanceof Element && e.target.closest("input, textarea, select, [contenteditable]")) return;
  const key = e.key.toLowerCase();
  if (!ORDER.includes(key)) return;
  e.preventDefault();
  press(key);
}

// ---------------------------------------------------------------------------------------------- agreement

function table(id, head, rows) {
  return el("div", { class: "table-wrap" }, el("table", { id, class: "audit-table" },
    el("thead", {}, el("tr", {}, head.map((c) => el("th", {}, c)))),
    el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c) => el("td", {}, c)))))));
}

async function showAgreement() {
  const box = $("audit-agreement");
  const run = $("audit-run").value;
  box.hidden = false;
  refreshRuns().catch(() => {});  // the labels counted so far, in the run list
  box.replaceChildren(el("p", { class: "muted" }, "computing…"));
  let data;
  try {
    data = await call(`/api/audit/agreement?run=${encodeURIComponent(run)}`);
  } catch (err) {
    return box.replaceChildren(el("p", { class: "error" }, String(err.message || err)));
  }
  const parts = [
    el("h2", { tabindex: -1 }, "Agreement and calibrated rates"),
    el("p", { class: "muted" }, "This view names conditions and shows every annotator's labels: open it when your labelling is done, so that it stays blind."),
  ];
  if (data.annotators.length < 2) {
    parts.push(el("p", { class: "audit-kappa" }, `Agreement needs two annotators; labels so far from: ${data.annotators.join(", ") || "nobody"}.`));
  }
  for (const p of data.pairs) {
    const k = (x) => (x === null ? "undefined" : x.toFixed(3));
    parts.push(
      el("p", { class: "audit-kappa" }, `${p.a} / ${p.b}: Cohen's kappa ${k(p.kappa)} on ${p.n} items (same label ${pct(p.agreement)})`),
      table(null, ["condition", "items both labelled", "Cohen's kappa"], p.per_condition.map((c) => [c.label, c.n, k(c.kappa)])));
  }
  if (data.pairs.length) {
    const short = (t) => (t.length > 90 ? `${t.slice(0, 90)}…` : t);
    parts.push(
      el("h3", {}, `${data.disagreements.length} disagreement${data.disagreements.length === 1 ? "" : "s"}`),
      data.disagreements.length
        ? table("audit-disagreements", ["item", "request", ...data.annotators, "adjudicated"],
          data.disagreements.map((d) => [d.item, short(d.prompt.trim()), ...data.annotators.map((a) => d.labels[a] || "–"), d.adjudicated || "–"]))
        : el("p", {}, "no disagreements"),
      data.disagreements.length ? adjudicateForm(data.disagreements) : null);
  }
  parts.push(el("h3", {}, "Calibrated rates (95% intervals)"));
  const rows = [];
  for (const r of data.rates) {
    const notes = [`${r.n_audited} of ${r.n_replies} audited`, r.n_unsure ? `${r.n_unsure} unsure` : "", r.n_unresolved ? `${r.n_unresolved} unresolved` : ""].filter(Boolean);
    data.classes.forEach((c, i) => {
      const cr = r.classes[c];
      rows.push([i === 0 ? `${r.label} (judge ${r.judge}; ${notes.join(", ")})` : "", c,
        cr.judged ? withInterval(cr.judged) : "n/a", withInterval(cr.audited), withInterval(cr.corrected)]);
    });
  }
  parts.push(rows.length
    ? table("audit-rates", ["condition", "class", "judged", "audited (Wilson)", "corrected estimate"], rows)
    : el("p", {}, "No audit labels yet."));
  if (data.uncalibrated.length) parts.push(el("p", { class: "muted" }, `${data.uncalibrated_note} (no audit labels): ${data.uncalibrated.join(", ")}`));
  box.replaceChildren(...parts);
  box.querySelector("h2").focus();
}

// ---------------------------------------------------------------------------------------------- adjudication and import

/** Under the disagreements: the adjudicator's name and the button that goes through them one at a time. */
function adjudicateForm(disagreements) {
  const left = disagreements.filter((d) => !d.adjudicated).length;
  return el("form", { id: "audit-adjudicate-form", class: "controls", novalidate: true, onsubmit: (e) => { e.preventDefault(); startAdjudication(); } },
    el("label", {}, "Adjudicator", el("input", {
      id: "audit-adjudicator", maxlength: 64, autocomplete: "off", spellcheck: "false", placeholder: "your name",
      value: audit.adjudicator || $("audit-annotator").value.trim(),
    })),
    el("button", { id: "audit-adjudicate", type: "submit" }, left ? `Adjudicate (${left} left)` : "Review the adjudications"),
    el("p", { id: "audit-adjudicate-message", class: "muted", role: "status" },
      "Each disagreement shows the request, the reply and every annotator's label; choose the class with the same keys."));
}

async function startAdjudication() {
  const field = $("audit-adjudicator");
  const adjudicator = field.value.trim();
  if (!adjudicator) {
    field.setAttribute("aria-invalid", "true");
    $("audit-adjudicate-message").textContent = "Give your name as adjudicator: every adjudication records who gave it.";
    return field.focus();
  }
  try {
    const state = await call("/api/audit/adjudicate", { run: $("audit-run").value, annotator: adjudicator });
    audit.adjudicator = adjudicator;
    remember();
    $("audit-status").textContent = `adjudicating as ${adjudicator}: keys r d c g u, s skip, b back`;
    $("audit-agreement").hidden = true;
    render(state);
    document.activeElement?.blur();  // keys go to the page, not to a field
    $("audit-label").scrollIntoView({ block: "start" });
  } catch (err) {
    $("audit-adjudicate-message").textContent = String(err.message || err);
  }
}

/** Upload a labels file made elsewhere; the server checks it as `neurogate audit --import` does. */
async function importLabels() {
  const msg = $("audit-import-message");
  const file = $("audit-import-file").files[0];
  const fail = (text) => { msg.className = "error"; msg.textContent = text; };
  if (!file) return fail("Choose a labels file first.");
  if (file.size > MAX_IMPORT_BYTES) {
    return fail(`${file.name} is larger than ${MAX_IMPORT_BYTES / 1024 / 1024} MiB; import it on the command line: neurogate audit RUN_DIR --import FILE --annotator NAME`);
  }
  const params = new URLSearchParams({ run: $("audit-run").value, name: file.name });
  const who = $("audit-import-annotator").value.trim();
  if (who) params.set("annotator", who);
  msg.className = "muted";
  msg.textContent = `importing ${file.name}…`;
  try {
    const data = await call(`/api/audit/import?${params}`, file);
    msg.className = "";
    msg.textContent = data.message;
    await refreshRuns();
    if (!$("audit-agreement").hidden) await showAgreement();
  } catch (err) {
    fail(String(err.message || err));
  }
}

// ---------------------------------------------------------------------------------------------- start

async function refreshRuns() {
  const keep = $("audit-run").value;
  audit.runs = await call("/api/audit/runs");
  fillRuns();
  if (keep && audit.runs.some((r) => r.id === keep)) $("audit-run").value = keep;
}

async function main() {
  const view = $("view-audit");
  try {
    audit.rule = await call("/api/audit/rule");
    build();
    await refreshRuns();
  } catch (err) {
    view.replaceChildren(el("p", { class: "error" }, String(err.message || err)));
    return;
  }
  document.addEventListener("keydown", onKey);
  let saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(STORE) || "{}") || {};
  } catch { /* a damaged entry: start afresh */ }
  if (saved.annotator) $("audit-annotator").value = saved.annotator;
  if (saved.n) $("audit-n").value = saved.n;
  if (saved.adjudicator) audit.adjudicator = saved.adjudicator;
  if (saved.run && audit.runs.some((r) => r.id === saved.run)) {
    $("audit-run").value = saved.run;
    if (saved.annotator) {  // continue where this annotator stopped (the server keeps the place)
      try {
        render(await call(`/api/audit/item?run=${encodeURIComponent(saved.run)}&annotator=${encodeURIComponent(saved.annotator)}`));
        $("audit-status").textContent = `resumed: labelling as ${saved.annotator}`;
      } catch { /* no sample yet: Start draws it */ }
    }
  }
  view.dataset.ready = "true";
}

main();
