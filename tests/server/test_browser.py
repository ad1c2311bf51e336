"""The dashboard in a real headless Chromium (Debian's, driven by Playwright): the runs page, the
trial page of a run SIGKILLed twice and resumed (charts drawn, restart markers, attempts,
checkpoints; its screenshot is docs/ui-trial.png), live updates, and the compare page."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from procs import REPO
from waiting import wait_until

pytestmark = pytest.mark.slow

#: Counts the pixels of a chart's canvas drawn in the series colour (#2563eb), i.e. not background.
DRAWN_PIXELS = """(metric) => {
  const canvas = document.querySelector(`.chart[data-metric="${metric}"] canvas`);
  if (!canvas) return 0;
  const {data} = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height);
  let n = 0;
  for (let i = 0; i < data.length; i += 4)
    if (data[i + 3] > 200 && Math.abs(data[i] - 37) < 40 && Math.abs(data[i + 1] - 99) < 40 && data[i + 2] > 180) n++;
  return n;
}"""


def open_page(page, served, hash_: str):
    page.goto(f"{served.url('/')}?token={served.token}&poll=300{hash_}")


def test_runs_page_lists_every_trial(page, serve, resumed_home):
    with serve(resumed_home) as served:
        open_page(page, served, "#/runs")
        page.wait_for_selector("tr.run-row[data-ref='other/1']")
        refs = page.eval_on_selector_all("tr.run-row", "rows => rows.map(r => r.dataset.ref)")
        assert sorted(refs) == ["other/1", "resumed/1"]
        row = page.inner_text("tr.run-row[data-ref='resumed/1']")
        assert "completed" in row and "\t2\t" in row  # two restarts
        page.fill("#r-search", "other")
        wait_until(lambda: page.eval_on_selector_all("tr.run-row", "r => r.length") == 1, what="the search to filter")


def test_trial_page_of_a_killed_and_resumed_run(page, serve, resumed_home, cli_json):
    with serve(resumed_home) as served:
        open_page(page, served, "#/trial/resumed/1")
        page.wait_for_selector(".chart[data-metric='training/loss'][data-drawn='1']")
        page.wait_for_selector(".chart[data-metric='validation/acc'][data-drawn='1']")
        assert page.evaluate(DRAWN_PIXELS, "training/loss") > 100
        assert page.evaluate(DRAWN_PIXELS, "validation/acc") > 100
        markers = page.eval_on_selector_all(".chart[data-metric='training/loss'] .restart-marker",
                                            "ms => ms.map(m => [m.dataset.attempt, m.dataset.step, m.title])")
        assert [(a, s) for a, s, _ in markers] == [("2", "10"), ("3", "20")]
        assert "attempt 1 ended: crashed" in markers[0][2] and "checkpoint step 10" in markers[0][2]
        ends = page.eval_on_selector_all("tr.attempt-row .end-reason", "cs => cs.map(c => c.textContent)")
        assert [e.split(":")[0] for e in ends] == ["crashed", "crashed", "completed"]
        steps = page.eval_on_selector_all("tr.ckpt-row", "rs => rs.map(r => Number(r.dataset.step))")
        kept = [c["steps_completed"] for c in cli_json(resumed_home, "checkpoints", "resumed/1")["checkpoints"]]
        assert sorted(steps) == sorted(kept) and 30 in steps
        wait_until(lambda: "step 30" in page.inner_text("pre#log"), timeout=15, what="the newest attempt's log")
        shot = Path(resumed_home.parent / "ui-trial.png")
        page.screenshot(path=str(shot), full_page=True)
        shutil.copyfile(shot, REPO / "docs" / "ui-trial.png")


def test_marker_sits_at_its_step_on_the_x_axis(page, serve, resumed_home):
    with serve(resumed_home) as served:
        open_page(page, served, "#/trial/resumed/1")
        page.wait_for_selector(".chart[data-metric='training/loss'] .restart-marker")
        lefts = page.eval_on_selector_all(".chart[data-metric='training/loss'] .restart-marker",
                                          "ms => ms.map(m => parseFloat(m.style.left))")
        width = page.eval_on_selector(".chart[data-metric='training/loss'] .u-over", "o => o.clientWidth")
        # x spans the steps 1..30: step s sits at (s - 1) / 29 of the width
        for left, step in zip(lefts, (10, 20)):
            assert abs(left / width - (step - 1) / 29) < 0.03


def test_a_running_trial_updates_without_reload(page, serve, live_run):
    home, control, _ = live_run
    with serve(home) as served:
        open_page(page, served, "#/trial/live/1")
        page.wait_for_selector(".chart[data-metric='training/loss'][data-drawn='1']")
        before = int(page.get_attribute(".chart[data-metric='training/loss']", "data-points"))
        wait_until(lambda: "step 5" in page.inner_text("pre#log"), timeout=15, what="the log so far")
        page.evaluate("window.__sameDocument = true")
        (control / "tick-1").touch()
        wait_until(lambda: "tick 1" in page.inner_text("pre#log"), timeout=10, what="the new log line on the page")
        wait_until(lambda: int(page.get_attribute(".chart[data-metric='training/loss']", "data-points")) == before + 1,
                   timeout=10, what="the new metric point on the chart")
        assert page.evaluate("window.__sameDocument") is True  # no reload happened


def test_compare_page_overlays_a_metric_of_several_trials(page, serve, resumed_home):
    with serve(resumed_home) as served:
        open_page(page, served, "#/compare?metric=training/loss&refs=resumed/1,other/1")
        page.wait_for_selector("#m-chart[data-drawn='1']")
        labels = page.eval_on_selector_all("#m-chart .u-legend .u-label", "ls => ls.map(l => l.textContent)")
        assert "resumed/1" in labels and "other/1" in labels
