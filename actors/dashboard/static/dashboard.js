// The Veilshare dashboard page: fetches /api/state every second and draws it.
// Plain DOM and SVG, no library. Every value from the nodes is set as text (textContent,
// attributes), never parsed as HTML.
"use strict";

const REFRESH_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const COLORS = ["#3b6fd4", "#e07b24", "#2aa198", "#b84c9c", "#6c8a2b", "#c44d4d", "#5b5bb8", "#8d6e3f"];
const color = (id) => COLORS[(id - 1) % COLORS.length];

function el(tag, attrs = {}, text = null) {
  const e = tag.startsWith("svg:") ? document.createElementNS(SVG_NS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== null) e.textContent = String(text);
  return e;
}

function ago(seconds) {
  const s = Math.max(0, Math.round(seconds));
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], { hour12: false });
}

function renderBanner(state, fetchError) {
  const banner = document.getElementById("banner");
  let text = "";
  if (fetchError) text = `The dashboard process does not answer (${fetchError}): is it still running?`;
  else if (state.polls > 0 && state.answering === 0)
    text = "No node answers: the cloud is not running or not reachable. Start it with: python -m actors.server";
  banner.hidden = text === "";
  banner.textContent = text;
  banner.dataset.visible = text === "" ? "no" : "yes";
}

function renderSummary(state) {
  const holder = document.getElementById("holder");
  holder.dataset.holder = state.holder;
  holder.textContent = state.holder ? `node ${state.holder}` : "nobody known";
  document.getElementById("answering").textContent = `${state.answering} of ${state.nodes.length}`;
  document.getElementById("users").textContent = state.users;
  const total = state.nodes.reduce((sum, n) => sum + (n.state === "unreachable" ? 0 : n.rate), 0);
  document.getElementById("total-rate").textContent = total.toFixed(1);
  document.getElementById("updated").textContent = state.polls
    ? `polled at ${clock(state.last_poll)}` : "waiting for the first poll…";
}

function renderNodes(state) {
  const body = document.querySelector("#nodes tbody");
  const rows = state.nodes.map((n) => {
    const tr = el("tr", { "data-node": n.id, "data-state": n.state, "data-pid": n.pid });
    const name = el("td");
    name.append(el("span", { class: "node-dot", style: `background:${color(n.id)}` }), `node ${n.id}`);
    const st = el("td");
    const label = n.state === "down" ? "down (token)" : n.state;
    st.append(el("span", { class: `state ${n.state}` }, label), " ",
      el("span", { class: "muted" }, state.polls ? `for ${ago(state.now - n.since)}` : ""));
    const answered = n.state !== "unreachable" && n.state !== "unknown";
    const cells = [n.pid || "-", answered ? (n.majority ? "yes" : "no") : "-",
      answered ? n.rate.toFixed(1) : "-", n.served, n.cached, n.users, n.pending, n.restarts, n.address];
    tr.append(name, st, ...cells.map((c) => el("td", {}, c)));
    return tr;
  });
  body.replaceChildren(...rows);
}

// The time axis shared by both charts: from max(now - window, first poll - a little) to now,
// at least a minute wide.
function axis(state, width, left, right) {
  const span = Math.min(state.window_s, Math.max(60, state.now - (state.started || state.now)));
  const t0 = state.now - span;
  const x = (t) => left + ((Math.max(t, t0) - t0) / span) * (width - left - right);
  return { t0, span, x };
}

function timeTicks(svg, ax, top, bottom, left, width, right) {
  const step = ax.span > 180 ? 60 : ax.span > 90 ? 30 : 15;
  for (let back = 0; back <= ax.span; back += step) {
    const xx = ax.x(ax.t0 + ax.span - back);
    svg.append(el("svg:line", { class: "grid", x1: xx, x2: xx, y1: top, y2: bottom }));
    svg.append(el("svg:text", { x: xx, y: bottom + 14, "text-anchor": back === 0 ? "end" : "middle" },
      back === 0 ? "now" : `-${ago(back)}`));
  }
}

function renderTimeline(state) {
  const svg = document.getElementById("timeline");
  const width = svg.clientWidth || 1200, left = 80, right = 10, rowH = 24, gap = 8;
  const rows = 1 + state.nodes.length;
  const height = rows * (rowH + gap) + 24;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", height);
  svg.replaceChildren();
  const ax = axis(state, width, left, right);
  document.getElementById("span").textContent = `(last ${ago(ax.span)})`;
  timeTicks(svg, ax, 0, rows * (rowH + gap), left, width, right);
  // token row: one segment per holder
  svg.append(el("svg:text", { class: "rowlabel", x: 4, y: rowH * 0.7 }, "token"));
  for (const seg of state.token) {
    const end = seg.end === null ? state.now : seg.end;
    if (end < ax.t0) continue;
    const x1 = ax.x(seg.start), x2 = Math.max(ax.x(end), x1 + 1);
    const g = el("svg:g", { class: "holder", "data-node": seg.node });
    g.append(el("svg:rect", { x: x1, y: 2, width: x2 - x1, height: rowH - 4, rx: 3,
      fill: seg.node ? color(seg.node) : "#c9c9cf" }));
    const label = x2 - x1 > 52 ? (seg.node ? `node ${seg.node}` : "?") : x2 - x1 > 14 ? (seg.node || "?") : "";
    if (label !== "") g.append(el("svg:text", { x: x1 + 4, y: rowH * 0.68 }, label));
    svg.append(g);
  }
  // one row per node: its periods away from "up"
  state.nodes.forEach((n, i) => {
    const y = (i + 1) * (rowH + gap);
    svg.append(el("svg:text", { class: "rowlabel", x: 4, y: y + rowH * 0.7 }, `node ${n.id}`));
    svg.append(el("svg:rect", { x: left, y: y + rowH / 2 - 1, width: width - left - right, height: 2, fill: color(n.id), opacity: 0.35 }));
    for (const p of state.periods.filter((q) => q.node === n.id)) {
      const end = p.end === null ? state.now : p.end;
      if (end < ax.t0) continue;
      const x1 = ax.x(p.start), x2 = Math.max(ax.x(end), x1 + 3);
      const r = el("svg:rect", { class: `period ${p.state}`, "data-node": n.id, "data-state": p.state,
        x: x1, y: y + 2, width: x2 - x1, height: rowH - 4, rx: 2 });
      r.append(el("svg:title", {}, `node ${n.id} ${p.state} from ${clock(p.start)}` + (p.end === null ? " (now)" : ` to ${clock(p.end)}`)));
      svg.append(r);
    }
  });
}

function renderRates(state) {
  const svg = document.getElementById("rates");
  const width = svg.clientWidth || 1200, left = 80, right = 10, top = 8, height = 150, bottom = height - 22;
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("height", height);
  svg.replaceChildren();
  const ax = axis(state, width, left, right);
  let max = 1;
  for (const s of state.rates) for (const [t, r] of s.points) if (r !== null && t >= ax.t0) max = Math.max(max, r);
  const niceMax = Math.pow(10, Math.floor(Math.log10(max))) * Math.ceil(max / Math.pow(10, Math.floor(Math.log10(max))));
  const y = (r) => bottom - (r / niceMax) * (bottom - top);
  timeTicks(svg, ax, top, bottom, left, width, right);
  for (const v of [0, niceMax / 2, niceMax]) {
    svg.append(el("svg:line", { class: "grid", x1: left, x2: width - right, y1: y(v), y2: y(v) }));
    svg.append(el("svg:text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, `${+v.toFixed(1)}/s`));
  }
  for (const s of state.rates) {
    let d = "", pen = false;
    for (const [t, r] of s.points) {
      if (t < ax.t0 || r === null) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${ax.x(t).toFixed(1)},${y(r).toFixed(1)}`;
      pen = true;
    }
    if (d) svg.append(el("svg:path", { d, fill: "none", stroke: color(s.node), "stroke-width": 2, "data-node": s.node }));
  }
  state.nodes.forEach((n, i) => {
    svg.append(el("svg:circle", { cx: 10, cy: top + 10 + i * 16, r: 4, fill: color(n.id) }));
    svg.append(el("svg:text", { x: 18, y: top + 14 + i * 16 }, `node ${n.id}`));
  });
}

function renderEvents(state) {
  const list = document.getElementById("events");
  list.replaceChildren(...state.events.slice().reverse().slice(0, 30)
    .map((e) => el("li", {}, `${clock(e.t)}  ${e.text}`)));
}

function render(state) {
  renderBanner(state, null);
  renderSummary(state);
  renderNodes(state);
  renderTimeline(state);
  renderRates(state);
  renderEvents(state);
  document.body.dataset.polls = state.polls;
}

async function refresh() {
  try {
    const response = await fetch("/api/state", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    render(await response.json());
  } catch (err) {
    renderBanner(null, err.message || String(err));
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
