"""Names and the home folder."""

import pytest

from unbroken.config import check_name
from unbroken.errors import ConfigError


@pytest.mark.parametrize("name", ["cifar", "a", "run-1.2_b", "x" * 128])
def test_valid_names_pass(name):
    assert check_name(name) == name


@pytest.mark.parametrize("name", ["abc\n", "abc\r", "\nabc", "", ".hidden", "a/b", "a b", "x" * 129, "é"])
def test_invalid_names_are_refused(name):
    with pytest.raises(ConfigError, match="invalid experiment name"):
        check_name(name)


def test_init_refuses_a_name_with_a_trailing_newline(home):
    import unbroken

    with pytest.raises(ConfigError):
        unbroken.init("abc\n", home=home)
