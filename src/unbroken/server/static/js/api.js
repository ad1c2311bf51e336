// The JSON API client: the token (from ?token= in the URL, then kept in sessionStorage), conditional
// GETs (If-None-Match: an unchanged document costs a 304 and no re-render), binary series decoding.
const KEY = "unbroken-token";
const url = new URL(location.href);
if (url.searchParams.get("token")) {
  sessionStorage.setItem(KEY, url.searchParams.get("token"));
  url.searchParams.delete("token");
  history.replaceState(null, "", url.pathname + url.search + url.hash);
}
export const token = () => sessionStorage.getItem(KEY);
const cache = new Map();   // url -> {etag, value}

function headers(extra = {}) {
  const h = {...extra};
  if (token()) h["X-Unbroken-Token"] = token();
  return h;
}

async function failure(res) {
  let msg = res.status + " " + res.statusText;
  try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
  const err = new Error(msg); err.status = res.status; return err;
}

// GET path; returns {value, changed}. decode(res) turns a 200 response into the value.
export async function get(path, decode = (r) => r.json()) {
  const known = cache.get(path);
  const res = await fetch(path, {headers: headers(known ? {"If-None-Match": known.etag} : {})});
  if (res.status === 304 && known) return {value: known.value, changed: false};
  if (!res.ok) throw await failure(res);
  const value = await decode(res);
  if (res.headers.get("ETag")) cache.set(path, {etag: res.headers.get("ETag"), value});
  return {value, changed: true};
}

export const json = async (path) => (await get(path)).value;

export async function post(path) {
  const res = await fetch(path, {method: "POST", headers: headers()});
  if (!res.ok) throw await failure(res);
  return res.json();
}

// One metric series as columns: {x: Float64Array, y: Float64Array|Float32Array, attempt: Float32Array,
// total, points, lastId, downsampled}. Layout: x f64[n] | y f64[n] | attempt f32[n].
export async function decodeSeries(res) {
  const buf = await res.arrayBuffer(), n = Number(res.headers.get("X-Points"));
  return {x: new Float64Array(buf, 0, n), y: new Float64Array(buf, 8 * n, n), attempt: new Float32Array(buf, 16 * n, n),
          total: Number(res.headers.get("X-Total")), points: n, lastId: Number(res.headers.get("X-Last-Id")),
          downsampled: res.headers.get("X-Downsampled") === "1"};
}

export function seriesPath(ref, group, name, {x = "step", lo, hi, maxPoints = 2000} = {}) {
  const q = new URLSearchParams({group, name, x, max_points: String(Math.max(3, Math.round(maxPoints)))});
  if (lo != null) q.set("lo", String(lo));
  if (hi != null) q.set("hi", String(hi));
  return `/api/trials/${ref}/series?${q}`;
}

export const series = (ref, group, name, opts) => get(seriesPath(ref, group, name, opts), decodeSeries);
