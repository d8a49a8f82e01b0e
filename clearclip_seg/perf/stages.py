"""Where one whole prediction's time goes, by stage: trunk blocks, method, VFM forward, text, classify.

The stages are timed by wrapping, on the instances only (the classes are
untouched, and the wrappers are removed afterwards), the calls every method
goes through:

* ``windows``: ``seg.query_logits`` (all windows of the image, their resize and sum);
* ``trunk blocks``: ``encoder.run_blocks`` (the frozen blocks, whichever stage calls them);
* ``VFM forward``: ``forward_features`` (or ``forward``) of any ``nn.Module`` the
  method holds (ProxyCLIP's proxy model; a vision foundation model of a later method);
* ``method (rest of the windows)``: ``windows`` less the two above (the method's
  own last block or passes, the text product, the per-window resize and sum);
* ``classify``: ``seg.postprocess_result`` (resize to the original size,
  softmax, synonyms, thresholds, PAMR where on);
* ``text (cold build, once)``: the text classifier built afresh (not part of a
  prediction once cached).
"""
import time
from contextlib import contextmanager
from typing import Callable, Dict

import torch

from .timing import synchronize

_MISSING = object()


@contextmanager
def _timed_calls(obj, name: str, totals: Dict[str, float], stage: str, device):
    """Accumulate the wall time of ``obj.name(...)`` into ``totals[stage]`` while inside the block."""
    fn = getattr(obj, name)
    depth = [0]

    def wrapper(*args, **kwargs):
        depth[0] += 1
        if depth[0] == 1:
            synchronize(device)
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:   # a nested call of the same stage is counted once
                synchronize(device)
                totals[stage] = totals.get(stage, 0.0) + time.perf_counter() - t0

    own = obj.__dict__.get(name, _MISSING)   # an instance attribute (e.g. another wrapper) is put back
    setattr(obj, name, wrapper)
    try:
        yield
    finally:
        if own is _MISSING:
            delattr(obj, name)
        else:
            setattr(obj, name, own)


def _vfm_modules(method):
    return [m for k, m in vars(method).items() if isinstance(m, torch.nn.Module)]


def stage_breakdown(seg, predict: Callable[[], object], device='cpu') -> Dict[str, float]:
    """Seconds per stage of one ``predict()`` call (module doc), and ``total``."""
    totals: Dict[str, float] = {}
    with torch.inference_mode():
        kept, text_cache = seg.query_embeddings, seg.text_cache
        seg.query_embeddings, seg.text_cache = torch.empty(0, device=kept.device), False   # built afresh
        t0 = time.perf_counter()
        try:
            seg.build_text_classifier()
        finally:
            seg.query_embeddings, seg.text_cache = kept, text_cache
        synchronize(device)
        totals['text (cold build, once)'] = time.perf_counter() - t0
        hooks = [(seg, 'query_logits', 'windows'), (seg.encoder, 'run_blocks', 'trunk blocks'),
                 (seg, 'postprocess_result', 'classify')]
        for m in _vfm_modules(seg.method):
            hooks.append((m, 'forward_features' if hasattr(m, 'forward_features') else 'forward', 'VFM forward'))
        with _nested([_timed_calls(o, n, totals, s, device) for o, n, s in hooks]):
            synchronize(device)
            t0 = time.perf_counter()
            predict()
            synchronize(device)
            totals['total'] = time.perf_counter() - t0
    for stage in ('windows', 'trunk blocks', 'VFM forward', 'classify'):
        totals.setdefault(stage, 0.0)
    totals['method (rest of the windows)'] = totals['windows'] - totals['trunk blocks'] - totals['VFM forward']
    return totals


@contextmanager
def _nested(managers):
    if not managers:
        yield
        return
    with managers[0], _nested(managers[1:]):
        yield
