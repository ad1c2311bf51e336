// The compare page: one metric of several trials overlaid on one chart (x = step).
import * as api from "./api.js";
import {COLORS} from "./charts.js";
import {esc, num} from "./format.js";

export class ComparePage {
  constructor(root, params) {
    this.root = root;
    this.metric = params.get("metric") || "";
    this.refs = (params.get("refs") || "").split(",").filter(Boolean);
    root.innerHTML = `<h2>Compare ${esc(this.metric || "")}</h2><div class="controls">
      <label>metric (group/name) <input id="m-metric" value="${esc(this.metric)}" size="24"></label>
      <label>trials <input id="m-refs" value="${esc(this.refs.join(","))}" size="40"></label><button id="m-go">show</button></div>
      <div id="m-chart" class="chart"></div><p class="muted">Pick trials on the Runs page and press “compare selected”.</p>`;
    root.querySelector("#m-go").onclick = () => {
      location.hash = `#/compare?metric=${encodeURIComponent(root.querySelector("#m-metric").value)}&refs=${root.querySelector("#m-refs").value}`;
    };
  }

  async start() {
    const slash = this.metric.indexOf("/");
    if (slash < 0 || !this.refs.length) return;
    const [group, name] = [this.metric.slice(0, slash), this.metric.slice(slash + 1)];
    const el = this.root.querySelector("#m-chart");
    const width = Math.max(400, el.clientWidth - 16);
    const all = await Promise.all(this.refs.map((ref) => api.series(ref, group, name, {maxPoints: width}).then((r) => r.value)));
    const data = uPlot.join(all.map((s) => [Array.from(s.x), Array.from(s.y, (v) => (isFinite(v) ? v : null))]));
    const series = [{}, ...this.refs.map((ref, i) => ({label: ref, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true}))];
    el.dataset.metric = this.metric;
    this.plot = new uPlot({width, height: 360, series, axes: [{}, {values: (u, t) => t.map(num)}],
                           hooks: {draw: [() => { el.dataset.drawn = "1"; }]}}, data, el);
  }

  stop() { if (this.plot) this.plot.destroy(); }
}
