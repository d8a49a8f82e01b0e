"""Logit post-processors, registered by name (``model.postprocess=dict(type=NAME, ...)``).

A post-processor refines the query logits of one image at its original size,
guided by the image itself, before the logit scale and the softmax (where the
SCLIP-family code runs PAMR: method cards, section 4). Each is a small class
with keyword options whose defaults are the published settings::

    @register_postprocessor('PAMR')
    class PAMRPostProcessor(PostProcessor): ...

    post = build_postprocessor(dict(type='PAMR', num_iter=10))
    logits = post(guidance, logits)      # (B, 3, H, W), (B, Q, h, w) -> (B, Q, H, W)

This module is plain torch (no MMSeg), so it can be tested and reused alone.
"""
from typing import List, Optional

import torch

from ..registry import Registry


def _register_shipped() -> None:
    from . import pamr  # noqa: F401  (registration)


POSTPROCESSORS = Registry('post-processor', 'model.postprocess', 'postprocessor_name', load=_register_shipped)
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

    def options(self) -> dict:
        return {k: v for k, v in vars(self).items() if not k.startswith('_')}

    def describe(self) -> dict:
        return dict(type=self.postprocessor_name, **self.options())
