"""Display names (methods, backbones, benchmarks) and benchmark column order."""
from typing import Iterable, List, Optional, Tuple

from ..protocol.benchmarks import BACKBONES, BENCHMARKS, PAPER_ORDER
from ..protocol.presets import PRESETS


def onoff(v: bool) -> str:
    """'on' or 'off' for a boolean setting."""
    return 'on' if v else 'off'


def method_label(preset: Optional[str], last_block: Tuple[str, bool, bool]) -> str:
    """Display name of a method: the preset title, or the last-block setting.

    Args:
        preset: Preset name or None.
        last_block: ``(attn, residual, ffn)``.

    Returns:
        E.g. ``'ClearCLIP'`` or ``'attn=vv, residual on, FFN off'``.
    """
    if preset in PRESETS:
        return PRESETS[preset].title
    attn, res, ffn = last_block
    return f'attn={attn}, residual {onoff(res)}, FFN {onoff(ffn)}'


def backbone_label(backbone: Optional[str], arch: str, pretrained: str) -> str:
    """Display name of a backbone: the ``BACKBONES`` title, or ``arch (pretrained)`` (``random weights`` without)."""
    if backbone in BACKBONES:
        return BACKBONES[backbone][2]
    if pretrained in (None, 'None', ''):
        return f'{arch} (random weights)'
    return f'{arch} ({pretrained})'


def bench_title(key: str) -> str:
    """Display name of a benchmark (its ``BENCHMARKS`` title, else the key)."""
    return BENCHMARKS[key].title if key in BENCHMARKS else key


def order_benchmarks(keys: Iterable[str]) -> List[str]:
    """Benchmark keys in ``PAPER_ORDER``, then any others sorted."""
    keys = set(keys)
    return [k for k in PAPER_ORDER if k in keys] + sorted(keys - set(PAPER_ORDER))

