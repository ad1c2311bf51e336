"""Load on the tracking index: many trials reporting metrics at once, into SQLite and PostgreSQL.

P processes (a sweep's workers) each open one tracker, create T trials of one shared experiment
at once (racing for trial numbers), start an attempt of each and give each a MetricsWriter (its
own writer thread, as in a run). Then every trial reports R times N metric values as fast as
it can (``put``), the writers batch them into the index, and all writers are closed.

Printed per backend: rows and rows/s (from the start signal to the last writer closed), the
latency of one ``put()`` (what a training step pays) and of one batch write (``add_metrics``,
what the writer thread pays), p50 and p99, and the failed writes. Then it checks the index: no
row lost or written twice, trial numbers 1..P*T, one attempt each. A failed check (or a deadlock,
which PostgreSQL reports as a failed write) exits 1.

    python bench/tracking_load.py                               # 50 x 20 trials, 100 x 4 values each
    python bench/tracking_load.py --processes 8 --trials 5 --reports 20 --json   # the quick check
    python bench/tracking_load.py --backends postgresql --postgresql postgresql://postgres@127.0.0.1:54329/x

PostgreSQL: ``--postgresql URL``, else ``$UNBROKEN_DB`` when it is a PostgreSQL URL, else the
cluster of ``scripts/pg-up.sh`` (started if needed; root). A scratch database is created on that
server for the run and dropped afterwards. SQLite: a scratch file under ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NAMES = ("loss", "lr", "accuracy", "grad_norm", "tokens_per_s", "memory_gb", "val_loss", "val_accuracy")


class TimedTracker:
    """Delegates ``add_metrics`` to a tracker and records each call's duration, rows and failure."""

    def __init__(self, tracker) -> None:
        self.tracker, self.lock = tracker, threading.Lock()
        self.seconds: list[float] = []
        self.failures: list[str] = []

    def add_metrics(self, trial_id, attempt_id, points, *, progress=None) -> None:
        points = list(points)
        t0 = time.perf_counter()
        try:
            self.tracker.add_metrics(trial_id, attempt_id, points, progress=progress)
        except Exception as exc:
            with self.lock:
                self.failures.append(str(exc))
            raise
        with self.lock:
            self.seconds.append(time.perf_counter() - t0)


def worker(url: str, trials: int, reports: int, names: int, start, results) -> None:
    """One process of the sweep: ``trials`` trials, each reporting ``reports`` x ``names`` values."""
    from unbroken.runtime.metrics import MetricsWriter
    from unbroken.tracking import Tracker

    tracker = Tracker(url)
    timed = TimedTracker(tracker)
    start.wait(600)
    t0 = time.perf_counter()
    owned = [tracker.create_trial("load") for _ in range(trials)]
    attempts = [tracker.start_attempt(t.id) for t in owned]
    writers = [MetricsWriter(timed, t.id, a.id, flush_seconds=0.2) for t, a in zip(owned, attempts)]
    puts = []
    for step in range(reports):
        for writer in writers:
            values = {name: step * 0.001 + i for i, name in enumerate(NAMES[:names])}
            p0 = time.perf_counter()
            writer.put("training", step, values)
            puts.append(time.perf_counter() - p0)
    for writer in writers:
        writer.close()
    results.put({"started": t0, "ended": time.perf_counter(), "puts": puts, "batches": timed.seconds,
                 "failures": timed.failures, "trials": [t.id for t in owned]})
    tracker.close()


def run_load(url: str, processes: int, trials: int, reports: int, names: int) -> dict:
    """Run the load against ``url``; return the figures and the checks."""
    from unbroken.tracking import Tracker

    Tracker(url).close()  # create the schema before the race (the race on it is a test's job)
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(url, trials, reports, names, start, results))
             for _ in range(processes)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # let the interpreters start; the clock runs from each worker's start signal
    start.set()
    outs = [results.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join(60)
    wall = max(o["ended"] for o in outs) - min(o["started"] for o in outs)
    puts = sorted(x for o in outs for x in o["puts"])
    batches = sorted(x for o in outs for x in o["batches"])
    rows = processes * trials * reports * names
    figures = {"processes": processes, "trials": processes * trials, "rows": rows, "seconds": wall,
               "rows_per_s": rows / wall, "put_p50_us": _pct(puts, 50) * 1e6, "put_p99_us": _pct(puts, 99) * 1e6,
               "batch_writes": len(batches), "batch_p50_ms": _pct(batches, 50) * 1e3,
               "batch_p99_ms": _pct(batches, 99) * 1e3,
               "failed_writes": sum(len(o["failures"]) for o in outs),
               "failures": [f for o in outs for f in o["failures"]][:5],
               "exit_codes": [p.exitcode for p in procs]}
    figures["problems"] = check(url, processes * trials, reports, names) + [
        f"{n} failed writes (e.g. {figures['failures'][:1]})" for n in [figures["failed_writes"]] if n] + [
        f"worker exit codes {figures['exit_codes']}" for _ in [0] if set(figures["exit_codes"]) != {0}]
    return figures


def check(url: str, trials: int, reports: int, names: int) -> list[str]:
    """What is wrong with the index after the load: lost or doubled rows, bad numbering."""
    from unbroken.tracking import Tracker

    problems = []
    with Tracker.open_readonly(url) as tracker:
        (total,), = tracker._query("SELECT COUNT(*) FROM metrics")
        doubled = tracker._query("SELECT trial_id, name, steps_completed FROM metrics GROUP BY trial_id, name, "
                                 "steps_completed HAVING COUNT(*) > 1")
        per_trial = tracker._query("SELECT COUNT(*) FROM metrics GROUP BY trial_id")
        numbers = sorted(t.number for t in tracker.trials("load"))
        attempts = tracker._query("SELECT trial_id, COUNT(*) FROM attempts GROUP BY trial_id HAVING COUNT(*) <> 1")
    if total != trials * reports * names:
        problems.append(f"{total} metric rows, expected {trials * reports * names}")
    if doubled:
        problems.append(f"{len(doubled)} metric points written more than once, e.g. {doubled[0]}")
    if sorted(n for (n,) in per_trial) != [reports * names] * trials:
        problems.append("some trial lost rows")
    if numbers != list(range(1, trials + 1)):
        problems.append(f"trial numbers are not 1..{trials}: {len(numbers)} trials, {len(set(numbers))} distinct")
    if attempts:
        problems.append(f"{len(attempts)} trials without exactly one attempt")
    return problems


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


class ScratchPostgres:
    """A scratch database on the server of ``url`` (or of scripts/pg-up.sh), dropped on exit."""

    def __init__(self, url: str | None) -> None:
        if url is None:
            env = os.environ.get("UNBROKEN_DB", "")
            url = env if env.startswith("postgres") else self._pg_up()
        self.server = url.rsplit("/", 1)[0]
        self.url = f"{self.server}/unbroken_bench_{uuid.uuid4().hex[:8]}"

    @staticmethod
    def _pg_up() -> str:
        out = subprocess.run(["bash", str(REPO / "scripts" / "pg-up.sh")], capture_output=True, text=True, check=True)
        return out.stdout.strip().split("=", 1)[1]

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as conn:
            conn.execute(sql)

    def __enter__(self) -> str:
        self._admin(f"CREATE DATABASE {self.url.rsplit('/', 1)[1]}")
        return self.url

    def __exit__(self, *exc) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {self.url.rsplit('/', 1)[1]} WITH (FORCE)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=50)
    parser.add_argument("--trials", type=int, default=20, help="trials per process")
    parser.add_argument("--reports", type=int, default=100, help="put() calls per trial")
    parser.add_argument("--names", type=int, default=4, choices=range(1, len(NAMES) + 1),
                        help="metric values per put()")
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--postgresql", help="a PostgreSQL URL whose server gets the scratch database")
    parser.add_argument("--workdir", type=Path, default=None, help="folder of the scratch SQLite file")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO / "src"))
    shape = (args.processes, args.trials, args.reports, args.names)
    figures = {}
    for backend in args.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory(dir=args.workdir) as folder:
                figures[backend] = run_load(str(Path(folder) / "load.db"), *shape)
        else:
            with ScratchPostgres(args.postgresql) as url:
                figures[backend] = run_load(url, *shape)
    print(json.dumps(figures, indent=1) if args.json else _table(figures, shape))
    return 1 if any(f["problems"] for f in figures.values()) else 0


def _table(figures: dict, shape: tuple) -> str:
    processes, trials, reports, names = shape
    lines = [f"{processes} processes x {trials} trials, each {reports} put() of {names} values "
             f"({os.cpu_count()} CPUs)",
             f"{'backend':<11} {'rows':>8} {'s':>7} {'rows/s':>9} {'put p50/p99 us':>15} "
             f"{'batches':>8} {'batch p50/p99 ms':>17} {'failed':>6}  checks"]
    for backend, f in figures.items():
        lines.append(f"{backend:<11} {f['rows']:>8} {f['seconds']:>7.1f} {f['rows_per_s']:>9.0f} "
                     f"{f['put_p50_us']:>7.1f}/{f['put_p99_us']:<7.1f} {f['batch_writes']:>8} "
                     f"{f['batch_p50_ms']:>8.1f}/{f['batch_p99_ms']:<8.1f} {f['failed_writes']:>6}  "
                     f"{'; '.join(f['problems']) or 'ok: no row lost or doubled, trials 1..N'}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
