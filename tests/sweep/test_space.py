"""Search spaces and searchers: file forms, grid crossing, deterministic sampling, Optuna ask/tell resume."""

from __future__ import annotations

import pytest

from unbroken.errors import ConfigError
from unbroken.sweep import space as sp
from unbroken.sweep.searchers import BasicSearcher, make_searcher


def test_file_forms_nested_dicts_and_constants():
    space = sp.parse_space({"lr": {"loguniform": [1e-4, 1e-1]}, "model": {"width": {"grid": [16, 32]},
                            "act": {"type": "choice", "categories": ["relu", "tanh"]}, "depth": {"randint": [1, 4]}},
                            "p": {"uniform": [0, 1]}, "seed": 7})
    assert isinstance(space["lr"], sp.LogUniform) and isinstance(space["model"]["width"], sp.Grid)
    assert space["seed"] == 7 and sp.grid_size(space) == 2
    assert sp.parse_space(sp.to_json(space)) == space


@pytest.mark.parametrize("raw,message", [
    ({"lr": {"gaussian": [0, 1]}}, "unknown parameter type 'gaussian' for 'lr'"),
    ({"m": {"x": {"type": "normal", "mean": 0}}}, "unknown parameter type 'normal' for 'm/x'"),
    ({}, "the search space is empty"),
    (None, "the search space is empty"),
    ({"lr": {"uniform": [1, 0]}}, "low < high"),
    ({"lr": {"loguniform": [0, 1]}}, "low > 0"),
    ({"n": {"randint": [1.5, 3]}}, "whole numbers"),
    ({"g": {"grid": []}}, "at least one value"),
    ({"u": {"uniform": [0]}}, "parameter 'u'"),
])
def test_bad_spaces_are_clear_errors(raw, message):
    with pytest.raises(ConfigError, match=message):
        sp.parse_space(raw)


def test_basic_searcher_crosses_grids_repeats_them_and_samples_deterministically():
    searcher = BasicSearcher(seed=5)
    searcher.bind(sp.parse_space({"a": {"grid": [1, 2]}, "b": {"grid": ["x", "y", "z"]}, "u": {"uniform": [0, 1]}}),
                  2, None, None)
    assert searcher.total() == 12
    configs = [searcher.suggest(n) for n in range(1, 13)]
    assert {(c["a"], c["b"]) for c in configs[:6]} == {(a, b) for a in (1, 2) for b in "xyz"}
    assert [(c["a"], c["b"]) for c in configs[:6]] == [(c["a"], c["b"]) for c in configs[6:]]
    assert len({c["u"] for c in configs}) == 12
    again = BasicSearcher(seed=5)
    again.bind(searcher.space, 2, None, None)
    assert [again.suggest(n) for n in range(1, 13)] == configs  # what a restarted driver gets
    with pytest.raises(ConfigError, match="outside"):
        searcher.suggest(13)


def test_make_searcher_rejects_unknown_algorithms_and_options():
    with pytest.raises(ConfigError, match="unknown search algorithm"):
        make_searcher("hyperopt")
    with pytest.raises(ConfigError, match="only 'seed'"):
        make_searcher({"algorithm": "random", "sed": 1})


def test_optuna_asks_once_per_trial_and_tells_once(tmp_path):
    pytest.importorskip("optuna")
    space = sp.parse_space({"lr": {"loguniform": [1e-3, 1.0]}, "act": {"choice": ["a", "b"]}, "k": 3})

    def opened():
        s = make_searcher({"algorithm": "optuna", "sampler": "tpe", "seed": 1})
        s.bind(space, 4, "loss", "min")
        s.open(tmp_path, "study")
        return s

    first = opened()
    configs = {n: first.suggest(n) for n in (1, 2)}
    assert configs[1]["k"] == 3 and 1e-3 <= configs[1]["lr"] <= 1.0
    first.on_complete(1, {"loss": 0.5})
    second = opened()  # a restarted driver: the same configs, no new Optuna trials
    assert {n: second.suggest(n) for n in (1, 2)} == configs
    second.on_complete(1, {"loss": 0.1})  # told already: ignored
    second.on_complete(2, None, error=True)
    import optuna

    study = optuna.load_study(study_name="study", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [(t.number, t.state.name, t.value) for t in study.trials] == [(0, "COMPLETE", 0.5), (1, "FAIL", None)]
    with pytest.raises(ConfigError, match="metric and mode"):
        make_searcher("optuna").bind(space, 4, None, None)
