// The runs page: every trial of the home in one table. Sort (click a header), filter by status,
// search (trial, host, status, hyperparameters), choose the metric whose latest and best value are
// shown, pick trials to compare. Rendering 1,000 rows is one innerHTML; polls with ETags.
import * as api from "./api.js";
import {duration, esc, num, progressBar, status, when} from "./format.js";

const COLUMNS = [
  ["ref", "trial"], ["status", "status"], ["progress", "progress"], ["steps_completed", "steps", "num"],
  ["restarts", "restarts", "num"], ["latest", "latest", "num"], ["best", "best", "num"], ["duration", "duration", "num"],
  ["host", "host"], ["slurm_job", "Slurm job"], ["updated_at", "updated"]];

export class RunsPage {
  constructor(root) {
    Object.assign(this, {root, runs: [], sort: ["updated_at", -1], timer: null, picked: new Set()});
    root.innerHTML = `<div class="controls">
      <input id="r-search" type="search" placeholder="search trials, hosts, hparams…" size="32">
      <select id="r-status"><option value="">any status</option></select>
      <label>metric <select id="r-metric"></select></label>
      <label>best <select id="r-best"><option value="min">min</option><option value="max">max</option></select></label>
      <button id="r-compare">compare selected</button> <span id="r-count" class="muted"></span></div>
      <div id="r-table"></div>`;
    for (const id of ["r-search", "r-status", "r-metric", "r-best"]) root.querySelector("#" + id).oninput = () => this.render();
    root.querySelector("#r-metric").onchange = () => {
      const m = root.querySelector("#r-metric").value;
      root.querySelector("#r-best").value = /acc|score|reward|auc|f1|precision|recall/i.test(m) ? "max" : "min";
      this.render();
    };
    root.querySelector("#r-compare").onclick = () => {
      location.hash = `#/compare?metric=${encodeURIComponent(root.querySelector("#r-metric").value)}&refs=${[...this.picked].join(",")}`;
    };
  }

  async start(pollMs) { await this.poll(); this.timer = setInterval(() => this.poll().catch(console.warn), Math.max(pollMs, 3000)); }
  stop() { clearInterval(this.timer); }

  async poll() {
    const {value, changed} = await api.get("/api/runs");
    if (!changed) return;
    this.runs = value.runs;
    this.fillChoices();
    this.render();
  }

  fillChoices() {
    const metrics = new Map(), statuses = new Set();
    for (const r of this.runs) { statuses.add(r.status); for (const k of Object.keys(r.metrics)) metrics.set(k, (metrics.get(k) || 0) + 1); }
    const keep = (sel, values) => {
      const old = sel.value, first = sel.options[0] && sel.options[0].value === "" ? sel.options[0].outerHTML : "";
      sel.innerHTML = first + values.map((v) => `<option>${esc(v)}</option>`).join("");
      if (values.includes(old)) sel.value = old;
    };
    keep(this.root.querySelector("#r-status"), [...statuses].sort());
    const metricSel = this.root.querySelector("#r-metric"), fresh = !metricSel.options.length;
    keep(metricSel, [...metrics.entries()].sort((a, b) => b[1] - a[1]).map(([k]) => k));
    if (fresh && metricSel.value) metricSel.onchange();
  }

  value(r, key) {
    const metric = r.metrics[this.root.querySelector("#r-metric").value];
    const best = this.root.querySelector("#r-best").value === "max" ? 3 : 2;
    if (key === "latest") return metric ? metric[1] : null;
    if (key === "best") return metric ? metric[best] : null;
    if (key === "duration") return r.started_at == null ? null : (r.ended_at ?? Date.now() / 1000) - r.started_at;
    return r[key];
  }

  render() {
    const q = this.root.querySelector("#r-search").value.toLowerCase(), st = this.root.querySelector("#r-status").value;
    const [key, dir] = this.sort;
    const rows = this.runs.filter((r) => (!st || r.status === st) &&
      (!q || `${r.ref} ${r.status} ${r.host || ""} ${r.slurm_job || ""} ${JSON.stringify(r.hparams)}`.toLowerCase().includes(q)));
    rows.sort((a, b) => {
      const x = this.value(a, key), y = this.value(b, key);
      if (x == null || y == null) return (x == null) - (y == null);
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    const head = COLUMNS.map(([k, label, cls]) => `<th data-key="${k}" class="${cls || ""}">${label}${k === key ? (dir > 0 ? " ▲" : " ▼") : ""}</th>`).join("");
    const body = rows.map((r) => `<tr class="run-row" data-ref="${esc(r.ref)}">
      <td><input type="checkbox" data-pick="${esc(r.ref)}" ${this.picked.has(r.ref) ? "checked" : ""}> <a href="#/trial/${esc(r.ref)}">${esc(r.ref)}</a></td>
      <td>${status(r.status)}</td><td>${progressBar(r.progress)}</td><td class="num">${r.steps_completed}</td>
      <td class="num">${r.restarts}</td><td class="num">${num(this.value(r, "latest"))}</td><td class="num">${num(this.value(r, "best"))}</td>
      <td class="num">${duration(this.value(r, "duration"))}</td><td>${esc(r.host || "-")}</td><td>${esc(r.slurm_job || "-")}</td>
      <td>${when(r.updated_at)}</td></tr>`).join("");
    const table = this.root.querySelector("#r-table");
    table.innerHTML = this.runs.length ? `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`
      : `<p class="muted">no runs yet: start one with <code>unbroken run -- python train.py</code></p>`;
    this.root.querySelector("#r-count").textContent = `${rows.length} of ${this.runs.length} trials`;
    table.querySelectorAll("th").forEach((th) => { th.onclick = () => {
      this.sort = [th.dataset.key, this.sort[0] === th.dataset.key ? -this.sort[1] : 1]; this.render(); }; });
    table.querySelectorAll("input[data-pick]").forEach((cb) => { cb.onchange = () => {
      cb.checked ? this.picked.add(cb.dataset.pick) : this.picked.delete(cb.dataset.pick); }; });
  }
}
