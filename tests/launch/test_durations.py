"""One duration parser for every command-line option that takes a time."""

import math

import pytest

from unbroken.errors import ConfigError
from unbroken.launch.durations import parse_duration


@pytest.mark.parametrize("text,seconds", [
    ("90", 90), ("1.5", 1.5), ("0", 0), ("90s", 90), ("15m", 900), ("12h", 43200), ("1d", 86400),
    ("11h30m", 41400), ("1d2h", 93600), ("1h0m30s", 3630), ("1.5h", 5400), (" 2m ", 120),
    ("2:30:00", 9000), ("1:30", 90), ("11H30M", 41400),
])
def test_accepted(text, seconds):
    assert parse_duration(text, "--x") == seconds


@pytest.mark.parametrize("text,why", [
    ("nan", "not a duration"), ("inf", "not a duration"), ("-5", "negative"), ("-1m", "negative"),
    ("30m11h", "not a duration"), ("1h1h", "not a duration"), ("", "not a duration"), ("h", "not a duration"),
    ("1e3", "not a duration"), ("9" * 400, "not a finite duration"), ("1:2:3:4", "not a duration"),
])
def test_rejected_with_the_option_named(text, why):
    with pytest.raises(ConfigError, match=f"^--time-limit: .*{why}"):
        parse_duration(text, "--time-limit")


def test_inf_only_where_allowed():
    assert parse_duration("inf", "--wait", allow_inf=True) == math.inf
    assert parse_duration("30s", "--wait", allow_inf=True) == 30
    with pytest.raises(ConfigError, match="or 'inf'"):
        parse_duration("forever", "--wait", allow_inf=True)
