"""The frozen blocks computed once for several runs that see the same windows.

In a shared pass every run of a group scores the same image batch, one run
after the other, each through its own segmentor (so each does exactly what its
own run does). The first run's calls to ``encoder.last_block_input`` (blocks
0..L-2 of a window batch: 11/12 of ViT-B/16's work) are recorded; the other
runs replay them in the same order. A replayed call returns the recorded
tokens only if its input windows are equal to the recorded ones (exact
``torch.equal``); anything else is computed afresh and counted as a miss, so a
divergence can cost time but never change a number. The recorded tokens are
dropped when the batch is done: memory holds one image batch's windows.

Why per image batch, not per window: scoring run by run keeps one run's
full-resolution logit accumulator (Q x H x W) alive at a time; scoring window
by window would keep one per run (20 ablation variants x 171 COCO-Stuff
queries at 448 x 2048 is ~12 GB), far more than the tokens of one image's
windows (a few MB each).
"""
from contextlib import contextmanager
from typing import Callable, List, Sequence, Tuple

import torch


class SharedTrunk:
    """Record-then-replay of ``last_block_input`` calls over the runs of one image batch.

    Usage, per image batch::

        trunk.start_run(0)    # the first run computes and records
        ... run 0 ...
        trunk.start_run(1)    # the next ones replay
        ... run 1 ...
        trunk.end_batch()     # drop the tokens

    Attributes:
        computed: calls that ran the frozen blocks.
        reused: calls answered from the record.
        misses: calls of a replaying run that did not match the record (computed).
    """

    def __init__(self):
        self._calls: List[Tuple[torch.Tensor, object]] = []
        self._pos = 0
        self._recording = True
        self.computed = 0
        self.reused = 0
        self.misses = 0

    def start_run(self, index: int) -> None:
        """Run ``index`` of the batch begins: 0 records (dropping any old record), others replay."""
        self._pos = 0
        self._recording = index == 0
        if self._recording:
            self._calls = []

    def end_batch(self) -> None:
        """Drop the recorded tokens."""
        self._calls = []
        self._pos = 0
        self._recording = True

    def call(self, compute: Callable, x: torch.Tensor):
        """``compute(x)``, or the recorded result of the same call with the same input."""
        if self._recording:
            out = compute(x)
            self.computed += 1
            # copies: a consumer that writes into its input or its tokens cannot touch the record
            self._calls.append((x.detach().clone(), _clone(out)))
            return out
        if self._pos < len(self._calls):
            x0, out = self._calls[self._pos]
            self._pos += 1
            if x0.shape == x.shape and x0.dtype == x.dtype and x0.device == x.device and torch.equal(x0, x):
                self.reused += 1
                return _clone(out)
        self.misses += 1
        return compute(x)

    def stats(self) -> dict:
        return dict(computed=self.computed, reused=self.reused, misses=self.misses)


def _clone(out):
    if isinstance(out, torch.Tensor):
        return out.clone()
    if isinstance(out, tuple):
        return tuple(_clone(o) for o in out)
    if isinstance(out, list):
        return [_clone(o) for o in out]
    return out  # the grid (ints)


@contextmanager
def sharing_trunk(encoders: Sequence[torch.nn.Module], trunk: SharedTrunk):
    """Route the encoders' ``last_block_input`` through ``trunk`` inside the block.

    The method is replaced on each encoder *instance* (the class is untouched)
    and restored on exit, so any tower with a ``last_block_input`` stage works
    and nothing outside the block sees the change.
    """
    patched = []
    try:
        for enc in dict.fromkeys(encoders):  # each distinct encoder once, in order
            if 'last_block_input' in vars(enc):
                raise RuntimeError(f'{type(enc).__name__}.last_block_input is already routed elsewhere')
            original = enc.last_block_input

            def routed(x, *args, _original=original, **kwargs):
                if args or kwargs:  # a call with options is not the plain trunk: not shared
                    return _original(x, *args, **kwargs)
                return trunk.call(_original, x)
            object.__setattr__(enc, 'last_block_input', routed)
            patched.append(enc)
        yield trunk
    finally:
        for enc in patched:
            object.__delattr__(enc, 'last_block_input')
