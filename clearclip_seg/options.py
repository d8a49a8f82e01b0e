"""Strict option checking: every bad value becomes one line naming its config key.

``bool('no')`` is True, so a string in a boolean switch would silently flip an
ablation; numbers outside their range would silently change every pixel. These
helpers turn such values into errors that name the key and what was expected.
"""
import difflib
import math
from numbers import Real
from typing import Iterable, Mapping, Optional, Tuple

from .errors import ConfigError  # noqa: F401  (raised by the checks; exported by clearclip_seg.apis)

FLOAT32_MAX = 3.4028234663852886e38


def check_bool(value, key: str) -> bool:
    """A real boolean; anything else (the string ``'False'`` included) is an error.

    ``--cfg-options k=False`` already arrives as a boolean; a string here comes
    from a quoted value in a config or matrix file, and ``bool('False')`` is True.
    """
    if isinstance(value, bool) or type(value).__name__ == 'bool_':  # numpy.bool_ too
        return bool(value)
    raise ValueError(f'{key}={value!r}: expected a boolean (True or False, not a string or number)')


def check_number(value, key: str, low: Optional[float] = None, high: Optional[float] = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False) -> float:
    """A finite real number in [low, high] (open ends with ``low_open``/``high_open``).

    NaN and infinities are refused, and so are floats beyond float32's range
    (``1e300``): the model computes in float32 or less, where they become inf.
    """
    kind = 'an integer' if integer else 'a finite number'
    if isinstance(value, bool) or not isinstance(value, Real) or (integer and int(value) != value):
        raise ValueError(f'{key}={value!r}: expected {kind}{_range_text(low, high, low_open, high_open)}')
    bad = (not math.isfinite(value)  # NaN and +-inf are never an option's value
           or (not integer and abs(value) > FLOAT32_MAX)
           or (low is not None and (value < low or (low_open and value == low)))
           or (high is not None and (value > high or (high_open and value == high))))
    if bad:
        too_big = '' if integer or not math.isfinite(value) or abs(value) <= FLOAT32_MAX else \
            f' (at most {FLOAT32_MAX:.3g} in size, the float32 range)'
        raise ValueError(f'{key}={value!r}: expected {kind}{_range_text(low, high, low_open, high_open)}{too_big}')
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
        raise ValueError(f'unknown keys {unknown} in {key}{did_you_mean(unknown[0], allowed)}: '
                         f'expected {", ".join(allowed)}')


def nearest(name: str, allowed: Iterable[str]) -> Optional[str]:
    """The allowed name closest to ``name`` (difflib), or None when none is near."""
    near = difflib.get_close_matches(str(name), [str(a) for a in allowed], n=1, cutoff=0.6)
    return near[0] if near else None


def did_you_mean(name: str, allowed: Iterable[str], prefix: str = '') -> str:
    """`` (did you mean 'prefix.x'?)`` for the nearest allowed name, or ``''`` when none is near."""
    near = nearest(name, allowed)
    return f" (did you mean '{prefix}{near}'?)" if near else ''


def check_pair(value, key: str, minimum: int = 1) -> Tuple[int, int]:
    """An int or an (h, w) pair of ints, each >= ``minimum``."""
    items = (value, value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    try:
        h, w = items
    except (TypeError, ValueError):
        raise ValueError(f'{key}={value!r}: expected an integer or an (h, w) pair of integers') from None
    return (check_number(h, key, low=minimum, integer=True), check_number(w, key, low=minimum, integer=True))


def option_text(value) -> str:
    """A value as MMEngine's ``DictAction`` reads it back: ``None``, ``True``, ``(448,448)``, ``0.1``, ``voc21``."""
    if isinstance(value, (tuple, list)):
        inner = ','.join(option_text(v) for v in value)
        return f'({inner})' if isinstance(value, tuple) else f'[{inner}]'
    return str(value) if value is None or isinstance(value, (bool, int, float, str)) else repr(value)
