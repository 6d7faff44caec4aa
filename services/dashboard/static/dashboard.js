// rtml live dashboard: renders the snapshots pushed on /events/stream as plain SVG.
// No build step and no library: small chart functions over the snapshot JSON that
// services/dashboard/aggregates.py produces. Text from messages (versions, errors)
// is only ever set as textContent, never parsed as HTML.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const PALETTE = ["#4f46e5", "#f59e0b", "#10b981", "#ef4444", "#0ea5e9", "#a855f7", "#84cc16", "#ec4899", "#14b8a6", "#78716c"];
const COLORS = { events: "#4f46e5", predictions: "#f59e0b", p50: "#10b981", p95: "#f59e0b", p99: "#ef4444", mae: "#111827", drift: "#dc2626", promoted: "#4f46e5", registered: "#9aa2b1" };
const CHART_HEIGHT = 210;
const MARGIN = { top: 12, right: 14, bottom: 26, left: 46 };
// two rows of marker labels above the plot
const MARKER_ROOM = 30;

// --- small DOM helpers ------------------------------------------------------------

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function html(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "text") node.textContent = value;
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function svgText(attrs, text) {
  const node = svg("text", attrs);
  node.textContent = text;
  return node;
}

function tooltip(text) {
  const node = svg("title");
  node.textContent = text;
  return node;
}

function replaceContent(container, ...nodes) {
  container.replaceChildren(...nodes);
}

function empty(message) {
  return html("div", { class: "empty", text: message });
}

// --- formatting ------------------------------------------------------------------

const integer = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });

function fmtCount(n) {
  return n === null || n === undefined ? "—" : integer.format(n);
}

function fmtNumber(x, digits = 2) {
  if (x === null || x === undefined) return "—";
  const magnitude = Math.abs(x);
  if (magnitude >= 1000) return integer.format(x);
  if (magnitude >= 100) return x.toFixed(0);
  if (magnitude >= 10) return x.toFixed(1);
  return x.toFixed(digits);
}

function fmtMs(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms >= 10000) return `${(ms / 1000).toFixed(1)} s`;
  return `${fmtNumber(ms, 1)} ms`;
}

function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 90) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
  if (seconds < 5400) return `${(seconds / 60).toFixed(1)} min`;
  if (seconds < 172800) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function fmtTick(v) {
  return Number.isInteger(v) ? integer.format(v) : fmtNumber(v, 1);
}

function fmtPercent(share) {
  return share === null || share === undefined ? "—" : `${(share * 100).toFixed(share < 0.1 ? 1 : 0)}%`;
}

function pad2(n) {
  return String(n).padStart(2, "0");
}

// event time is the simulation's clock, in UTC like the simulator's schedule
function fmtEventTime(ts, withDate) {
  const d = new Date(ts * 1000);
  const time = `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
  return withDate ? `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ${time}` : time;
}

function fmtBucket(seconds) {
  return seconds % 3600 === 0 ? `${seconds / 3600} h` : seconds % 60 === 0 ? `${seconds / 60} min` : `${seconds} s`;
}

// --- scales -----------------------------------------------------------------------

function scale(domain, range) {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  const span = d1 - d0 || 1;
  return (value) => r0 + ((value - d0) / span) * (r1 - r0);
}

// about `count` round tick values covering [lo, hi]
function niceTicks(lo, hi, count) {
  if (!(hi > lo)) return [lo];
  const rough = (hi - lo) / count;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => s >= rough) || 10 * power;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(Number(v.toFixed(10)));
  return ticks;
}

function timeTicks(lo, hi, count) {
  const steps = [60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400];
  const step = steps.find((s) => (hi - lo) / s <= count) || 86400 * Math.ceil((hi - lo) / (86400 * count));
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) ticks.push(v);
  return ticks;
}

function niceMax(values, floor) {
  const finite = values.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  const max = finite.length ? Math.max(...finite) : floor;
  const top = niceTicks(0, Math.max(max, floor) * 1.08, 4);
  return top[top.length - 1] >= max ? top[top.length - 1] : max;
}

// --- chart frame -------------------------------------------------------------------

function frame(container, withMarkers) {
  const width = Math.max(container.clientWidth, 280);
  const height = CHART_HEIGHT + (withMarkers ? MARKER_ROOM : 0);
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const top = MARGIN.top + (withMarkers ? MARKER_ROOM : 0);
  const inner = { left: MARGIN.left, right: width - MARGIN.right, top, bottom: height - MARGIN.bottom };
  return { root, width, height, inner };
}

function axes(f, x, y, xTicks, yTicks, xFormat, yFormat) {
  const g = svg("g", { class: "axis" });
  for (const t of yTicks) {
    const py = y(t);
    g.append(svg("line", { class: "grid", x1: f.inner.left, x2: f.inner.right, y1: py, y2: py }));
    g.append(svgText({ x: f.inner.left - 6, y: py + 3.5, "text-anchor": "end" }, yFormat(t)));
  }
  g.append(svg("line", { class: "base", x1: f.inner.left, x2: f.inner.right, y1: f.inner.bottom, y2: f.inner.bottom }));
  for (const t of xTicks) {
    const px = x(t);
    if (px < f.inner.left - 1 || px > f.inner.right + 1) continue;
    g.append(svg("line", { class: "base", x1: px, x2: px, y1: f.inner.bottom, y2: f.inner.bottom + 4 }));
    // the outermost labels stay inside the chart
    const anchor = px > f.width - 24 ? "end" : "middle";
    g.append(svgText({ x: px, y: f.inner.bottom + 16, "text-anchor": anchor }, xFormat(t)));
  }
  return g;
}

// a polyline through the points; a null value breaks the line
function linePath(points, x, y) {
  let d = "";
  let pen = false;
  for (const [px, py] of points) {
    if (py === null || py === undefined) {
      pen = false;
      continue;
    }
    d += `${pen ? "L" : "M"}${x(px).toFixed(1)},${y(py).toFixed(1)}`;
    pen = true;
  }
  return d;
}

function legend(container, items) {
  replaceContent(
    container,
    ...items.map((item) => {
      // the swatch is a tiny SVG: the page's CSP allows no inline style attributes
      const shape = item.line ? { y: 5, width: 12, height: 3, rx: 1.5 } : { width: 12, height: 12, rx: 3 };
      const swatch = svg("svg", { width: 12, height: 12, "aria-hidden": "true" }, svg("rect", { ...shape, fill: item.color }));
      const entry = html("span", { class: "item" }, swatch, item.name);
      if (item.value !== undefined) entry.append(html("b", { text: item.value }));
      return entry;
    }),
  );
}

// --- line chart --------------------------------------------------------------------

function lineChart(container, { series, xDomain, xTicks, xFormat, yFormat = fmtTick, yFloor = 1, markers = [], dots = false }) {
  const f = frame(container, markers.length > 0);
  const x = scale(xDomain, [f.inner.left, f.inner.right]);
  const yMax = niceMax(series.flatMap((s) => s.points.map((p) => p[1])), yFloor);
  const y = scale([0, yMax], [f.inner.bottom, f.inner.top]);
  f.root.append(axes(f, x, y, xTicks, niceTicks(0, yMax, 4), xFormat, yFormat));
  f.root.append(markerLayer(f, x, markers));
  for (const s of series) {
    f.root.append(svg("path", { class: "series", "data-series": s.name, d: linePath(s.points, x, y), stroke: s.color, "stroke-width": s.width || 2, "stroke-dasharray": s.dash || null, opacity: s.opacity || null }));
    if (dots && s.dots) {
      const g = svg("g", { class: "points", "data-series": s.name });
      for (const p of s.points) {
        if (p[1] === null || p[1] === undefined) continue;
        g.append(svg("circle", { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.6, fill: s.color }, tooltip(p[2] || "")));
      }
      f.root.append(g);
    }
  }
  replaceContent(container, f.root);
}

// vertical lines for model announcements on an event-time axis; labels are staggered
// into rows so that announcements close in time stay readable
function markerLayer(f, x, markers) {
  const g = svg("g", { class: "markers" });
  const labelEnds = [];
  for (const m of markers) {
    const px = x(m.t);
    if (px < f.inner.left - 0.5 || px > f.inner.right + 0.5) continue;
    const kind = m.drift ? "drift" : m.action;
    const color = COLORS[kind] || COLORS.registered;
    const mark = svg("g", { class: `marker ${kind}`, "data-version": m.version });
    mark.append(svg("line", { x1: px, x2: px, y1: f.inner.top - MARKER_ROOM + 2, y2: f.inner.bottom, stroke: color, "stroke-width": m.drift ? 1.8 : 1.2, "stroke-dasharray": kind === "registered" ? "3 3" : null }));
    mark.append(tooltip(`${m.action} ${m.version}${m.trigger ? ` (${m.trigger})` : ""}${m.reason ? ` — ${m.reason}` : ""}`));
    if (kind !== "registered") {
      const text = m.drift ? `drift → ${shortVersion(m.version)}` : `★ ${shortVersion(m.version)}`;
      const width = text.length * 6 + 8;
      const anchorRight = px + width > f.inner.right;
      const start = anchorRight ? px - width : px;
      let row = 0;
      while (labelEnds[row] !== undefined && labelEnds[row] > start && row < 1) row += 1;
      labelEnds[row] = start + width;
      mark.append(svgText({ x: anchorRight ? px - 4 : px + 4, y: f.inner.top - MARKER_ROOM + 10 + row * 13, "text-anchor": anchorRight ? "end" : "start" }, text));
    }
    g.append(mark);
  }
  return g;
}

// versions are <task>-<UTC time>-<random hex>: the hex alone tells them apart on a
// chart; the lineage panel and every tooltip show the whole name
function shortVersion(version) {
  const match = /^[a-z]+-\d{8}T\d{6}Z-([0-9a-f]+)$/.exec(version);
  if (match) return match[1];
  return version.length > 18 ? `${version.slice(0, 17)}…` : version;
}

// --- stacked area chart --------------------------------------------------------------

function stackedShares(container, { versions, series, bucket, xDomain, xTicks, xFormat, markers, colorOf }) {
  const f = frame(container, markers.length > 0);
  const x = scale(xDomain, [f.inner.left, f.inner.right]);
  const y = scale([0, 1], [f.inner.bottom, f.inner.top]);
  f.root.append(axes(f, x, y, xTicks, [0, 0.25, 0.5, 0.75, 1], xFormat, (v) => `${v * 100}%`));
  const below = series.map(() => 0);
  const layers = svg("g", { class: "layers" });
  for (const version of versions) {
    const top = series.map((point, i) => below[i] + (point.shares[version] || 0));
    // each bucket is a flat step: shares are per bucket, not points in time
    let upper = "";
    let lower = "";
    series.forEach((point, i) => {
      const x0 = x(point.t).toFixed(1);
      const x1 = x(point.t + bucket).toFixed(1);
      upper += `${i === 0 ? "M" : "L"}${x0},${y(top[i]).toFixed(1)}L${x1},${y(top[i]).toFixed(1)}`;
      lower = `L${x1},${y(below[i]).toFixed(1)}L${x0},${y(below[i]).toFixed(1)}` + lower;
    });
    layers.append(svg("path", { class: "share", "data-version": version, d: `${upper}${lower}Z`, fill: colorOf(version), opacity: 0.85 }, tooltip(version)));
    top.forEach((v, i) => (below[i] = v));
  }
  f.root.append(layers);
  f.root.append(markerLayer(f, x, markers));
  replaceContent(container, f.root);
}

// --- panels -------------------------------------------------------------------------

const versionColors = new Map();
function colorOf(version) {
  if (!versionColors.has(version)) versionColors.set(version, PALETTE[versionColors.size % PALETTE.length]);
  return versionColors.get(version);
}

function setKpi(id, value, unit, sub, alert = false) {
  const tile = document.getElementById(id);
  const valueNode = tile.querySelector(".value");
  valueNode.replaceChildren(document.createTextNode(value));
  if (unit) valueNode.append(html("span", { class: "unit", text: unit }));
  tile.querySelector(".sub").textContent = sub;
  tile.classList.toggle("alert", alert);
}

function splitUnit(text) {
  const [value, unit] = text.split(" ");
  return [value, unit || ""];
}

function renderKpis(s) {
  const totals = s.totals;
  setKpi("kpi-events", fmtNumber(s.rates.events_per_s, 1), "", `${fmtCount(totals.events || 0)} events in total`);
  setKpi("kpi-predictions", fmtNumber(s.rates.predictions_per_s, 1), "", `${fmtCount(totals.predictions || 0)} predictions in total`);
  const total = s.latency.total_ms;
  setKpi("kpi-latency", ...splitUnit(fmtMs(total.p99)), `p50 ${fmtMs(total.p50)} · p95 ${fmtMs(total.p95)}`);
  const e2e = s.latency.end_to_end_ms;
  setKpi("kpi-e2e", ...splitUnit(fmtMs(e2e.p99)), `p50 ${fmtMs(e2e.p50)}`);
  const mae = s.mae;
  setKpi("kpi-mae", fmtNumber(mae.recent), "", `${mae.task} · event time`);
  document.querySelector("#kpi-mae .label").textContent = `MAE, last ${fmtBucket(mae.recent_s)}`;
  const nodes = s.lineage.nodes;
  const champion = s.lineage.champions[mae.task];
  setKpi("kpi-models", fmtCount(nodes.length), "", champion ? `champion ${shortVersion(champion)}` : "no champion announced");
  const dlq = totals.dlq || 0;
  setKpi("kpi-dlq", fmtCount(dlq), "", dlq ? `${s.dlq.length} kind${s.dlq.length === 1 ? "" : "s"} of failure` : "nothing failed", dlq > 0);
}

function renderRates(s) {
  const rates = s.rates;
  const now = s.generated_at;
  const points = (key) => rates.series.map((p) => [p.t + rates.bucket_s, p[key]]);
  legend(document.getElementById("legend-rates"), [
    { name: "events", color: COLORS.events, line: true, value: `${fmtNumber(rates.events_per_s, 1)}/s` },
    { name: "predictions", color: COLORS.predictions, line: true, value: `${fmtNumber(rates.predictions_per_s, 1)}/s` },
  ]);
  lineChart(document.getElementById("chart-rates"), {
    series: [
      { name: "events", color: COLORS.events, points: points("events") },
      { name: "predictions", color: COLORS.predictions, points: points("predictions") },
    ],
    ...recentAxis(now, rates.window_s),
  });
  const kinds = Object.entries(s.events_by_kind).sort((a, b) => b[1] - a[1]);
  replaceContent(document.getElementById("events-by-kind"), ...kinds.map(([kind, count]) => html("span", { class: "chip", "data-kind": kind }, `${kind} `, html("b", { text: fmtCount(count) }))));
}

// the last few minutes of wall time, a tick a minute, labelled relative to now
function recentAxis(now, window) {
  const ticks = [];
  for (let t = -window; t <= 0; t += 60) ticks.push(now + t);
  return {
    xDomain: [now - window, now],
    xTicks: ticks,
    xFormat: (t) => (Math.round(t - now) === 0 ? "now" : `−${Math.round((now - t) / 60)} min`),
  };
}

function renderLatency(s) {
  const latency = s.latency;
  const now = s.generated_at;
  const window = s.rates.window_s;
  const bucket = s.rates.bucket_s;
  const container = document.getElementById("chart-latency");
  legend(document.getElementById("legend-latency"), ["p50", "p95", "p99"].map((q) => ({ name: q, color: COLORS[q], line: true })));
  lineChart(container, {
    series: ["p99", "p95", "p50"].map((q) => ({ name: q, color: COLORS[q], points: latency.series.map((p) => [p.t + bucket, p[q]]) })),
    ...recentAxis(now, window),
  });
  const table = document.getElementById("latency-table");
  const row = (label, p) => html("tr", {}, html("td", { text: label }), ...["p50", "p95", "p99"].map((q) => html("td", { class: "num", text: fmtMs(p[q]) })), html("td", { class: "num", text: fmtCount(p.count) }));
  replaceContent(
    table,
    html("tr", {}, html("th", { text: "since the topics began" }), ...["p50", "p95", "p99", "predictions"].map((q) => html("th", { class: "num", text: q }))),
    row("total: received → scored", latency.total_ms),
    row("end to end: request → prediction", latency.end_to_end_ms),
  );
}

// Each hop of timings_ms (shared/timings.py), p50 within p99 on one linear scale:
// the longest bar is where the time goes.
function renderHops(s) {
  const container = document.getElementById("hops");
  const hops = s.latency.hops_ms;
  if (!hops.length) {
    replaceContent(container, empty("Waiting for predictions on rtml.predictions…"));
    return;
  }
  const barWidth = 160;
  const longest = Math.max(...hops.map((h) => h.p99 ?? 0), 1e-9);
  const width = (ms) => Math.max(((ms ?? 0) / longest) * barWidth, 2);
  const table = html("table", {}, html("tr", {}, ...["hop", "p50", "p99", ""].map((h, i) => html("th", { class: i === 1 || i === 2 ? "num" : "", text: h }))));
  for (const h of hops) {
    const bar = svg(
      "svg",
      { width: barWidth + 4, height: 12, class: "hop-bar" },
      svg("rect", { x: 0, y: 2, width: width(h.p99), height: 8, rx: 4, fill: "#fecaca" }, tooltip(`p99 ${fmtMs(h.p99)}`)),
      svg("rect", { x: 0, y: 2, width: width(h.p50), height: 8, rx: 4, fill: COLORS.p50 }, tooltip(`p50 ${fmtMs(h.p50)}`)),
    );
    table.append(
      html(
        "tr",
        { "data-hop": h.hop },
        html("td", { class: "name", text: h.hop }),
        html("td", { class: "num p50", text: fmtMs(h.p50) }),
        html("td", { class: "num p99", text: fmtMs(h.p99) }),
        html("td", {}, bar),
      ),
    );
  }
  replaceContent(container, table);
}

// MAE and traffic share share one event-time axis, so that a model switch lines up
// with the error it fixed
function eventDomain(s) {
  const starts = [...s.mae.series.map((p) => p.t), ...s.traffic.series.map((p) => p.t)];
  if (!starts.length) return null;
  const bucket = Math.max(s.mae.bucket_s, s.traffic.bucket_s);
  return [Math.min(...starts), Math.max(...starts) + bucket];
}

function taskMarkers(s) {
  return s.markers.filter((m) => m.t !== null && m.task === s.mae.task);
}

function renderMae(s, domain) {
  const mae = s.mae;
  document.getElementById("mae-bucket").textContent = fmtBucket(mae.bucket_s);
  const container = document.getElementById("chart-mae");
  const legendNode = document.getElementById("legend-mae");
  if (!domain || !mae.series.length) {
    legend(legendNode, []);
    replaceContent(container, empty("Waiting for labelled predictions on rtml.training.examples…"));
    return;
  }
  const versions = [...new Set(mae.series.flatMap((p) => Object.keys(p.by_version)))];
  const center = mae.bucket_s / 2;
  const withDate = domain[1] - domain[0] > 86400;
  const series = versions.map((v) => ({ name: v, color: colorOf(v), width: 1.4, opacity: 0.75, points: mae.series.map((p) => [p.t + center, p.by_version[v] ?? null]) }));
  series.push({
    name: "all",
    color: COLORS.mae,
    width: 2.4,
    dots: true,
    points: mae.series.map((p) => [p.t + center, p.mae, `${fmtEventTime(p.t, withDate)} · MAE ${fmtNumber(p.mae)} over ${p.n} labels`]),
  });
  const markers = taskMarkers(s);
  legend(legendNode, [
    { name: "all versions", color: COLORS.mae, line: true },
    ...versions.map((v) => ({ name: shortVersion(v), color: colorOf(v), line: true })),
    ...(markers.some((m) => m.drift) ? [{ name: "drift-triggered model", color: COLORS.drift, line: true }] : []),
  ]);
  lineChart(container, { series, xDomain: domain, xTicks: timeTicks(domain[0], domain[1], 8), xFormat: (t) => fmtEventTime(t, withDate), markers, dots: true });
}

function renderTraffic(s, domain) {
  const traffic = s.traffic;
  document.getElementById("traffic-bucket").textContent = fmtBucket(traffic.bucket_s);
  const container = document.getElementById("chart-traffic");
  const legendNode = document.getElementById("legend-traffic");
  if (!domain || !traffic.series.length) {
    legend(legendNode, []);
    replaceContent(container, empty("Waiting for predictions on rtml.predictions…"));
    return;
  }
  const latest = traffic.series[traffic.series.length - 1].shares;
  legend(legendNode, traffic.versions.map((v) => ({ name: shortVersion(v), color: colorOf(v), value: fmtPercent(latest[v] || 0) })));
  const withDate = domain[1] - domain[0] > 86400;
  stackedShares(container, {
    versions: traffic.versions,
    series: traffic.series,
    bucket: traffic.bucket_s,
    xDomain: domain,
    xTicks: timeTicks(domain[0], domain[1], 8),
    xFormat: (t) => fmtEventTime(t, withDate),
    markers: taskMarkers(s),
    colorOf,
  });
}

function renderPosteriors(s) {
  const container = document.getElementById("posteriors");
  if (!s.router.length) {
    replaceContent(container, empty("Waiting for a router checkpoint on rtml.router.state…"));
    return;
  }
  const blocks = [];
  for (const task of s.router) {
    blocks.push(
      html("div", { class: "task-head" }, html("span", { class: "title", text: `${task.task} · ${task.policy}` }), html("span", { class: "meta", text: `${fmtCount(task.decisions)} decisions` })),
    );
    const x = intervalScale(task.arms);
    const table = html("table", { class: "arms" }, html("tr", {}, ...["arm", "pulls", "mean", "95% interval", "share"].map((h, i) => html("th", { class: i === 0 || i === 3 ? "" : "num", text: h }))));
    for (const arm of task.arms) {
      const interval = arm.ci_low === null ? "too few rewards for an interval" : `${fmtNumber(arm.ci_low)} … ${fmtNumber(arm.ci_high)}`;
      table.append(
        html(
          "tr",
          { class: "arm", "data-arm": arm.arm, title: `${arm.arm}\nmean ${fmtNumber(arm.mean)}, 95% interval ${interval}` },
          html("td", { class: "name" }, versionSwatch(arm.arm), arm.arm === task.champion ? "★ " : "", shortVersion(arm.arm)),
          html("td", { class: "num", text: fmtCount(arm.pulls) }),
          html("td", { class: "num", text: fmtNumber(arm.mean) }),
          html("td", { class: "forest" }, intervalBar(arm, x)),
          html("td", { class: "num share", text: fmtPercent(arm.share) }),
        ),
      );
    }
    table.append(html("tr", { class: "axis-row" }, html("td", { colspan: 3 }), html("td", { class: "forest" }, intervalAxis(x)), html("td")));
    blocks.push(table);
  }
  replaceContent(container, ...blocks);
}

const FOREST_WIDTH = 130;

// one x scale for all arms of a task, so their intervals compare at a glance
function intervalScale(arms) {
  const values = arms.flatMap((a) => [a.ci_low, a.ci_high, a.mean]).filter((v) => v !== null);
  let lo = values.length ? Math.min(...values) : 0;
  let hi = values.length ? Math.max(...values) : 1;
  const padding = (hi - lo || Math.abs(hi) || 1) * 0.08;
  lo -= padding;
  hi += padding;
  const x = scale([lo, hi], [6, FOREST_WIDTH - 6]);
  x.domain = [lo, hi];
  return x;
}

// the arm's 95% interval as a bar, its mean as a dot (hollow without an interval)
function intervalBar(arm, x) {
  const color = colorOf(arm.arm);
  const root = svg("svg", { width: FOREST_WIDTH, height: 16, class: "interval", "data-arm": arm.arm });
  root.append(svg("line", { x1: 0, x2: FOREST_WIDTH, y1: 8, y2: 8, stroke: "#edf0f5" }));
  if (arm.ci_low !== null && arm.ci_high !== null) {
    root.append(svg("rect", { x: x(arm.ci_low), y: 4, width: Math.max(x(arm.ci_high) - x(arm.ci_low), 2), height: 8, rx: 4, fill: color, opacity: 0.3 }));
  }
  if (arm.mean !== null) {
    root.append(svg("circle", { cx: x(arm.mean), cy: 8, r: 4.5, fill: arm.ci_low === null ? "#fff" : color, stroke: color, "stroke-width": 2 }));
  }
  return root;
}

function intervalAxis(x) {
  const root = svg("svg", { width: FOREST_WIDTH, height: 14 });
  const ticks = niceTicks(x.domain[0], x.domain[1], 3);
  for (const t of ticks) root.append(svgText({ x: x(t), y: 10, "text-anchor": "middle" }, fmtNumber(t, 1)));
  return root;
}

function versionSwatch(version) {
  return svg("svg", { width: 10, height: 10, class: "vswatch", "aria-hidden": "true" }, svg("rect", { width: 10, height: 10, rx: 2.5, fill: colorOf(version) }));
}

// the announced versions as an indented tree, like `rtml models lineage`: a model
// trained from scratch at the left, each fine-tune one step in under its parent
function renderLineage(s) {
  const container = document.getElementById("lineage");
  const nodes = s.lineage.nodes;
  if (!nodes.length) {
    replaceContent(container, empty("Waiting for model announcements on rtml.models…"));
    return;
  }
  const byVersion = new Map(nodes.map((n) => [n.version, n]));
  const children = new Map();
  const roots = [];
  for (const n of nodes) {
    if (n.parent && n.parent !== n.version && byVersion.has(n.parent)) {
      if (!children.has(n.parent)) children.set(n.parent, []);
      children.get(n.parent).push(n);
    } else roots.push(n);
  }
  const rows = [];
  const placed = new Set();
  const visit = (start) => {
    const stack = [[start, 0]];
    while (stack.length) {
      const [n, depth] = stack.pop();
      if (placed.has(n.version)) continue; // announced parents that form a cycle: each node once
      placed.add(n.version);
      rows.push({ node: n, depth });
      for (const child of (children.get(n.version) || []).slice().reverse()) stack.push([child, depth + 1]);
    }
  };
  for (const n of roots) visit(n);
  for (const n of nodes) visit(n);

  const rowStep = 46;
  const nodeHeight = 38;
  // long fine-tuning chains stop indenting after a few steps, so that nodes stay readable
  const indentOf = (depth) => Math.min(depth, 6) * 22;
  const width = Math.max(container.clientWidth - 2, 260);
  const height = rows.length * rowStep;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}` });
  const rowOf = new Map(rows.map((r, i) => [r.node.version, i]));
  rows.forEach(({ node, depth }, i) => {
    if (depth === 0) return;
    const parentRow = rowOf.get(node.parent);
    const px = indentOf(depth - 1) + 11;
    const y0 = parentRow * rowStep + nodeHeight;
    const y1 = i * rowStep + nodeHeight / 2;
    root.append(svg("path", { class: "edge", "data-parent": node.parent, "data-child": node.version, d: `M${px},${y0}V${y1 - 6}Q${px},${y1} ${px + 6},${y1}H${indentOf(depth)}` }));
  });
  rows.forEach(({ node: n, depth }, i) => {
    const x = indentOf(depth);
    const nodeWidth = width - x - 1;
    const classes = ["node", n.champion ? "champion" : "", n.status === "retired" ? "retired" : ""].filter(Boolean).join(" ");
    const g = svg("g", { class: classes, "data-version": n.version, transform: `translate(${x},${i * rowStep + 0.5})` });
    g.append(tooltip(`${n.version}\n${n.status}${n.parent ? `, fine-tuned from ${n.parent}` : ", trained from scratch"}${n.trigger ? `\ntriggered by ${n.trigger}` : ""}${n.reason ? `\n${n.reason}` : ""}`));
    g.append(svg("rect", { class: "frame", width: nodeWidth, height: nodeHeight, rx: 7 }));
    g.append(svg("rect", { x: 3, y: 6, width: 4, height: nodeHeight - 12, rx: 2, fill: colorOf(n.version) }));
    g.append(svgText({ class: "version", x: 13, y: 16 }, n.version));
    const metrics = Object.entries(n.metrics).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${fmtNumber(v)}`);
    const detail = [n.status, n.parent ? "fine-tuned" : "from scratch", ...metrics.slice(0, 2)].join(" · ");
    g.append(svgText({ class: "detail", x: 13, y: 30 }, detail));
    // what triggered its training: error drift, input drift on <feature>, schedule...
    const badges = [n.champion ? ["champion", "★ champion"] : null, n.trigger ? [n.drift ? "drift" : "trigger", n.trigger] : null].filter(Boolean);
    let right = nodeWidth - 8;
    for (const [kind, label] of badges) {
      const text = svgText({ class: `badge ${kind}`, x: right, y: 30, "text-anchor": "end" }, label);
      g.append(text);
      right -= label.length * 6.2 + 8;
    }
    root.append(g);
  });
  replaceContent(container, root);
}

function renderFreshness(s) {
  const container = document.getElementById("freshness");
  if (!s.freshness.length) {
    replaceContent(container, empty("Waiting for feature vectors on rtml.predict.enriched…"));
    return;
  }
  const maxAge = Math.max(...s.freshness.map((f) => f.p95_s ?? 0), 1e-9);
  const table = html("table", {}, html("tr", {}, ...["feature", "mean", "p95", "", "defaulted"].map((h, i) => html("th", { class: i && i !== 3 ? "num" : "", text: h }))));
  for (const f of s.freshness) {
    // a log scale: streaming features are seconds old, batch ones hours
    const scaled = (age) => (Math.log1p(age) / Math.log1p(maxAge)) * 160;
    const bar = svg("svg", { width: 164, height: 12, class: "age-bar" }, svg("rect", { x: 0, y: 2, width: 160, height: 8, rx: 4, fill: "#f1f3f8" }));
    if (f.p95_s !== null) {
      bar.append(
        svg("rect", { x: 0, y: 2, width: Math.max(scaled(f.p95_s), 2), height: 8, rx: 4, fill: "#c7d2fe" }, tooltip(`p95 ${fmtAge(f.p95_s)}`)),
        svg("rect", { x: Math.max(scaled(f.mean_s) - 1.5, 0), y: 0, width: 3, height: 12, rx: 1.5, fill: COLORS.events }, tooltip(`mean ${fmtAge(f.mean_s)}`)),
      );
    }
    table.append(
      html(
        "tr",
        { "data-feature": f.feature },
        html("td", { class: "name", text: f.feature }),
        html("td", { class: "num mean", text: fmtAge(f.mean_s) }),
        html("td", { class: "num p95", text: fmtAge(f.p95_s) }),
        html("td", {}, bar),
        html("td", { class: "num", text: fmtPercent(f.defaulted_share) }),
      ),
    );
  }
  replaceContent(container, table);
}

function renderDlq(s) {
  const container = document.getElementById("dlq");
  if (!s.dlq.length) {
    replaceContent(container, html("div", { class: "ok", text: "✓ Nothing has been dead-lettered." }));
    return;
  }
  const table = html("table", {}, html("tr", {}, ...["service", "reason", "count", "latest error"].map((h, i) => html("th", { class: i === 2 ? "num" : "", text: h }))));
  for (const d of s.dlq) {
    const error = html("td", { class: "error", text: `${d.last_error_class}: ${d.last_error}`, title: d.last_error });
    table.append(html("tr", { "data-service": d.service, "data-reason": d.reason }, html("td", { text: d.service }), html("td", {}, html("span", { class: "tag bad", text: d.reason })), html("td", { class: "num count", text: fmtCount(d.count) }), error));
  }
  replaceContent(container, table);
}

// --- wiring --------------------------------------------------------------------------

let latest = null;

function render(snapshot) {
  latest = snapshot;
  // versions keep their colours: lineage order first, then whatever else shows up
  for (const n of snapshot.lineage.nodes) colorOf(n.version);
  for (const v of snapshot.traffic.versions) colorOf(v);
  const domain = eventDomain(snapshot);
  renderKpis(snapshot);
  renderRates(snapshot);
  renderLatency(snapshot);
  renderHops(snapshot);
  renderMae(snapshot, domain);
  renderTraffic(snapshot, domain);
  renderPosteriors(snapshot);
  renderLineage(snapshot);
  renderFreshness(snapshot);
  renderDlq(snapshot);
  const at = new Date(snapshot.generated_at * 1000);
  document.getElementById("updated").textContent = `updated ${at.toLocaleTimeString()}`;
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
}

function setConnection(state, label) {
  const pill = document.getElementById("connection");
  pill.className = `pill ${state}`;
  pill.querySelector(".label").textContent = label;
}

function connect() {
  const source = new EventSource("/events/stream");
  source.addEventListener("open", () => setConnection("live", "live"));
  source.addEventListener("error", () => setConnection("reconnecting", "reconnecting…"));
  source.addEventListener("snapshot", (event) => render(JSON.parse(event.data)));
}

window.addEventListener("resize", () => latest && render(latest));
connect();
