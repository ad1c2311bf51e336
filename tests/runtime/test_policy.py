import pytest

from unbroken import every_seconds, every_steps, never
from unbroken.errors import ConfigError


def test_every_steps():
    p = every_steps(5)
    assert [s for s in range(1, 16) if p.due(s, 0, 0.0)] == [5, 10, 15]
    assert not p.due(10, 10, 0.0)  # already saved at this step


def test_every_seconds_and_union():
    p = every_seconds(30) | every_steps(100)
    assert p.due(7, 3, 31.0) and not p.due(7, 3, 29.0) and p.due(100, 3, 1.0)
    assert not never().due(100, 0, 1e9)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_bad_arguments(bad):
    with pytest.raises(ConfigError):
        every_steps(bad)


def test_bad_seconds():
    with pytest.raises(ConfigError):
        every_seconds(0)
