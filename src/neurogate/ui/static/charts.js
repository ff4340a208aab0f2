// Small SVG charts drawn by hand: neurons per layer with each layer's score spread, a rate curve with
// intervals, and a Pareto scatter. Labels are set with textContent only.
const NS = "http://www.w3.org/2000/svg";

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function frame(width, height, label) {
  const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label, class: "svg-chart" });
  svg.append(s("title", {}, label));
  return svg;
}

function ticks(lo, hi, n = 4) {
  if (hi === lo) return [lo];
  const step = (hi - lo) / n;
  return Array.from({ length: n + 1 }, (_, i) => lo + i * step);
}

const short = (x) => (Number.isInteger(x) || Math.abs(x) >= 100 ? String(Math.round(x)) : Number(x).toPrecision(2));

/** Compact tick text: exponent form for very small or large scores, else two significant digits. */
export function tickText(x) {
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a < 0.01 || a >= 1e5) return x.toExponential(1).replace("e+", "e");
  return String(Number(x.toPrecision(2)));
}

/** A round step near ``x``: 1, 2 or 5 times a power of ten. */
function niceStep(x) {
  const p = 10 ** Math.floor(Math.log10(x));
  return [1, 2, 5, 10].map((m) => m * p).find((v) => v >= x) ?? 10 * p;
}

/** How the score panel maps scores to height. ``mode``: "linear", "log" (only when every score is
 * positive) or "clip" (a cap just above the second-highest layer's top score, so one layer far above the
 * rest does not flatten them; scores above it are drawn at the cap as open triangles). "auto" clips when
 * one layer's top score is over three times every other layer's, else linear. The axis starts at zero
 * unless every score sits well above it, where a round number under the lowest score reads better. */
export function scoreScale(d, mode = "auto") {
  const all = d.layers.flatMap((l) => l.scores);
  const tops = d.layers.filter((l) => l.scores.length).map((l) => ({ layer: l.layer, top: Math.max(...l.scores) }))
    .sort((a, b) => b.top - a.top);
  const canLog = all.length > 0 && all.every((v) => v > 0);
  const dominant = tops.length > 1 && tops[1].top > 0 && tops[0].top > 3 * tops[1].top;
  if (mode === "auto") mode = dominant ? "clip" : "linear";
  if (mode === "log" && !canLog) mode = "linear";
  if (mode === "clip" && !dominant) mode = "linear";
  const min = all.length ? Math.min(...all) : 0;
  if (mode === "log") {
    const a = Math.log10(min), b = Math.log10(Math.max(...all));
    const pad = 0.05 * (b - a || 1);
    let marks = [];
    for (let e = Math.floor(a); e <= Math.ceil(b); e++) {
      for (const m of [1, 2, 5]) if (m * 10 ** e >= 10 ** (a - pad) && m * 10 ** e <= 10 ** (b + pad)) marks.push(m * 10 ** e);
    }
    if (marks.length > 5) marks = marks.filter((v) => Math.abs(Math.log10(v) - Math.round(Math.log10(v))) < 1e-9);
    if (marks.length > 5) marks = marks.filter((_, k) => k % Math.ceil(marks.length / 5) === 0);
    if (marks.length < 2) marks = [10 ** a, 10 ** b];
    return { mode, canLog, dominant, lo: a - pad, hi: b + pad, at: (v) => Math.log10(v), ticks: marks, clipped: [] };
  }
  const cap = mode === "clip" ? tops[1].top * 1.15 : Math.max(1e-9, ...all);
  let lo = Math.min(0, min);
  if (min > 0 && min > 0.2 * cap) {
    const step = niceStep((cap - min) / 4);
    lo = Math.floor(min / step) * step;
  }
  const clipped = mode === "clip" ? tops.filter((t) => t.top > cap) : [];
  return { mode, canLog, dominant, lo, hi: cap, at: (v) => Math.min(v, cap), ticks: ticks(lo, cap, 2), clipped, cap };
}

/** Neurons per layer (bars; with an overlay, both circuits and their shared neurons) over each layer's
 * score spread (min–max whisker, quartile box, median, and every neuron as a dot). ``width``: the drawing's
 * width in CSS pixels (labels keep their size); ``scale``: a :func:`scoreScale` mode. */
export function barChart(d, overlay, { width = 1100, scale = "auto" } = {}) {
  const W = Math.max(320, Math.round(width)), H = 268, left = 70, right = 12, top = 10, mid = 120, bottom = 224;
  const n = Math.max(d.n_layers, 1);
  const bw = (W - left - right) / n;
  const svg = frame(W, H, `neurons per layer and score spread of ${d.n_neurons} neurons over ${d.n_layers} layers`);
  const sc = scoreScale(d, scale);
  svg.setAttribute("data-scale", sc.mode);
  svg.setAttribute("data-width", W);
  const counts = overlay ? overlay.layers.map((l) => Math.max(l.a, l.b)) : d.layers.map((l) => l.count);
  const step = Math.max(1, Math.ceil(Math.max(1, ...counts) / 4));
  const maxCount = step * Math.ceil(Math.max(1, ...counts) / step);
  const x0 = (layer) => left + layer * bw;
  const base = mid - 8;
  svg.append(s("rect", { x: x0(d.late_start), y: top, width: (n - d.late_start) * bw, height: bottom - top, class: "late" }));
  const yCount = (c) => base - (c / maxCount) * (base - top - 4);
  for (let t = 0; t <= maxCount; t += step) {
    svg.append(s("text", { x: left - 6, y: yCount(t) + 4, class: "tick", "text-anchor": "end" }, String(t)));
  }
  const title = (y, text) => svg.append(s("text", {
    x: 14, y, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 14 ${y})`,
  }, text));
  title((top + base) / 2, "neurons");
  const bar = (x, y, w, cls, tip) => {
    const r = s("rect", { x, y, width: Math.max(1, w), height: Math.max(0, base - y), class: cls });
    if (tip) r.append(s("title", {}, tip));
    svg.append(r);
  };
  d.layers.forEach((l, i) => {
    if (overlay) {
      const o = overlay.layers[i];
      const w = bw / 2 - 1.5;
      const tip = `layer ${i}: ${o.a} in this circuit, ${o.b} in the other, ${o.both} shared`;
      bar(x0(i) + 1, yCount(o.a), w, "bar", tip);
      bar(x0(i) + bw / 2 + 0.5, yCount(o.b), w, "bar-b", tip);
      if (o.both) {
        bar(x0(i) + 1, yCount(o.both), w, "bar-both", tip);
        bar(x0(i) + bw / 2 + 0.5, yCount(o.both), w, "bar-both", tip);
      }
    } else if (l.count) {
      bar(x0(i) + 1, yCount(l.count), bw - 2, "bar", `layer ${i}: ${l.count} neurons`);
    }
  });
  const yScore = (v) => bottom - ((sc.at(v) - sc.lo) / (sc.hi - sc.lo || 1)) * (bottom - mid - 10);
  for (const t of sc.ticks) svg.append(s("text", { x: left - 6, y: yScore(t) + 4, class: "tick", "text-anchor": "end" }, tickText(t)));
  title((mid + bottom) / 2, sc.mode === "log" ? "score (log)" : "score");
  d.layers.forEach((l, i) => {
    const cx = x0(i) + bw / 2;
    const half = Math.max(1.5, Math.min(bw * 0.3, 24));
    if (l.spread) {
      const sp = l.spread;
      const above = sc.mode === "clip" && sp.min > sc.cap; // the whole layer is off the scale: only its marker
      if (!above) svg.append(s("line", { x1: cx, x2: cx, y1: yScore(sp.min), y2: yScore(sp.max), class: "whisker" }));
      if (!above) svg.append(s("rect", { x: cx - half, y: yScore(sp.q3), width: 2 * half, height: Math.max(1, yScore(sp.q1) - yScore(sp.q3)), class: "box", "data-layer": i }));
      if (!above) svg.append(s("line", { x1: cx - half, x2: cx + half, y1: yScore(sp.median), y2: yScore(sp.median), class: "median" }));
      for (const v of l.scores) {
        if (sc.mode === "clip" && v > sc.cap) continue;
        svg.append(s("circle", { cx, cy: yScore(v), r: 2, class: "dot" }));
      }
      const over = sc.mode === "clip" ? l.scores.filter((v) => v > sc.cap) : [];
      if (over.length) {
        const y = yScore(sc.cap);
        const tri = s("path", { d: `M${cx - 5},${y + 4} L${cx + 5},${y + 4} L${cx},${y - 5} Z`, class: "clipped", "data-layer": i });
        tri.append(s("title", {}, `layer ${i}: ${over.length} score(s) above the cap ${tickText(sc.cap)}, up to ${tickText(Math.max(...over))}`));
        svg.append(tri);
      }
    }
  });
  // layer numbers: a round step that leaves room for each label, and always the last layer
  const gap = 8 + 7 * String(n - 1).length;
  const every = [1, 2, 5, 10, 20, 50, 100].find((k) => k * bw >= gap) ?? Math.ceil(gap / bw);
  const shown = [];
  for (let i = 0; i < n; i += every) if (i === n - 1 || (n - 1 - i) * bw >= gap) shown.push(i);
  if (shown[shown.length - 1] !== n - 1) shown.push(n - 1);
  for (const i of shown) svg.append(s("text", { x: x0(i) + bw / 2, y: bottom + 14, class: "tick layer-tick", "text-anchor": "middle" }, String(i)));
  svg.append(s("text", { x: left + (W - left - right) / 2, y: bottom + 34, class: "axis-label", "text-anchor": "middle" }, "layer"));
  return svg;
}

/** A rate against x (the scale's value, or circuit size on a log axis) with 95% intervals. Each point
 * is a keyboard-focusable link to its replies. */
export function curveChart(points, label, xName, onPick, logX = false) {
  const W = 360, H = 220, left = 40, right = 12, top = 12, bottom = 180;
  const svg = frame(W, H, label);
  const xs = points.map((p) => (logX ? Math.log10(p.x) : p.x));
  const lo = Math.min(...xs), hi = Math.max(...xs);
  const span = hi - lo || 1;
  const X = (x) => left + (((logX ? Math.log10(x) : x) - lo) / span) * (W - left - right - 20) + 10;
  const Y = (v) => bottom - v * (bottom - top);
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(s("line", { x1: left, x2: W - right, y1: Y(t), y2: Y(t), class: "grid" }));
    svg.append(s("text", { x: left - 4, y: Y(t) + 4, class: "tick", "text-anchor": "end" }, `${t * 100}%`));
  }
  const path = points.map((p, i) => `${i ? "L" : "M"}${X(p.x)},${Y(p.rate.value)}`).join(" ");
  svg.append(s("path", { d: path, class: "curve" }));
  for (const p of points) {
    const g = s("g", { class: "point", tabindex: 0, role: "link", "data-key": p.key });
    g.append(s("title", {}, `${p.label}${p.baseline ? " (baseline)" : ""}: ${Math.round(100 * p.rate.value)}% (${p.rate.k} of ${p.rate.n}); open the replies`));
    g.append(s("line", { x1: X(p.x), x2: X(p.x), y1: Y(p.rate.low), y2: Y(p.rate.high), class: "interval" }));
    g.append(s("circle", { cx: X(p.x), cy: Y(p.rate.value), r: 5, class: p.baseline ? "marker baseline" : "marker" }));
    g.addEventListener("click", () => onPick(p));
    g.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); onPick(p); } });
    svg.append(g);
    svg.append(s("text", { x: X(p.x), y: bottom + 14, class: "tick", "text-anchor": "middle" }, short(p.x)));
  }
  svg.append(s("text", { x: (W + left) / 2, y: bottom + 32, class: "axis-label", "text-anchor": "middle" }, xName));
  return svg;
}

/** The tuning Pareto front: every trial as a dot, the front joined by a line. */
export function scatterChart(pareto) {
  const W = 360, H = 220, left = 44, right = 34, top = 12, bottom = 180;
  const svg = frame(W, H, `Pareto front: ${pareto.objectives.x} against ${pareto.objectives.y}`);
  const pts = pareto.points;
  const xs = pts.map((p) => p.x), ys = pts.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const X = (x) => left + ((x - x0) / (x1 - x0 || 1)) * (W - left - right - 10) + 5;
  const Y = (y) => bottom - ((y - y0) / (y1 - y0 || 1)) * (bottom - top - 10) - 5;
  for (const t of ticks(y0, y1, 3)) svg.append(s("text", { x: left - 4, y: Y(t) + 4, class: "tick", "text-anchor": "end" }, tickText(t)));
  for (const t of ticks(x0, x1, 3)) svg.append(s("text", { x: X(t), y: bottom + 14, class: "tick", "text-anchor": "middle" }, tickText(t)));
  const front = pts.filter((p) => p.front).sort((a, b) => a.x - b.x);
  svg.append(s("path", { d: front.map((p, i) => `${i ? "L" : "M"}${X(p.x)},${Y(p.y)}`).join(" "), class: "curve" }));
  for (const p of pts) {
    const c = s("circle", { cx: X(p.x), cy: Y(p.y), r: p.front ? 5 : 3, class: p.front ? "marker" : "dot" });
    c.append(s("title", {}, `${p.label}: ${pareto.objectives.x} ${tickText(p.x)}, ${pareto.objectives.y} ${tickText(p.y)}`));
    svg.append(c);
  }
  svg.append(s("text", { x: (W + left) / 2, y: bottom + 32, class: "axis-label", "text-anchor": "middle" }, pareto.objectives.x));
  svg.append(s("text", { x: 4, y: top + 4, class: "axis-label" }, pareto.objectives.y));
  return svg;
}
