// The page's router: #/runs, #/trial/EXPERIMENT/NUMBER, #/compare?metric=G/N&refs=A/1,B/2.
// ?poll=MS in the page URL sets the polling interval (default 2000 ms; tests use less).
import * as api from "./api.js";
import {esc} from "./format.js";
import {ComparePage} from "./compare.js";
import {RunsPage} from "./runs.js";
import {TrialPage} from "./trial.js";

const POLL = Number(new URLSearchParams(location.search).get("poll")) || 2000;
let current = null, settings = {read_only: true};

async function route() {
  if (current) current.stop();
  const view = document.getElementById("view");
  const [path, query] = (location.hash.slice(1) || "/runs").split("?");
  const parts = path.split("/").filter(Boolean);
  try {
    if (parts[0] === "trial" && parts.length === 3) current = new TrialPage(view, `${parts[1]}/${parts[2]}`, settings);
    else if (parts[0] === "compare") current = new ComparePage(view, new URLSearchParams(query || ""));
    else current = new RunsPage(view);
    await current.start(POLL);
    document.body.dataset.page = parts[0] || "runs";
  } catch (e) {
    view.innerHTML = `<p class="error">${esc(e.message)}</p>`;
  }
}

async function main() {
  try {
    settings = await api.json("/api/config");
    document.getElementById("home").textContent = settings.home + (settings.read_only ? " (read-only)" : "");
  } catch (e) {
    document.getElementById("view").innerHTML = `<p class="error">${esc(e.message)}</p>`;
    return;
  }
  window.addEventListener("hashchange", route);
  route();
}

main();
