"""LaunchEnv: the one encoder/decoder of the supervisor-to-child environment variables."""

from pathlib import Path

import pytest

from unbroken.envvars import PROTOCOL_VARIABLES, LaunchEnv
from unbroken.errors import ConfigError

FULL = LaunchEnv(home=Path("/data/h"), experiment="cifar", trial=3, attempt_id=17, preempt_signal="USR2",
                 deadline=1_700_000_123.25)


def test_round_trip_through_the_environment():
    env = FULL.to_env()
    assert env == {"UNBROKEN_HOME": "/data/h", "UNBROKEN_EXPERIMENT": "cifar", "UNBROKEN_TRIAL": "3",
                   "UNBROKEN_ATTEMPT_ID": "17", "UNBROKEN_PREEMPT_SIGNAL": "SIGUSR2",
                   "UNBROKEN_DEADLINE": "1700000123.250"}
    assert LaunchEnv.from_env(env) == FULL
    assert FULL.supervised


def test_unset_and_empty_variables_are_none():
    assert LaunchEnv.from_env({}) == LaunchEnv()
    assert LaunchEnv().to_env() == {}
    empty = LaunchEnv.from_env({var: "" for var in PROTOCOL_VARIABLES})
    assert empty == LaunchEnv() and not empty.supervised
    assert not LaunchEnv(trial=2).supervised and not LaunchEnv(attempt_id=2).supervised


def test_merged_into_replaces_every_protocol_variable():
    outer = {"PATH": "/bin", "UNBROKEN_DEADLINE": "5", "UNBROKEN_ATTEMPT_ID": "99", "UNBROKEN_HOME": "/old"}
    env = LaunchEnv(home=Path("/new"), trial=1, attempt_id=2).merged_into(outer)
    assert env == {"PATH": "/bin", "UNBROKEN_HOME": "/new", "UNBROKEN_TRIAL": "1", "UNBROKEN_ATTEMPT_ID": "2"}
    assert outer["UNBROKEN_DEADLINE"] == "5"  # the input is not changed


@pytest.mark.parametrize("var,value", [
    ("UNBROKEN_TRIAL", "0"), ("UNBROKEN_TRIAL", "two"), ("UNBROKEN_TRIAL", "1.5"),
    ("UNBROKEN_ATTEMPT_ID", "-4"), ("UNBROKEN_DEADLINE", "nan"), ("UNBROKEN_DEADLINE", "inf"),
    ("UNBROKEN_DEADLINE", "soon"), ("UNBROKEN_PREEMPT_SIGNAL", "KILL"), ("UNBROKEN_PREEMPT_SIGNAL", "NOPE"),
    ("UNBROKEN_EXPERIMENT", "../etc"),
])
def test_bad_values_name_the_variable(var, value):
    with pytest.raises(ConfigError, match=f"\\${var}"):
        LaunchEnv.from_env({var: value})


def test_constructor_validates_too():
    with pytest.raises(ConfigError, match="UNBROKEN_TRIAL"):
        LaunchEnv(trial=0)
    assert LaunchEnv(trial="4").trial == 4
