"""Strict option checking: every bad value becomes one line naming its config key.

``bool('no')`` is True, so a string in a boolean switch would silently flip an
ablation; numbers outside their range would silently change every pixel. These
helpers turn such values into errors that name the key and what was expected.
"""
from numbers import Real
from typing import Iterable, Mapping, Optional, Tuple

_TRUE, _FALSE = ('true',), ('false',)


def check_bool(value, key: str) -> bool:
    """A real boolean (or the literal words true/false, any case); anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f'{key}={value!r}: expected a boolean (True or False)')


def check_number(value, key: str, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> float:
    """A real number in [low, high] (open ends with ``low_open``/``high_open``)."""
    if isinstance(value, bool) or not isinstance(value, Real) or (integer and int(value) != value):
        kind = 'an integer' if integer else 'a number'
        raise ValueError(f'{key}={value!r}: expected {kind}{_range_text(low, high, low_open, high_open)}')
    bad = ((low is not None and (value < low or (low_open and value == low)))
           or (high is not None and (value > high or (high_open and value == high)))
           or value != value)  # NaN
    if bad:
        kind = 'an integer' if integer else 'a number'
        raise ValueError(f'{key}={value!r}: expected {kind}{_range_text(low, high, low_open, high_open)}')
    return int(value) if integer else float(value)


def _range_text(low, high, low_open, high_open) -> str:
    if low is None and high is None:
        return ''
    if high is None:
        return f" {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_keys(given: Mapping, allowed: Iterable[str], key: str) -> None:
    """Reject keys of a dict option that the component does not know (typos)."""
    allowed = tuple(allowed)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise ValueError(f'unknown keys {unknown} in {key}: expected {", ".join(allowed)}')


def check_pair(value, key: str, minimum: int = 1) -> Tuple[int, int]:
    """An int or an (h, w) pair of ints, each >= ``minimum``."""
    items = (value, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        h, w = items
    except (TypeError, ValueError):
        raise ValueError(f'{key}={value!r}: expected an integer or an (h, w) pair of integers') from None
    return (check_number(h, key, low=minimum, integer=True), check_number(w, key, low=minimum, integer=True))
