// Formatting helpers shared by the pages. Pure functions; no DOM.
export const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
export const when = (t) => t == null ? "-" : new Date(t * 1000).toLocaleString();
export function duration(s) {
  if (s == null || !isFinite(s)) return "-";
  s = Math.max(0, s);
  if (s < 60) return s.toFixed(1) + " s";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = Math.floor(s % 60);
  return h ? `${h}h${String(m).padStart(2, "0")}m` : `${m}m${String(r).padStart(2, "0")}s`;
}
export function num(v) {
  if (v == null || !isFinite(v)) return "-";
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : Number(v.toPrecision(5)).toString();
}
export function size(n) {
  if (n == null) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0; while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}
export const percent = (p) => p == null ? "-" : (100 * p).toFixed(0) + "%";
export const status = (s) => `<span class="status ${esc(s)}">${esc(s)}</span>`;
export const progressBar = (p) => `<span class="bar"><span style="width:${p == null ? 0 : Math.round(100 * p)}%"></span></span> ${percent(p)}`;
