// Metric charts on uPlot: zoom (drag to zoom, double-click to reset), log scale, smoothing (EMA),
// x = step or time, and restart markers: a dashed line where each resumed attempt began (the step of
// the checkpoint it restored, or its start time), labelled with why the previous attempt ended.
import * as api from "./api.js";
import {esc, num, when} from "./format.js";

export const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563"];

// Exponential moving average that skips gaps; alpha 0 = no smoothing.
export function smooth(y, alpha) {
  if (!alpha) return Array.from(y, (v) => (isFinite(v) ? v : null));
  const out = new Array(y.length); let acc = null;
  for (let i = 0; i < y.length; i++) {
    const v = y[i];
    if (!isFinite(v)) { out[i] = null; continue; }
    acc = acc == null ? v : alpha * acc + (1 - alpha) * v; out[i] = acc;
  }
  return out;
}

// One marker per resumed attempt: {attempt, x, step, label, title}.
export function restartMarkers(attempts, xMode) {
  const out = [];
  for (let i = 1; i < attempts.length; i++) {
    const a = attempts[i], prev = attempts[i - 1];
    const step = a.restored_steps ?? 0;
    const why = prev.state + (prev.message ? `: ${prev.message}` : "");
    out.push({attempt: a.number, step, x: xMode === "time" ? a.started_at : step,
              label: `#${a.number} ← step ${step}`,
              title: `attempt ${a.number} began ${when(a.started_at)}, resumed from ` +
                     (a.restored_steps == null ? "scratch (no checkpoint)" : `checkpoint step ${a.restored_steps}`) +
                     `; attempt ${prev.number} ended: ${why}`});
  }
  return out;
}

function markerPlugin(getMarkers) {
  const draw = (u) => {
    const holder = u.root.querySelector(".u-over");
    holder.querySelectorAll(".restart-marker").forEach((m) => m.remove());
    const ctx = u.ctx; ctx.save(); ctx.strokeStyle = "#dc2626"; ctx.setLineDash([5, 4]); ctx.lineWidth = 2;
    for (const m of getMarkers()) {
      const left = u.valToPos(m.x, "x");
      if (!(left >= 0 && left <= u.over.clientWidth)) continue;
      const cx = Math.round(u.valToPos(m.x, "x", true));
      ctx.beginPath(); ctx.moveTo(cx, u.bbox.top); ctx.lineTo(cx, u.bbox.top + u.bbox.height); ctx.stroke();
      const el = document.createElement("div");
      el.className = "restart-marker"; el.style.left = left + "px"; el.style.height = u.over.clientHeight + "px";
      el.dataset.attempt = m.attempt; el.dataset.step = m.step; el.title = m.title;
      el.innerHTML = `<span>${esc(m.label)}</span>`;
      holder.appendChild(el);
    }
    ctx.restore();
  };
  return {hooks: {draw}};
}

// A chart of one metric of one trial (or several trials for compare) inside `el`.
export class MetricChart {
  constructor(el, {ref, group, name, attempts = [], view}) {
    Object.assign(this, {el, ref, group, name, attempts, view, data: null, plot: null, zoomed: null});
    el.classList.add("chart"); el.dataset.metric = `${group}/${name}`;
    el.innerHTML = `<div class="title">${esc(group)} / ${esc(name)}</div><div class="plot"></div><div class="note muted"></div>`;
  }

  width() { return Math.max(300, this.el.clientWidth - 16); }

  async load() {
    const [lo, hi] = this.zoomed || [null, null];
    const {value, changed} = await api.series(this.ref, this.group, this.name,
      {x: this.view.x, lo, hi, maxPoints: this.width()});
    if (changed || !this.plot) { this.data = value; this.render(); }
  }

  render() {
    const d = this.data, v = this.view;
    let y = smooth(d.y, v.smoothing);
    if (v.log) y = y.map((e) => (e != null && e > 0 ? e : null));
    const series = [{}, {label: this.name, stroke: COLORS[0], width: 1.5, spanGaps: true}];
    const cols = [Array.from(d.x), y];
    if (v.smoothing) { series.push({label: "raw", stroke: "rgba(37,99,235,.25)", width: 1}); cols.push(Array.from(d.y)); }
    this.el.querySelector(".note").textContent =
      `${d.total.toLocaleString()} points` + (d.downsampled ? `, ${d.points.toLocaleString()} drawn (LTTB)` : "");
    this.el.dataset.points = String(d.points);
    if (this.plot) this.plot.destroy();
    const opts = {
      width: this.width(), height: 220, series, legend: {show: true},
      scales: {x: {time: v.x === "time"}, y: {distr: v.log ? 3 : 1}},
      axes: [{}, {values: (u, ticks) => ticks.map(num)}],
      cursor: {drag: {x: true, y: false, setScale: false}},
      plugins: [markerPlugin(() => restartMarkers(this.attempts, v.x))],
      hooks: {setSelect: [(u) => this.zoomTo(u)], draw: [() => { this.el.dataset.drawn = "1"; }]},
    };
    this.plot = new uPlot(opts, cols, this.el.querySelector(".plot"));
    this.plot.over.addEventListener("dblclick", () => { this.zoomed = null; this.load(); });
  }

  // Drag-selected range: ask the server for that window at full pixel resolution.
  zoomTo(u) {
    if (u.select.width < 3) return;
    this.zoomed = [u.posToVal(u.select.left, "x"), u.posToVal(u.select.left + u.select.width, "x")];
    u.setSelect({left: 0, width: 0}, false);
    this.load();
  }

  destroy() { if (this.plot) this.plot.destroy(); }
}
