"""Determined experiment configs with a searcher as unbroken sweeps (`unbroken sweep run --config`).

In-process: the mapping of every hyperparameter type, grid points, ASHA's rungs, the other
searcher fields, and the errors that name the field. End to end: a Determined core-API script
with only the import changed is swept by grid and by adaptive_asha; the best trial is the one its
known objective says, and ASHA's promoted trials resume from their own checkpoints.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from unbroken import ConfigError
from unbroken.cli.main import main
from unbroken.compat.determined._searcher import segment_length
from unbroken.compat.determined.searchconf import grid_values, load_search_config
from unbroken.sweep import space as space_mod
from unbroken.sweep.protocol import Directive
from unbroken.sweep.results import analysis_of
from unbroken.sweep.state import SweepStore

from procs import child_env

PROGRAM = Path(__file__).resolve().parent / "programs" / "det_search.py"
HPARAMS = {"w": {"type": "int", "minval": 1, "maxval": 6},
           "opt": {"name": {"type": "categorical", "vals": ["adam", "sgd"]},
                   "lr": {"type": "log", "base": 10, "minval": -3, "maxval": -1}}}


def config(searcher, hyperparameters=None, **extra):
    return {"name": "det search", "hyperparameters": HPARAMS if hyperparameters is None else hyperparameters,
            "searcher": {"metric": "loss", "max_length": {"batches": 4}, **searcher}, **extra}


# -- the mapping --------------------------------------------------------------------------------
def test_every_hyperparameter_type_of_a_random_search_becomes_its_domain():
    hps = {"c": {"type": "const", "val": 0.9}, "plain": 7, "d": {"type": "const", "val": {"type": "adam", "b": 1}},
           "cat": {"type": "categorical", "vals": [1, "two"], "count": 5},
           "i": {"type": "int", "minval": 2, "maxval": 5}, "f": {"type": "double", "minval": -1.0, "maxval": 1},
           "nested": {"lr": {"type": "log", "base": 2, "minval": -4, "maxval": -1},
                      "e": {"type": "log", "minval": 1, "maxval": 2}}}
    plan = load_search_config(config({"name": "random", "max_trials": 6}, hps))
    s = plan.space
    assert s["c"] == 0.9 and s["plain"] == 7 and s["d"] == space_mod.Grid(({"type": "adam", "b": 1},))
    assert s["cat"] == space_mod.Choice((1, "two")) and s["i"] == space_mod.RandInt(2, 5)
    assert s["f"] == space_mod.Uniform(-1.0, 1.0)
    assert s["nested"] == {"lr": space_mod.LogUniform(2 ** -4, 2 ** -1), "e": space_mod.LogUniform(10.0, 100.0)}
    spec = plan.sweep_spec(["python", "t.py"])
    spec.check()
    assert spec.searcher.total() == 6 and spec.searcher.describe() == {"algorithm": "random", "seed": 0}
    for number in range(1, 7):
        c = spec.searcher.suggest(number)
        assert c["d"] == {"type": "adam", "b": 1} and c["cat"] in (1, "two") and 2 <= c["i"] < 5
        assert -1 <= c["f"] < 1 and 2 ** -4 <= c["nested"]["lr"] < 0.5 and 10 <= c["nested"]["e"] < 100


def test_grid_points_follow_determined():
    assert grid_values("int", 1, 3, 10) == (1, 2, 3)  # at most every integer
    assert grid_values("int", 0, 10, 3) == (0, 5, 10) and grid_values("int", 1, 4, 1) == (3,)  # 2.5 rounds up
    assert grid_values("double", 0, 1, 3) == (0.0, 0.5, 1.0) and grid_values("double", 0, 1, 1) == (0.5,)
    assert [round(v, 12) for v in grid_values("log", -3, -1, 3, 10.0)] == [0.001, 0.01, 0.1]
    hps = {"w": {"type": "int", "minval": 1, "maxval": 3, "count": 2}, "x": {"type": "double", "minval": 0,
                                                                           "maxval": 1, "count": 3},
           "opt": {"name": {"type": "categorical", "vals": ["adam", "sgd"]}, "lr": {"type": "const", "val": 0.01}}}
    plan = load_search_config(config({"name": "grid", "max_trials": 99}, hps))
    spec = plan.sweep_spec(["python", "t.py"])
    spec.check()
    assert plan.space["w"] == space_mod.Grid((1, 3)) and spec.searcher.name == "grid"
    assert spec.searcher.total() == 12  # 2 * 3 * 2; max_trials does not apply to a grid
    configs = [spec.searcher.suggest(n) for n in range(1, 13)]
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 12
    assert all(c["opt"]["lr"] == 0.01 for c in configs)


def test_adaptive_asha_becomes_asha_with_determined_rungs():
    plan = load_search_config(config({"name": "adaptive_asha", "max_trials": 8, "max_length": {"epochs": 16},
                                      "divisor": 2, "max_rungs": 5, "mode": "aggressive"}))
    # rungs: min(max_rungs 5, log2(16)+1 = 5, log2(8)+1 = 4) = 4, so the first is 16 / 2**3 = 2
    assert plan.scheduler == {"type": "asha", "max_t": 16, "grace_period": 2, "reduction_factor": 2}
    assert plan.notes == () and plan.num_samples == 8 and plan.max_length == 16
    spec = plan.sweep_spec(["python", "t.py"])
    spec.check()
    assert spec.sched.rungs == [2, 4, 8] and spec.sched.max_t == 16 and spec.stop == {"training_iteration": 16}

    defaults = load_search_config(config({"name": "adaptive_asha", "max_trials": 64, "max_length": 64}))
    # divisor 4, max_rungs 5: min(5, log4(64)+1 = 4, 4) = 4 rungs, the first at 64 / 4**3 = 1
    assert defaults.scheduler == {"type": "asha", "max_t": 64, "grace_period": 1, "reduction_factor": 4}
    assert "mode 'standard'" in defaults.notes[0]  # Determined's default mode runs several brackets
    brackets = load_search_config(config({"name": "adaptive_asha", "max_trials": 9, "max_length": 27, "divisor": 3,
                                          "bracket_rungs": [2, 1]}))
    assert brackets.scheduler["grace_period"] == 9 and "bracket_rungs" in brackets.notes[0]


def test_metric_mode_concurrency_seed_restarts_and_entrypoint():
    plan = load_search_config(config({"name": "random", "max_trials": 3, "smaller_is_better": False,
                                      "max_concurrent_trials": 2}, max_restarts=1, entrypoint="python3 train.py",
                                     reproducibility={"experiment_seed": 7}))
    spec = plan.sweep_spec()
    assert (spec.metric, spec.mode, spec.max_concurrent, spec.max_failures) == ("loss", "max", 2, 1)
    assert spec.command == ["python3", "train.py"] and spec.searcher.describe()["seed"] == 7
    assert plan.sweep_spec(["python", "t.py"], max_concurrent=3, name="other").max_concurrent == 3
    every = load_search_config(config({"name": "random", "max_trials": 3, "max_concurrent_trials": 0}))
    assert every.sweep_spec(["x"]).max_concurrent == 3 and every.sweep_spec(["x"]).mode == "min"
    assert load_search_config(config({"name": "single"})).sweep_spec(["x"]).max_concurrent == 1
    assert json.loads(plan.trial_env()["UNBROKEN_DET_CONFIG"])["reproducibility"] == {"experiment_seed": 7}


def test_the_trial_trains_to_the_end_of_its_segment():
    def directive(stop_at, stop):
        return Directive(sweep="s", trial=1, segment=1, config={}, result_dir="/nowhere", stop_at=stop_at, stop=stop)

    assert segment_length(None) is None and segment_length(directive(None, None)) is None
    assert segment_length(directive(2, {"training_iteration": 8})) == 2  # an ASHA rung
    assert segment_length(directive(None, {"training_iteration": 8})) == 8  # to the end


@pytest.mark.parametrize("searcher,hps,extra,match", [
    ({"name": "pbt"}, None, {}, "searcher.name 'pbt' is not supported"),
    ({"name": "custom"}, None, {}, "searcher.name 'custom' is not supported"),
    ({"name": "bayes"}, None, {}, "searcher.name 'bayes'"),
    ({"name": "random", "max_trials": 2, "metric": None}, None, {}, "searcher.metric"),
    ({"name": "random"}, None, {}, "searcher.max_trials is required"),
    ({"name": "adaptive_asha", "max_trials": 0}, None, {}, "searcher.max_trials must be"),
    ({"name": "random", "max_trials": 2, "max_length": None}, None, {}, "searcher.max_length"),
    ({"name": "random", "max_trials": 2, "max_length": {"steps": 3}}, None, {}, "searcher.max_length must name"),
    ({"name": "adaptive_asha", "max_trials": 2, "divisor": 1}, None, {}, "searcher.divisor"),
    ({"name": "adaptive_asha", "max_trials": 2, "mode": "wild"}, None, {}, "searcher.mode"),
    ({"name": "random", "max_trials": 2, "max_time": 9, "time_metric": "b"}, None, {}, "searcher.max_time"),
    ({"name": "random", "max_trials": 2, "source_trial_id": 3}, None, {}, "searcher.source_trial_id"),
    ({"name": "random", "max_trials": 2, "smaller_is_better": "yes"}, None, {}, "smaller_is_better"),
    ({"name": "random", "max_trials": 2}, {"a": {"type": "normal"}}, {}, "hyperparameters.a has an unsupported type"),
    ({"name": "random", "max_trials": 2}, {"g": {"a": {"type": "int", "minval": 1}}}, {},
     r"hyperparameters.g.a .*'maxval'"),
    ({"name": "random", "max_trials": 2}, {"a": {"type": "int", "minval": 1.5, "maxval": 3}}, {}, "a.minval"),
    ({"name": "random", "max_trials": 2}, {"a": {"type": "double", "minval": 2, "maxval": 1}}, {}, "minval < maxval"),
    ({"name": "random", "max_trials": 2}, {"a": {"type": "categorical", "vals": []}}, {}, "hyperparameters.a.vals"),
    ({"name": "random", "max_trials": 2}, {"a": {"type": "log", "minval": 1, "maxval": 2, "base": 1}}, {}, "a.base"),
    ({"name": "grid"}, {"a": {"type": "double", "minval": 0, "maxval": 1}}, {}, "hyperparameters.a: grid search needs"),
    ({"name": "grid"}, {"a": {"type": "int", "minval": 0, "maxval": 1, "count": 0}}, {}, "hyperparameters.a.count"),
    ({"name": "random", "max_trials": 2}, {}, {}, "no hyperparameters"),
    ({"name": "random", "max_trials": 2}, None, {"reproducibility": {"experiment_seed": -1}}, "experiment_seed"),
])
def test_bad_searches_are_config_errors_naming_the_field(searcher, hps, extra, match):
    with pytest.raises(ConfigError, match=match):
        load_search_config(config(searcher, hps, **extra))


def test_a_trial_needs_a_command_it_can_run():
    plan = load_search_config(config({"name": "random", "max_trials": 2}))
    with pytest.raises(ConfigError, match="give the trial's command after --"):
        plan.sweep_spec()
    classy = load_search_config(config({"name": "random", "max_trials": 2}, entrypoint="model_def:MnistTrial"))
    with pytest.raises(ConfigError, match="Trial class"):
        classy.sweep_spec()


def test_cli_config_excludes_a_definition_and_reports_bad_configs(tmp_path):
    (tmp_path / "pbt.yaml").write_text(yaml.safe_dump(config({"name": "pbt"})))
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(config({"name": "random", "max_trials": 2})))
    env = {"UNBROKEN_HOME": str(tmp_path / "home")}
    runner = CliRunner()
    both = runner.invoke(main, ["sweep", "run", "--config", str(tmp_path / "ok.yaml"), "sweep.yaml", "--", "python"],
                         env=env)
    assert both.exit_code == 1 and "not both" in both.output
    neither = runner.invoke(main, ["sweep", "run"], env=env)
    assert neither.exit_code == 1 and "DEFINITION" in neither.output
    pbt = runner.invoke(main, ["sweep", "run", "--config", str(tmp_path / "pbt.yaml"), "--", "python"], env=env)
    assert pbt.exit_code == 1 and "searcher.name 'pbt' is not supported" in pbt.output


# -- end to end -----------------------------------------------------------------------------------
def objective(hparams, steps):
    """The loss det_search.py reports (kept equal to its objective)."""
    opt = hparams["opt"]
    return ((hparams["w"] - 3) ** 2 + (math.log10(opt["lr"]) + 2) ** 2 + (0.0 if opt["name"] == "adam" else 0.5)
            + 1.0 / steps)


def sweep(tmp_path, cfg):
    """Run `unbroken sweep run --config` on det_search.py; return the sweep's rows and each trial's log lines."""
    home, logs = tmp_path / "home", tmp_path / "logs"
    logs.mkdir()
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "unbroken", "sweep", "run", "--config", str(tmp_path / "exp.yaml"), "--",
           sys.executable, "-u", str(PROGRAM)]
    done = subprocess.run(cmd, env=child_env(home, DET_SEARCH_LOG=str(logs)), capture_output=True, text=True,
                          timeout=150, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    store = SweepStore(str(home / "unbroken.db"))
    try:
        rows = store.trials(store.sweep("det-search").id)
    finally:
        store.close()
    lines = {n: [json.loads(line) for line in (logs / f"{n}.jsonl").read_text().splitlines()] for n in rows}
    return rows, lines, done.stderr


@pytest.mark.slow
def test_grid_search_of_a_determined_script_finds_the_best_config(tmp_path):
    hps = {"w": {"type": "int", "minval": 1, "maxval": 3, "count": 2},
           "opt": {"name": {"type": "categorical", "vals": ["adam", "sgd"]}, "lr": {"type": "const", "val": 0.01}}}
    cfg = config({"name": "grid", "max_length": {"batches": 2}, "max_concurrent_trials": 2}, hps,
                 data={"source": "tiny"}, max_restarts=1)
    rows, lines, stderr = sweep(tmp_path, cfg)
    assert len(rows) == 4 and all(r.state == "terminated" and r.iteration == 2 for r in rows.values())
    for number, row in rows.items():  # each script got its config as hparams and the config's data section
        assert lines[number] == [{"hparams": row.config, "data": {"source": "tiny"}, "start": 0, "length": 2}]
        assert row.last_result["loss"] == pytest.approx(objective(row.config, 2))  # read from report_completed
    best = analysis_of("det-search", "loss", "min", rows).best_trial
    assert best.config == {"w": 3, "opt": {"name": "adam", "lr": 0.01}} and best.last_result["loss"] == 0.5
    assert "best: det-search/" in stderr


@pytest.mark.slow
def test_adaptive_asha_stops_the_worse_half_and_promoted_trials_resume(tmp_path):
    cfg = config({"name": "adaptive_asha", "max_trials": 4, "max_rungs": 2, "divisor": 2, "mode": "aggressive",
                  "max_concurrent_trials": 2}, reproducibility={"experiment_seed": 1}, max_restarts=1)
    rows, lines, _ = sweep(tmp_path, cfg)
    promoted = [n for n, r in rows.items() if r.iteration == 4]
    stopped = [n for n, r in rows.items() if r.iteration == 2]
    assert 1 in promoted and stopped and sorted(promoted + stopped) == [1, 2, 3, 4]
    for number in promoted:  # the second segment started from the trial's own checkpoint at the rung
        assert [(x["start"], x["length"]) for x in lines[number]] == [(0, 2), (2, 4)]
        assert rows[number].results[2]["loss"] == pytest.approx(objective(rows[number].config, 2))
        assert rows[number].results[4]["loss"] == pytest.approx(objective(rows[number].config, 4))
    for number in stopped:
        assert [(x["start"], x["length"]) for x in lines[number]] == [(0, 2)]
        assert "stopped by ASHA at rung 2" in rows[number].message
    assert all(lines[n][0]["hparams"] == rows[n].config for n in rows)
    best = analysis_of("det-search", "loss", "min", rows).best_trial
    assert best.number == min(rows, key=lambda n: objective(rows[n].config, 4))  # the objective's best config won
