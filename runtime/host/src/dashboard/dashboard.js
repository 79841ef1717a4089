// The aifn dashboard: polls the admin API and /metrics of the host that served this page, and
// draws what it reads as plain SVG. The charts keep the last five minutes the tab has seen; drift,
// accuracy, alerts and the audit history come from the host's own records.
"use strict";

const WINDOW_MS = 5 * 60 * 1000;
const TICK_MS = 1000;
const SVG = "http://www.w3.org/2000/svg";
const COLORS = ["#2f6fdb", "#d64545", "#2c9a5b", "#c7881c", "#7b55c7"];

// The admin token travels in the URL's fragment, which the browser never sends; it is kept in this
// tab's session storage and taken out of the address bar.
function takeToken() {
  const found = location.hash.match(/token=([^&]+)/);
  if (found) {
    sessionStorage.setItem("aifn-admin-token", decodeURIComponent(found[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("aifn-admin-token");
}

const token = takeToken();

async function get(path, asText) {
  const reply = await fetch(path, {
    headers: { authorization: "Bearer " + token },
    cache: "no-store",
  });
  if (!reply.ok) {
    throw new Error(`${path}: ${reply.status} ${await reply.text()}`);
  }
  return asText ? reply.text() : reply.json();
}

// --- /metrics -----------------------------------------------------------------------------

// One sample per line: `name{label="value",...} number`, with an optional exemplar after it.
// Label values may hold braces (route templates), so the label set is matched pair by pair.
const SAMPLE = /^([a-zA-Z_:][\w:]*)(?:\{((?:[a-zA-Z_]\w*="(?:[^"\\]|\\.)*",?)*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_]\w*)="((?:[^"\\]|\\.)*)"/g;

function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (line === "" || line[0] === "#") continue;
    const found = line.match(SAMPLE);
    if (!found) continue;
    const labels = {};
    for (const pair of (found[2] || "").matchAll(LABEL)) labels[pair[1]] = pair[2];
    samples.push({ name: found[1], labels, value: Number(found[3]) });
  }
  return samples;
}

// The sum of a metric's samples for one function, with an optional filter on the labels.
function total(samples, name, fn, keep) {
  let sum = 0;
  for (const s of samples) {
    if (s.name === name && s.labels.function === fn && (!keep || keep(s.labels))) sum += s.value;
  }
  return sum;
}

// The counters each function's charts are rates of.
function counters(samples, fn) {
  return {
    requests: total(samples, "aifn_requests_total", fn),
    errors: total(samples, "aifn_requests_total", fn, (l) => Number(l.status) >= 500),
    hits: total(samples, "aifn_cache_lookups_total", fn, (l) => l.outcome === "hit"),
    misses: total(samples, "aifn_cache_lookups_total", fn, (l) => l.outcome === "miss"),
    limited: total(samples, "aifn_rate_limited_total", fn),
    shed: total(samples, "aifn_overloaded_total", fn),
    batchSum: total(samples, "aifn_batch_size_sum", fn),
    batchCount: total(samples, "aifn_batch_size_count", fn),
  };
}

// --- what the tab remembers ---------------------------------------------------------------

class Series {
  constructor() { this.points = []; }
  add(t, v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return;
    this.points.push([t, v]);
    while (this.points.length && this.points[0][0] < t - WINDOW_MS) this.points.shift();
  }
}

const SERIES = ["requests", "errors", "p50", "p95", "p99", "replicas", "ceiling", "batch", "hits",
  "limited", "shed", "accuracy"];

const functions = new Map(); // name → { card, series, counters, at }

function remember(name) {
  if (!functions.has(name)) {
    const series = {};
    for (const s of SERIES) series[s] = new Series();
    functions.set(name, { card: makeCard(name), series, counters: null, at: 0 });
  }
  return functions.get(name);
}

function record(entry, status, report, samples, now) {
  const s = entry.series;
  const c = counters(samples, status.name);
  if (entry.counters) {
    const seconds = (now - entry.at) / 1000;
    const d = (k) => Math.max(0, c[k] - entry.counters[k]);
    s.requests.add(now, d("requests") / seconds);
    s.errors.add(now, d("errors") / seconds);
    s.limited.add(now, d("limited") / seconds);
    s.shed.add(now, d("shed") / seconds);
    const lookups = d("hits") + d("misses");
    s.hits.add(now, lookups > 0 ? d("hits") / lookups : null);
    const batches = d("batchCount");
    s.batch.add(now, batches > 0 ? d("batchSum") / batches : null);
  }
  entry.counters = c;
  entry.at = now;
  if (status.latency_ms) {
    s.p50.add(now, status.latency_ms.p50);
    s.p95.add(now, status.latency_ms.p95);
    s.p99.add(now, status.latency_ms.p99);
  }
  const serving = status.fallback && status.fallback.active ? status.fallback.load : status.load;
  s.replicas.add(now, serving.instances);
  s.ceiling.add(now, status.scaling.ceiling);
  const stable = report && report.versions.find((v) => v.version === status.version);
  if (stable) s.accuracy.add(now, stable.metrics.accuracy);
}

// --- drawing ------------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children) node.append(child);
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function format(v, unit) {
  if (v === null || v === undefined) return "–";
  if (unit === "%") return (v * 100).toFixed(v >= 0.995 ? 0 : 1) + "%";
  const digits = Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2;
  return v.toFixed(digits) + (unit ? " " + unit : "");
}

// A line chart of the last five minutes. `lines` are [label, Series]; `target` a dashed level;
// `ticks` times to mark (the autoscaler's resizes).
function chart(figure, lines, opts) {
  const W = 300, H = 110, L = 34, B = 14, now = Date.now();
  const box = figure.querySelector("svg");
  box.replaceChildren();
  let top = opts.max || 0;
  for (const [, series] of lines) for (const [, v] of series.points) top = Math.max(top, v);
  if (opts.target) top = Math.max(top, opts.target);
  top = top > 0 ? top * 1.15 : 1;
  const x = (t) => L + ((t - (now - WINDOW_MS)) / WINDOW_MS) * (W - L - 2);
  const y = (v) => H - B - (v / top) * (H - B - 4);
  for (const f of [0, 0.5, 1]) {
    box.append(svg("line", { class: "grid", x1: L, x2: W, y1: y(top * f / 1.15), y2: y(top * f / 1.15) }));
    const label = svg("text", { x: L - 3, y: y(top * f / 1.15) + 3, "text-anchor": "end" });
    label.textContent = format(top * f / 1.15, opts.unit === "%" ? "%" : "");
    box.append(label);
  }
  for (const [text, at] of [["−5 min", L], ["now", W - 2]]) {
    const label = svg("text", { x: at, y: H - 2, "text-anchor": at === L ? "start" : "end" });
    label.textContent = text;
    box.append(label);
  }
  if (opts.target) {
    box.append(svg("line", { class: "target", x1: L, x2: W, y1: y(opts.target), y2: y(opts.target) }));
  }
  for (const t of opts.ticks || []) {
    if (t >= now - WINDOW_MS) box.append(svg("line", { class: "tick", x1: x(t), x2: x(t), y1: 4, y2: H - B }));
  }
  lines.forEach(([, series], i) => {
    const points = series.points.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    box.append(svg("polyline", { points, stroke: COLORS[i % COLORS.length] }));
  });
  const first = lines[0][1].points;
  box.dataset.points = String(first.length);
  box.dataset.last = first.length ? String(first[first.length - 1][1]) : "";
  figure.querySelector(".now").textContent = lines
    .map(([label, series]) => {
      const p = series.points;
      return (lines.length > 1 ? label + " " : "") + format(p.length ? p[p.length - 1][1] : null, opts.unit);
    })
    .join(" · ");
}

function makeFigure(name, title, legend) {
  const box = svg("svg", { viewBox: "0 0 300 110", "data-chart": name, role: "img" });
  const keys = el("div", { class: "legend" });
  legend.forEach((label, i) => {
    const swatch = el("i");
    swatch.style.background = COLORS[i % COLORS.length];
    keys.append(el("span", {}, swatch, label));
  });
  return el("figure", { "data-figure": name },
    el("figcaption", {}, title, el("span", { class: "now" }, "–")), box, keys);
}

// The reference and current shares of each bin of one feature, side by side.
function histogram(feature) {
  const W = 240, H = 90, B = 12;
  const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, "data-feature": feature.name });
  const top = Math.max(0.01, ...feature.reference, ...feature.current);
  const n = feature.bins.length || 1;
  const slot = W / n;
  feature.bins.forEach((bin, i) => {
    [[feature.reference[i], COLORS[0]], [feature.current[i], COLORS[1]]].forEach(([share, color], k) => {
      const h = ((share || 0) / top) * (H - B - 4);
      box.append(svg("rect", {
        x: i * slot + 1 + k * (slot - 2) / 2, y: H - B - h, width: Math.max(1, (slot - 2) / 2 - 1), height: h, fill: color,
      }));
    });
  });
  const label = svg("text", { x: 0, y: H - 1 });
  label.textContent = `${feature.bins[0] || ""} … ${feature.bins[n - 1] || ""}`;
  box.append(label);
  const state = feature.drifting ? el("span", { class: "badge bad" }, "drifting") : "";
  return el("figure", {},
    el("figcaption", {}, feature.name, el("span", { class: "now" }, `PSI ${format(feature.psi)} `, state)),
    box,
    el("div", { class: "legend" }, legendKey(0, "reference"), legendKey(1, "current window")));
}

function legendKey(i, label) {
  const swatch = el("i");
  swatch.style.background = COLORS[i];
  return el("span", {}, swatch, label);
}

function table(headings, rows) {
  if (!rows.length) return el("p", { class: "empty" }, "none");
  return el("table", {},
    el("thead", {}, el("tr", {}, ...headings.map((h) => el("th", {}, h)))),
    el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c) => el("td", {}, c === undefined || c === null ? "" : String(c)))))));
}

function time(ms) {
  return new Date(ms).toLocaleTimeString();
}

function makeCard(name) {
  const card = el("section", { class: "function", "data-function": name });
  card.append(
    el("h2", {}, el("span", { class: "name" }, name), el("span", { class: "badges" })),
    el("div", { class: "facts" }),
    el("div", { class: "rollout", hidden: "" }),
    el("div", { class: "charts" },
      makeFigure("requests", "Requests/s and 5xx/s", ["requests", "5xx"]),
      makeFigure("latency", "Latency (ms) against target_latency", ["p50", "p95", "p99"]),
      makeFigure("replicas", "Replicas (ticks: the autoscaler's resizes)", ["replicas", "ceiling"]),
      makeFigure("batch", "Mean batch size", ["requests per run"]),
      makeFigure("cache", "Cache hit rate", ["hits ÷ lookups"]),
      makeFigure("refused", "Rate-limited and shed per second", ["rate-limited", "shed"]),
      makeFigure("drift", "Drift score (largest PSI)", ["drift score"]),
      makeFigure("accuracy", "Accuracy of labelled answers", ["accuracy"])),
    el("h3", {}, "Versions"), el("div", { class: "versions" }),
    el("h3", {}, "Autoscaler's last resizes"), el("div", { class: "decisions" }),
    el("h3", {}, "Monitored features: reference and current"), el("div", { class: "features" }),
    el("h3", {}, "Alerts"), el("div", { class: "alerts" }),
    el("h3", {}, "Audit history"), el("div", { class: "history" }));
  return card;
}

function draw(entry, status, versions, report, history) {
  const card = entry.card;
  const s = entry.series;
  const stable = report && report.versions.find((v) => v.version === status.version);
  const drift = stable && stable.drift;

  const badges = card.querySelector(".badges");
  badges.replaceChildren(el("span", { class: "badge" }, `v${status.version}`));
  if (status.fallback && status.fallback.active) badges.append(el("span", { class: "badge warn" }, "on the fallback model"));
  if (drift && drift.drifting.length) badges.append(el("span", { class: "badge bad" }, "drifting: " + drift.drifting.join(", ")));
  if (status.rollout) badges.append(el("span", { class: "badge" }, `rollout to v${status.rollout.candidate}`));

  const p = status.placement;
  const fact = (label, value) => el("span", {}, label + " ", el("b", {}, String(value)));
  card.querySelector(".facts").replaceChildren(
    fact("endpoints", status.endpoints.map((e) => `${e.method} ${e.route} (${e.auth})`).join(", ")),
    fact("model", status.model_id),
    fact("device", p.device),
    fact("replicas", `${status.load.instances} of ${status.scaling.min}–${status.scaling.ceiling}`),
    fact("running", status.load.running),
    fact("queued", status.load.queued),
    fact("batch up to", p.max_batch_size));

  const rollout = card.querySelector(".rollout");
  if (status.rollout) {
    const r = status.rollout;
    const phase = r.phase.phase === "step" ? `step ${r.phase.index + 1} of ${r.steps.length}` : r.phase.phase;
    const figures = (f) => `${f.requests} requests, ${f.errors} 5xx, p95 ${format(f.p95_ms, "ms")}`;
    rollout.replaceChildren(
      el("div", {}, el("b", {}, `rollout to v${r.candidate}`), ` from v${r.previous}: ${r.strategy}, ${phase}, candidate takes ${r.candidate_share}% of traffic`, r.frozen ? " — frozen by a monitoring alert" : ""),
      el("div", {}, `stable v${r.previous}: ${figures(r.stable_figures)}; candidate v${r.candidate}: ${figures(r.candidate_figures)}`),
      el("div", { class: "muted" }, r.note));
    rollout.hidden = false;
  } else {
    rollout.hidden = true;
    rollout.replaceChildren();
  }

  const figure = (name) => card.querySelector(`figure[data-figure="${name}"]`);
  const target = status.spec.scaling && status.spec.scaling.target_latency;
  chart(figure("requests"), [["requests", s.requests], ["5xx", s.errors]], { unit: "/s" });
  chart(figure("latency"), [["p50", s.p50], ["p95", s.p95], ["p99", s.p99]], { unit: "ms", target: target ? millis(target) : null });
  const decisions = status.scaling.decisions || [];
  chart(figure("replicas"), [["replicas", s.replicas], ["ceiling", s.ceiling]], { ticks: decisions.map((d) => d.at_ms) });
  chart(figure("batch"), [["mean", s.batch]], { max: 1 });
  chart(figure("cache"), [["hit rate", s.hits]], { unit: "%", max: 1 });
  chart(figure("refused"), [["rate-limited", s.limited], ["shed", s.shed]], { unit: "/s" });
  const driftSeries = new Series();
  for (const h of (drift && drift.history) || []) driftSeries.add(h.at_ms, h.drift_score);
  chart(figure("drift"), [["drift score", driftSeries]], { target: drift ? drift.thresholds.psi : null });
  chart(figure("accuracy"), [["accuracy", s.accuracy]], { unit: "%", max: 1 });

  card.querySelector(".versions").replaceChildren(table(
    ["version", "role", "created", "deployed by", "model"],
    versions.versions.slice().reverse().map((v) => [`v${v.version}`, v.role || "kept", time(v.created_at * 1000), v.deployed_by, v.model.digest.slice(0, 19)])));
  card.querySelector(".decisions").replaceChildren(table(
    ["time", "pool", "from", "to", "reason"],
    decisions.slice().reverse().slice(0, 8).map((d) => [time(d.at_ms), d.variant, d.from, d.to, d.reason + (d.panic ? " (panic)" : "")])));
  const features = card.querySelector(".features");
  const perFeature = (drift && drift.per_feature) || [];
  features.replaceChildren(...(perFeature.length ? perFeature.filter((f) => f.reference_ready).map(histogram) : [el("p", { class: "empty" }, drift ? "no window evaluated yet" : "not monitored")]));
  const alerts = [];
  for (const v of (report && report.versions) || []) {
    for (const a of v.alerts || []) alerts.push([time(a.at_ms), `v${v.version}`, a.type, a.state, a.severity, (a.features || []).join(", ")]);
  }
  card.querySelector(".alerts").replaceChildren(table(["time", "version", "type", "state", "severity", "features"], alerts.reverse()));
  card.querySelector(".history").replaceChildren(table(
    ["time", "action", "version", "serving", "actor", "reason"],
    history.events.slice().reverse().slice(0, 12).map((e) => [time(e.at_ms), e.action, e.version ? `v${e.version}` : "", e.serving ? `v${e.serving}` : "", e.actor, e.reason])));
}

// `50ms`, `1.5s`, `2m` as milliseconds.
function millis(text) {
  const found = String(text).match(/^([\d.]+)\s*(us|µs|ms|s|m)?$/);
  if (!found) return null;
  const scale = { us: 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60000 }[found[2] || "ms"];
  return Number(found[1]) * scale;
}

// --- the loop -----------------------------------------------------------------------------

async function tick() {
  const [list, metrics] = await Promise.all([get("/admin/v1/functions"), get("/metrics", true)]);
  const samples = parseMetrics(metrics);
  const now = Date.now();
  const main = document.getElementById("functions");
  const names = new Set(list.functions.map((f) => f.name));
  for (const [name, entry] of functions) {
    if (!names.has(name)) {
      entry.card.remove();
      functions.delete(name);
    }
  }
  // Every function's views at once; cards are added in the list's order.
  const views = await Promise.all(list.functions.map((summary) => {
    const base = `/admin/v1/functions/${encodeURIComponent(summary.name)}`;
    return Promise.all([
      get(base), get(`${base}/versions`), get(`${base}/monitor`), get(`${base}/history`),
    ]);
  }));
  list.functions.forEach((summary, i) => {
    const [status, versions, report, history] = views[i];
    const entry = remember(summary.name);
    record(entry, status, report, samples, now);
    draw(entry, status, versions, report, history);
    if (!entry.card.isConnected) main.append(entry.card);
  });
  if (!list.functions.length) main.replaceChildren(el("p", { class: "empty" }, "No function is deployed. `aifn deploy function.yaml` puts one here."));
  const failed = document.getElementById("failed");
  failed.hidden = !list.failed.length;
  failed.textContent = list.failed.map((f) => `${f.name} failed to load: ${f.error}`).join("; ");
  document.getElementById("host-status").textContent = `${list.functions.length} functions · updated ${time(now)}`;
}

async function loop(ticks) {
  try {
    await tick();
  } catch (e) {
    document.getElementById("host-status").textContent = "cannot read the host: " + e.message;
  }
  // The second reading comes soon after the first, so that rates have two points at once.
  setTimeout(() => loop(ticks + 1), ticks === 0 ? 250 : TICK_MS);
}

if (token) {
  loop(0);
} else {
  document.getElementById("no-token").hidden = false;
  document.getElementById("host-status").textContent = "no token";
}
