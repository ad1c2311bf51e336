// The trial page: header, hyperparameters, metric charts (with restart markers), attempts
// (timeline and table), checkpoints (verify / export), the live log. Polls with conditional
// requests: an unchanged trial costs one 304 per poll and redraws nothing.
import * as api from "./api.js";
import {MetricChart} from "./charts.js";
import {duration, esc, num, percent, progressBar, size, status, when} from "./format.js";
import {LogView} from "./logview.js";

const SKELETON = `
  <h2 id="t-title"></h2><div id="t-summary" class="muted"></div>
  <div class="controls">
    <label>x <select id="c-x"><option value="step">step</option><option value="time">time</option></select></label>
    <label><input type="checkbox" id="c-log"> log scale</label>
    <label>smoothing <input type="range" id="c-smooth" min="0" max="0.99" step="0.01" value="0"></label>
    <span class="muted">drag to zoom, double-click to reset</span>
  </div>
  <div id="t-charts"></div>
  <h3>Attempts</h3><div id="t-timeline" class="timeline"></div><div id="t-attempts"></div>
  <h3>Checkpoints</h3><div id="t-ckpts"></div>
  <h3>Log <span id="t-logname" class="muted"></span></h3><pre id="log"></pre>
  <h3>Hyperparameters</h3><div id="t-hparams" class="kv"></div>`;

export class TrialPage {
  constructor(root, ref, settings) {
    Object.assign(this, {root, ref, settings, doc: null, charts: new Map(), timer: null,
                         view: {x: "step", log: false, smoothing: 0}});
    root.innerHTML = SKELETON;
    this.log = new LogView(root.querySelector("#log"), ref);
    this.bindControls();
  }

  bindControls() {
    const redraw = () => this.charts.forEach((c) => (c.data ? c.render() : null));
    this.root.querySelector("#c-x").onchange = (e) => { this.view.x = e.target.value; this.charts.forEach((c) => { c.zoomed = null; c.load(); }); };
    this.root.querySelector("#c-log").onchange = (e) => { this.view.log = e.target.checked; redraw(); };
    this.root.querySelector("#c-smooth").oninput = (e) => { this.view.smoothing = Number(e.target.value); redraw(); };
  }

  async start(pollMs) {
    await this.poll();
    this.timer = setInterval(() => this.poll().catch((e) => console.warn(e)), pollMs);
  }

  stop() { clearInterval(this.timer); this.charts.forEach((c) => c.destroy()); }

  async poll() {
    const {value: doc, changed} = await api.get(`/api/trials/${this.ref}`);
    if (changed) {
      this.doc = doc;
      this.renderHeader(doc); this.renderAttempts(doc.attempts); this.renderHparams(doc.trial.hparams);
      await Promise.all([this.syncCharts(doc), this.renderCheckpoints()]);
    }
    await this.log.update(doc.attempts);
    this.root.querySelector("#t-logname").textContent = this.log.attempt ? `(attempt ${this.log.attempt})` : "";
  }

  renderHeader(doc) {
    const t = doc.trial;
    this.root.querySelector("#t-title").innerHTML = `Trial ${esc(t.ref)} ${status(t.status)}`;
    this.root.querySelector("#t-summary").innerHTML =
      `steps ${t.steps_completed} · progress ${progressBar(t.progress)} · ${t.attempts} attempt(s), ${t.restarts} restart(s)` +
      ` · latest checkpoint ${t.latest_checkpoint_steps ?? "-"} · updated ${when(t.updated_at)}` +
      (t.message ? ` · <span class="error">${esc(t.message)}</span>` : "") +
      (t.command ? `<br>command <code>${esc(t.command)}</code>` : "");
  }

  async syncCharts(doc) {
    const holder = this.root.querySelector("#t-charts");
    const order = (g) => (g === "training" ? 0 : g === "validation" ? 1 : 2);
    const groups = Object.entries(doc.metrics).sort(([a], [b]) => order(a) - order(b) || a.localeCompare(b));
    for (const [group, names] of groups) {
      let section = holder.querySelector(`[data-group="${CSS.escape(group)}"]`);
      if (!section) {
        section = document.createElement("section"); section.dataset.group = group;
        section.innerHTML = `<h3>${esc(group)}</h3><div class="charts"></div>`; holder.appendChild(section);
      }
      for (const name of Object.keys(names)) {
        const key = `${group}/${name}`;
        if (!this.charts.has(key)) {
          const el = document.createElement("div"); section.querySelector(".charts").appendChild(el);
          this.charts.set(key, new MetricChart(el, {ref: this.ref, group, name, attempts: doc.attempts, view: this.view}));
        }
        this.charts.get(key).attempts = doc.attempts;
      }
    }
    await Promise.all([...this.charts.values()].map((c) => c.load()));
  }

  renderAttempts(attempts) {
    const t0 = attempts.length ? attempts[0].started_at : 0, now = Date.now() / 1000;
    const t1 = Math.max(now, ...attempts.map((a) => a.ended_at || now)), span = Math.max(1e-9, t1 - t0);
    this.root.querySelector("#t-timeline").innerHTML = attempts.map((a) => {
      const left = 100 * (a.started_at - t0) / span, width = Math.max(0.5, 100 * ((a.ended_at || now) - a.started_at) / span);
      return `<div class="${esc(a.state)}" style="left:${left}%;width:${width}%" title="attempt ${a.number}: ${esc(a.state)}"></div>`;
    }).join("");
    const rows = attempts.map((a) => `<tr class="attempt-row" data-attempt="${a.number}">
      <td>${a.number}</td><td>${when(a.started_at)}</td><td>${when(a.ended_at)}</td><td>${duration(a.duration_s ?? (now - a.started_at))}</td>
      <td class="end-reason">${esc(a.state)}${a.message ? ": " + esc(a.message) : ""}</td>
      <td>${a.restored_steps == null ? "-" : "step " + a.restored_steps}</td><td>${esc(a.host || "-")}</td><td>${a.pid ?? "-"}</td>
      <td>${esc(a.exit_code ?? (a.signal ? "signal " + a.signal : "-"))}</td>
      <td>${a.slurm_job_id ? esc(a.slurm_job_id + (a.slurm_array_task ? "_" + a.slurm_array_task : "")) : "-"}</td>
      <td><a href="/api/trials/${esc(this.ref)}/attempts/${a.number}/log?offset=0" target="_blank">log</a></td></tr>`).join("");
    this.root.querySelector("#t-attempts").innerHTML = `<table><thead><tr><th>#</th><th>started</th><th>ended</th>
      <th>duration</th><th>end</th><th>resumed from</th><th>host</th><th>pid</th><th>exit</th><th>Slurm job</th><th>log</th>
      </tr></thead><tbody>${rows}</tbody></table>`;
  }

  async renderCheckpoints() {
    const {value: doc, changed} = await api.get(`/api/trials/${this.ref}/checkpoints`);
    if (!changed && this.root.querySelector("#t-ckpts table")) return;
    const actions = !this.settings.read_only;
    const rows = doc.checkpoints.slice().reverse().map((c) => `<tr class="ckpt-row" data-uuid="${esc(c.uuid)}" data-step="${c.steps_completed ?? ""}">
      <td>${c.steps_completed ?? "-"}</td><td>${when(c.created_at)}</td><td class="num">${size(c.size_bytes)}</td>
      <td class="ckpt-state">${esc(c.state)}${c.reason ? ": " + esc(c.reason) : ""}</td><td><code>${esc(c.uuid)}</code></td>
      <td>${esc(JSON.stringify(c.metadata)).slice(0, 120)}</td>
      <td>${actions ? `<button data-act="verify">verify</button> <button data-act="export">export</button>` : ""}<span class="result"></span></td></tr>`).join("");
    const box = this.root.querySelector("#t-ckpts");
    box.innerHTML = doc.checkpoints.length ? `<table><thead><tr><th>step</th><th>time</th><th class="num">size</th><th>state</th>
      <th>uuid</th><th>metadata</th><th></th></tr></thead><tbody>${rows}</tbody></table>` : `<p class="muted">no checkpoints in ${esc(doc.location)}</p>`;
    box.querySelectorAll("button[data-act]").forEach((b) => { b.onclick = () => this.act(b); });
  }

  async act(button) {
    const row = button.closest("tr"), out = row.querySelector(".result");
    if (!api.token()) { out.textContent = " open the URL printed by `unbroken ui` (with its token) to act"; return; }
    out.textContent = " …";
    try {
      const r = await api.post(`/api/trials/${this.ref}/checkpoints/${row.dataset.uuid}/${button.dataset.act}`);
      out.textContent = button.dataset.act === "verify" ? ` ${r.status}${r.reason ? ": " + r.reason : ""}` : ` exported to ${r.to}`;
    } catch (e) { out.innerHTML = ` <span class="error">${esc(e.message)}</span>`; }
  }

  renderHparams(h) {
    const flat = {}; const walk = (o, p) => Object.entries(o || {}).forEach(([k, v]) =>
      (v && typeof v === "object" && !Array.isArray(v) ? walk(v, p + k + ".") : (flat[p + k] = v)));
    walk(h, "");
    this.root.querySelector("#t-hparams").innerHTML = Object.entries(flat).map(([k, v]) =>
      `<div>${esc(k)}</div><div><code>${esc(JSON.stringify(v))}</code></div>`).join("") || `<span class="muted">none</span>`;
  }
}
