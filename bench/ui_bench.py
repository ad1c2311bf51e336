"""How fast the dashboard answers on a big home (issue "unbroken ui").

    python bench/ui_bench.py [--home DIR] [--trials 1000] [--points 1000] [--big 1000000]

Builds (once; reused when DIR holds it) a home of TRIALS trials x POINTS loss points and one trial
with BIG points, serves it with `unbroken ui`'s application, and measures:

* the server time of GET /api/runs (every trial with its metric statistics): cold (first
  request after start) and warm (median of 5);
* the server time of the BIG-point series, downsampled with LTTB to 1,200 points: cold and warm;
* in Debian's chromium (if installed): time from navigation to the first drawn chart of the
  BIG-point trial's page.

Goals: runs list < 200 ms, big series < 300 ms, first chart < 1 s (warm figures; cold ones are
printed too: the first read of 10^6 rows from SQLite costs about a second on a small machine).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import uvicorn

from unbroken.server.app import create_app
from unbroken.server.config import ServerConfig
from unbroken.tracking import Tracker

GOALS = {"runs list": 0.200, "big series": 0.300, "first chart": 1.0}


def build_home(home: Path, trials: int, points: int, big: int) -> None:
    """Fill ``home``'s index (skipped when it holds the trials already)."""
    with Tracker(home / "unbroken.db") as tracker:
        if tracker.experiments():
            return
        for i in range(trials):
            t = tracker.create_trial(f"sweep{i % 10}", hparams={"lr": 10 ** -(i % 5), "seed": i}, storage_of=lambda n: None)
            a = tracker.start_attempt(t.id, pid=None)
            tracker.add_metrics(t.id, a.id, [("training", s, "loss", 1 / (s + 1) + (i % 7) * 1e-3, 1.7e9 + s)
                                             for s in range(points)], progress=1.0)
            tracker.end_attempt(a.id, "completed", exit_code=0)
            tracker.update_trial(t.id, status="completed", steps_completed=points)
        t = tracker.create_trial("big", storage_of=lambda n: None)
        a = tracker.start_attempt(t.id, pid=None)
        for start in range(0, big, 50_000):
            tracker.add_metrics(t.id, a.id, [("training", s, "loss", math.exp(-s / big) + 0.05 * math.sin(s / 500),
                                              1.7e9 + s) for s in range(start, min(big, start + 50_000))])
        tracker.end_attempt(a.id, "completed", exit_code=0)
        tracker.update_trial(t.id, status="completed", steps_completed=big)


def timed_get(url: str) -> float:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as res:
        res.read()
    return time.perf_counter() - t0


def first_chart(base: str) -> float | None:
    """Seconds from navigation to the first drawn chart of big/1 in chromium (None without one)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    if not Path("/usr/bin/chromium").exists():
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(base + "/#/runs")
        page.wait_for_selector("tr.run-row")
        t0 = time.perf_counter()
        page.goto(base + "/#/trial/big/1")
        page.wait_for_selector(".chart[data-drawn='1']", timeout=60_000)
        elapsed = time.perf_counter() - t0
        browser.close()
    return elapsed


def report(name: str, cold: float | None, warm: float | None) -> None:
    goal = GOALS[name]
    show = lambda v: "   n/a  " if v is None else f"{v * 1000:7.1f} ms"  # noqa: E731
    verdict = "n/a" if warm is None else ("OK" if warm < goal else "OVER")
    print(f"{name:12s} cold {show(cold)}   warm {show(warm)}   goal < {goal * 1000:.0f} ms   {verdict}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "unbroken-ui-bench")
    p.add_argument("--trials", type=int, default=1000)
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--big", type=int, default=1_000_000)
    args = p.parse_args()
    args.home.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    build_home(args.home, args.trials, args.points, args.big)
    print(f"home {args.home}: {args.trials} x {args.points} points + 1 x {args.big} (ready in {time.perf_counter() - t0:.1f} s)")
    config = ServerConfig.build(args.home, port=0)
    server = uvicorn.Server(uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    series = base + "/api/trials/big/1/series?group=training&name=loss&max_points=1200"
    runs_cold = timed_get(base + "/api/runs")
    runs_warm = statistics.median(timed_get(base + "/api/runs") for _ in range(5))
    series_cold = timed_get(series)
    series_warm = statistics.median(timed_get(series) for _ in range(5))
    chart = first_chart(base)
    server.should_exit = True
    report("runs list", runs_cold, runs_warm)
    report("big series", series_cold, series_warm)
    report("first chart", None, chart)
    if chart is None:
        print("first chart: no chromium/playwright (scripts/chromium-up.sh; pip install playwright)", file=sys.stderr)


if __name__ == "__main__":
    main()
