"""Logit post-processors, registered by name (``model.postprocess=dict(type=NAME, ...)``).

A post-processor refines the query logits of one image at its original size,
guided by the image itself, before the logit scale and the softmax (where the
SCLIP-family code runs PAMR: method cards, section 4). Each is a small class
with keyword options whose defaults are the published settings::

    @register_postprocessor('PAMR')
    class PAMRPostProcessor(PostProcessor): ...

    post = build_postprocessor(dict(type='PAMR', num_iter=10))
    logits = post(guidance, logits)      # (B, 3, H, W), (B, Q, h, w) -> (B, Q, H, W)

On a large image the segmentor asks for the refined logits a band of rows at
a time (``bands``), so that (queries x H x W) never exists; a post-processor
without a banded form refines the whole map at once.

This module is plain torch (no MMSeg), so it can be tested and reused alone.
"""
from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from ..options import check_number
from ..protocol import constants
from ..registry import Registry
from .pamr import check_dilations, check_dilations_fit, pamr, pamr_band, pamr_spans

POSTPROCESSORS = Registry('post-processor', 'model.postprocess', 'postprocessor_name')
register_postprocessor = POSTPROCESSORS.register


def list_postprocessors() -> List[str]:
    """Names of the registered post-processors."""
    return POSTPROCESSORS.names()


def build_postprocessor(cfg, key: str = 'model.postprocess') -> Optional['PostProcessor']:
    """Build from ``dict(type=NAME, **options)``; None (or an empty dict) means none.

    Args:
        cfg: the config dict, None, or an already built ``PostProcessor``.
        key: the config key named in errors.
    """
    if cfg is None or isinstance(cfg, PostProcessor):
        return cfg
    if not isinstance(cfg, dict):
        raise ValueError(f'{key}={cfg!r}: expected None or a dict with a type key, one of {list_postprocessors()}')
    if not cfg:
        return None
    cfg = dict(cfg)
    cls = POSTPROCESSORS.get(cfg.pop('type', None), key)
    POSTPROCESSORS.check_options(cls, cfg, key)
    return cls(key=key, **cfg)


class PostProcessor:
    """Base class: image-guided refinement of query logits.

    Subclasses take their options as keywords (plus ``key``, the config key
    used in error messages) and implement ``__call__``.
    """
    postprocessor_name = 'PostProcessor'

    def __call__(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Refine logits (B, Q, h, w) with guidance ``image`` (B, 3, H, W); returns (B, Q, H, W)."""
        raise NotImplementedError

    def check_size(self, size: Tuple[int, int]) -> None:
        """Refuse an image size the options do not fit (one-line error); any size by default."""

    def bands(self, image: torch.Tensor, rows: Callable[[int, int, int, int], torch.Tensor], num_queries: int
              ) -> Optional[Tuple[List[Tuple[int, int]], Callable[[int, int], torch.Tensor]]]:
        """The refinement a band of rows at a time, or None where there is no banded form.

        Args:
            image: guidance (1, 3, H, W) at the output size.
            rows: ``rows(lo, hi, c0, c1)`` -> logits of queries ``c0:c1`` on rows
                ``lo:hi`` at the output size, (c1 - c0, hi - lo, W).
            num_queries: Q.

        Returns:
            None (no banded form, or the image is small enough to be refined
            whole), or the bands ``[(start, stop), ...]`` covering the rows in
            order and ``refine(start, stop)`` -> their refined logits
            (Q, stop - start, W), equal to those rows of ``__call__``.
        """
        return None

    def options(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith('_')}

    def describe(self) -> dict:
        return dict(type=self.postprocessor_name, **self.options())


@register_postprocessor('PAMR')
class PAMRPostProcessor(PostProcessor):
    """PAMR on the raw query logits at the original size (``model.postprocess``; ``models/pamr.py``).

    Args:
        num_iter: propagation steps (positive integer); None: the protocol's
            (``protocol.constants.PAMR_NUM_ITER``, 10 as the SCLIP-family code runs it).
        dilations: neighbour distances in pixels, each below the image's longer
            side; None: the protocol's (``PAMR_DILATIONS``, (8, 16)).
        key: the config key named in errors.
    """

    def __init__(self, num_iter: Optional[int] = None, dilations: Optional[Sequence[int]] = None,
                 key: str = 'model.postprocess'):
        num_iter = constants.PAMR_NUM_ITER if num_iter is None else num_iter
        dilations = constants.PAMR_DILATIONS if dilations is None else dilations
        self.num_iter = check_number(num_iter, f'{key}.num_iter', low=1, integer=True)
        self.dilations = check_dilations(dilations, f'{key}.dilations')
        self._key = key

    def check_size(self, size: Tuple[int, int]) -> None:
        check_dilations_fit(self.dilations, size, f'{self._key}.dilations')

    def __call__(self, image: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        self.check_size(tuple(image.shape[-2:]))
        return pamr(image, logits, self.num_iter, self.dilations)

    def bands(self, image, rows, num_queries):
        size = tuple(image.shape[-2:])
        self.check_size(size)
        spans = pamr_spans(size, num_queries, self.num_iter, self.dilations)
        if spans is None:   # the whole image fits: refined at once
            return None
        return spans, partial(pamr_band, image, rows, num_queries, num_iter=self.num_iter, dilations=self.dilations)
