"""Metrics history: the per-metric summary of `show` (last, min, max, sparkline) and `unbroken metrics`."""

from __future__ import annotations

import csv
import io

import pytest

from unbroken.cli._output import sparkline

POINT_KEYS = {"group", "steps_completed", "name", "value", "time", "attempt"}
LOSS_STEPS = [1, 2, 3, 4, 4, 5, 6, 7, 8]          # attempt 1: 1-4, attempt 2 (resumed at 4): 4-8


# -- sparkline ---------------------------------------------------------------------------------------
def test_sparkline_draws_lowest_to_highest():
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([7, 0]) == "█▁"


def test_sparkline_flat_missing_and_empty():
    assert sparkline([2.0, 2.0, 2.0]) == "▄▄▄"
    assert sparkline([None, 1.0, float("inf"), 3.0, float("nan")]) == "▁█"
    assert sparkline([]) == "" and sparkline([None]) == ""


def test_sparkline_keeps_to_its_width_with_means_of_equal_shares():
    line = sparkline(list(range(1000)), width=10)
    assert len(line) == 10 and line[0] == "▁" and line[-1] == "█"
    assert sparkline([0, 0, 10, 10], width=2) == "▁█"  # shares [0, 0] and [10, 10]


# -- show ----------------------------------------------------------------------------------------------
def test_show_json_summarises_each_metric(cli, indexed):
    metrics = cli.json("show", "exp")["metrics"]
    assert metrics["training"]["loss"] == {"steps_completed": 8, "value": 0.125, "min": 0.125, "max": 1.0,
                                           "points": len(LOSS_STEPS)}
    assert metrics["validation"]["acc"] == {"steps_completed": 8, "value": 0.5, "min": 0.25, "max": 0.5, "points": 2}


def test_show_table_has_last_min_max_and_a_sparkline(cli, indexed):
    text = cli("show", "exp").stdout
    header = next(line for line in text.splitlines() if "HISTORY" in line)
    assert header.split() == ["GROUP", "NAME", "STEP", "LAST", "MIN", "MAX", "HISTORY"]
    loss = next(line.split() for line in text.splitlines() if line.split()[:2] == ["training", "loss"])
    assert loss == ["training", "loss", "8", "0.125", "0.125", "1", sparkline([1 / s for s in LOSS_STEPS])]
    assert len(loss[-1]) == len(LOSS_STEPS)


def test_show_summary_skips_missing_values(cli, indexed):
    tracker = indexed.tracker()
    tracker.add_metrics(indexed.trial.id, None, [("training", 9, "loss", None, 3000.0)])
    loss = cli.json("show", "exp")["metrics"]["training"]["loss"]
    assert (loss["value"], loss["min"], loss["max"], loss["points"]) == (None, 0.125, 1.0, len(LOSS_STEPS) + 1)


# -- metrics -------------------------------------------------------------------------------------------
def test_metrics_json_lists_every_point_in_step_order(cli, indexed):
    data = cli.json("metrics", "exp")
    assert set(data) == {"trial", "points"} and data["trial"] == "exp/1"
    assert all(set(p) == POINT_KEYS for p in data["points"])
    loss = [p for p in data["points"] if p["name"] == "loss"]
    assert [p["steps_completed"] for p in loss] == LOSS_STEPS
    assert [p["attempt"] for p in loss] == [1, 1, 1, 1, 2, 2, 2, 2, 2]
    assert loss[0] == {"group": "training", "steps_completed": 1, "name": "loss", "value": 1.0, "time": 1001.0,
                       "attempt": 1}
    assert len(data["points"]) == len(LOSS_STEPS) + 2


def test_metrics_filters_by_group_and_name(cli, indexed):
    acc = cli.json("metrics", "exp/1", "--group", "validation")["points"]
    assert [(p["name"], p["steps_completed"], p["value"]) for p in acc] == [("acc", 4, 0.25), ("acc", 8, 0.5)]
    assert cli.json("metrics", "exp", "--name", "loss", "--group", "validation")["points"] == []
    assert "trial exp/1 has no metrics with group 'nope'" in cli("metrics", "exp", "-g", "nope").stdout


def test_metrics_csv(cli, indexed):
    result = cli("metrics", "exp", "--csv", "--name", "acc")
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [["group", "steps_completed", "name", "value", "time", "attempt"],
                    ["validation", "4", "acc", "0.25", "2000.0", "1"], ["validation", "8", "acc", "0.5", "2000.0", "2"]]


def test_metrics_csv_writes_missing_values_and_attempts_as_empty_cells(cli, indexed):
    indexed.tracker().add_metrics(indexed.trial.id, None, [("extra", 1, "x", None, 5.0)])
    rows = list(csv.reader(io.StringIO(cli("metrics", "exp", "--csv", "-g", "extra").stdout)))
    assert rows[1] == ["extra", "1", "x", "", "5.0", ""]


def test_metrics_table(cli, indexed):
    lines = cli("metrics", "exp", "-n", "acc").stdout.splitlines()
    assert lines[0].split() == ["GROUP", "STEP", "NAME", "VALUE", "TIME", "ATTEMPT"]
    assert [line.split()[:4] + line.split()[-1:] for line in lines[2:]] == [
        ["validation", "4", "acc", "0.25", "1"], ["validation", "8", "acc", "0.5", "2"]]


@pytest.mark.parametrize("args, fragment", [
    (["exp", "--csv", "--json"], "choose one of --csv and --json"),
    (["nope"], "no experiment named 'nope'"),
    (["exp/7"], "no trial 'exp/7'"),
])
def test_metrics_errors(cli, indexed, args, fragment):
    result = cli("metrics", *args)
    assert result.exit_code == 1 and result.stderr.startswith("Error: ") and fragment in result.stderr
