"""Schedulers as pure objects, driven with fake results: ASHA, HyperBand, PBT, FIFO."""

from __future__ import annotations

import pytest

from unbroken.errors import ConfigError
from unbroken.sweep.schedulers import (ASHAScheduler, FIFOScheduler, HyperBandScheduler, PopulationBasedTraining,
                                       make_scheduler)
from unbroken.sweep.schedulers.base import TrialView
from unbroken.sweep.space import choice, uniform


def view(number, results, state="paused", config=None):
    iteration = max(results, default=0)
    return TrialView(number, config or {"lr": 0.1 * number}, {t: {"loss": v} for t, v in results.items()}, state,
                     iteration)


def asha(**kw):
    s = ASHAScheduler(metric="loss", mode="min", max_t=8, grace_period=1, reduction_factor=2, **kw)
    s.bind(None, None, 8)
    return s


def test_asha_rungs_and_first_stop():
    s = asha()
    assert s.rungs == [1, 2, 4] and s.first_stop(5) == 1


def test_asha_first_trial_at_a_rung_goes_on_and_a_worse_later_one_stops():
    s = asha()
    trials = {1: view(1, {1: 5.0}), 2: view(2, {1: 9.0})}
    assert s.decide(1, trials).stop_at == 2
    stopped = s.decide(2, trials)
    assert stopped.action == "stop" and "rung 1" in stopped.reason
    trials[2] = view(2, {1: 4.0})
    assert s.decide(2, trials).stop_at == 2


def test_asha_waits_for_lower_numbered_trials_but_not_for_ended_ones():
    s = asha()
    trials = {1: view(1, {}, state="running"), 2: view(2, {1: 1.0})}
    assert s.decide(2, trials).action == "wait"
    trials[1] = view(1, {}, state="error")
    assert s.decide(2, trials).stop_at == 2
    trials[3] = view(3, {1: 0.5})  # a higher number never holds a lower one back
    assert s.decide(2, trials).stop_at == 2


def test_asha_decisions_do_not_depend_on_arrival_order():
    s = asha()
    results = {1: {1: 3.0, 2: 2.0}, 2: {1: 4.0}, 3: {1: 1.0, 2: 2.5}}
    forward = {n: view(n, r) for n, r in results.items()}
    backward = {n: forward[n] for n in reversed(forward)}
    assert [s.decide(n, forward) for n in forward] == [s.decide(n, backward) for n in forward]


def test_asha_stops_at_max_t_and_rejects_bad_parameters():
    s = asha()
    assert s.decide(1, {1: view(1, {8: 1.0})}).action == "stop"
    with pytest.raises(ConfigError, match="grace_period"):
        ASHAScheduler(max_t=2, grace_period=4)
    with pytest.raises(ConfigError, match="reduction_factor"):
        ASHAScheduler(reduction_factor=1)
    with pytest.raises(ConfigError, match="time_attr"):
        ASHAScheduler(time_attr="time_total_s")
    with pytest.raises(ConfigError, match="metric"):
        ASHAScheduler().bind(None, None, 4)


def test_hyperband_brackets_and_synchronous_rungs():
    s = HyperBandScheduler(metric="loss", mode="min", max_t=4, reduction_factor=2)
    s.bind(None, None, 4)
    assert s.shapes == [(4, (1, 2, 4)), (3, (2, 4)), (3, (4,))]
    assert s.first_stop(1) == 1 and s.bracket_of(5).budgets == (2, 4) and s.bracket_of(11).first == 11
    trials = {1: view(1, {1: 4.0}), 2: view(2, {1: 3.0}), 3: view(3, {}, state="running"), 4: view(4, {1: 1.0})}
    assert s.decide(1, trials).action == "wait"  # trial 3 has not reached budget 1
    trials[3] = view(3, {1: 2.0})
    decisions = {n: s.decide(n, trials) for n in trials}
    assert {n for n, d in decisions.items() if d.action == "continue"} == {3, 4}
    assert all(d.stop_at == 2 for d in decisions.values() if d.action == "continue")
    assert s.needs_checkpoints


def pbt(**kw):
    s = PopulationBasedTraining(metric="loss", mode="min", perturbation_interval=2,
                                hyperparam_mutations={"lr": uniform(0.01, 0.5), "act": ["a", "b", "c"]}, seed=3, **kw)
    s.bind(None, None, 4)
    return s


def test_pbt_waits_for_the_generation_then_the_worst_exploits_a_best():
    s = pbt()
    configs = {n: {"lr": 0.1 * n, "act": "b"} for n in range(1, 5)}
    trials = {n: view(n, {2: float(n)}, config=configs[n]) for n in range(1, 4)}
    assert s.decide(1, trials).action == "wait"  # trial 4 does not exist yet
    trials[4] = view(4, {2: 4.0}, config=configs[4])
    worst = s.decide(4, trials)
    assert worst.exploit == {"donor": 1, "iteration": 2} and worst.stop_at == 4
    assert worst.config["act"] in ("a", "b", "c") and worst.config != configs[4]
    assert s.decide(4, trials) == worst  # seeded by (seed, iteration, trial): the same again after a restart
    assert all(s.decide(n, trials).exploit is None for n in (1, 2, 3))


def test_pbt_needs_mutations_and_sane_fractions():
    with pytest.raises(ConfigError, match="hyperparam_mutations"):
        PopulationBasedTraining(metric="loss", mode="min")
    with pytest.raises(ConfigError, match="quantile_fraction"):
        PopulationBasedTraining(hyperparam_mutations={"lr": [1, 2]}, quantile_fraction=0.9)


def test_pbt_explore_perturbs_numbers_and_moves_list_values_to_neighbours():
    import numpy as np

    s = pbt(resample_probability=0.0)
    for seed in range(20):
        new = s.explore({"lr": 0.1, "act": "b"}, np.random.default_rng(seed))
        assert new["lr"] in (pytest.approx(0.12), pytest.approx(0.08)) and new["act"] in ("a", "c")


def test_make_scheduler_from_a_file_form():
    assert isinstance(make_scheduler(None), FIFOScheduler)
    assert make_scheduler({"type": "asha", "max_t": 4}).max_t == 4
    s = make_scheduler({"type": "pbt", "hyperparam_mutations": {"lr": {"uniform": [0.1, 0.2]}, "n": {"m": [1, 2]}},
                        "perturbation_interval": 2})
    assert s.mutations["n"] == {"m": [1, 2]} and s.interval == 2
    with pytest.raises(ConfigError, match="unknown scheduler"):
        make_scheduler({"type": "bohb"})
    with pytest.raises(ConfigError, match="scheduler asha"):
        make_scheduler({"type": "asha", "maxt": 3})
    assert choice([1]).categories == (1,)
