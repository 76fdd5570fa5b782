"""The validators every constructor uses (reglab.core.checks): message format and edge cases."""

import pytest

from reglab.core import checks
from reglab.core.errors import ConfigError


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: checks.positive("a.b", 0), "a.b=0 must be a number > 0"),
        (lambda: checks.positive("a.b", -2, integer=True), "a.b=-2 must be an integer > 0"),
        (lambda: checks.positive("a.b", 1.5, integer=True), "a.b=1.5 must be an integer > 0"),
        (lambda: checks.nonnegative("a.b", True), "a.b=True must be a number >= 0"),
        (lambda: checks.probability("a.p", 1.0), "a.p=1.0 must be a number in [0, 1)"),
        (lambda: checks.number("x", float("nan")), "x=nan must be a number"),
        (
            lambda: checks.number("x", "abc", low=0, high=1, low_open=True),
            "x='abc' must be a number in (0, 1]",
        ),
        (lambda: checks.flag("f", "yes"), "f='yes' must be true or false"),
        (
            lambda: checks.choice("c", "z", ["a", "b"]),
            "c='z' is not an option; choose one of ['a', 'b']",
        ),
    ],
)
def test_each_validator_names_key_value_and_range(call, message):
    with pytest.raises(ConfigError) as e:
        call()
    assert str(e.value) == message


def test_valid_values_come_back_typed():
    assert checks.positive("k", 3, integer=True) == 3
    assert checks.probability("p", 0) == 0.0 and isinstance(checks.probability("p", 0), float)
    assert checks.probability("p", 1, one=True) == 1.0
    assert checks.number("x", 5, low=5, high=5) == 5.0


def test_check_kwargs_refuses_unknown_keys_and_wrong_types():
    def f(a: int, b: float | None = None, c: list[int] | None = None):
        return a, b, c

    checks.check_kwargs(f, {"a": 1, "b": None, "c": [1, 2]}, "sec")
    with pytest.raises(
        ConfigError, match=r"sec.d is not a setting here; allowed: \['a', 'b', 'c'\]"
    ):
        checks.check_kwargs(f, {"d": 1}, "sec")
    with pytest.raises(ConfigError, match="sec.a='x' must be an integer"):
        checks.check_kwargs(f, {"a": "x"}, "sec")
    with pytest.raises(ConfigError, match="sec.c=\\[1, 'x'\\] must be a list of integers or null"):
        checks.check_kwargs(f, {"c": [1, "x"]}, "sec")
