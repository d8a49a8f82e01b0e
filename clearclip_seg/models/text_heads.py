"""Text heads: how the text side makes the classifier rows and folds their logits back into queries.

The plain text side (``model.text_head=None``) is one row per vocabulary query:
every template encoded, L2-normalised, averaged and normalised again
(``text_classifier.build_text_classifier``). A text head replaces that with its
own rows and a per-window fold back to one logit per query, so that methods
that only change the text side (several classifiers fused per window, embeddings
mixed with auxiliary descriptions) work over every dense method of the registry::

    @register_text_head('MyHead')
    class MyHead(TextHead):
        def classifier(self, embed, vocabulary, templates):   # -> (R, dim)
            return torch.cat([embed(vocabulary.queries, t) for t in ...])
        def fuse(self, logits):                              # (B, R, h, w) -> (B, Q, h, w)
            ...

    head = build_text_head(dict(type='MyHead', ...))

``embed(queries, templates)`` is the segmentor's cached encoder: (len(queries), dim),
each row the normalised template average. The method's ``patch_logits`` sees the
R rows as its text and returns (B, R, h, w) per window batch; the segmentor
calls ``fuse_window`` (default: ``fuse``) on every window batch before the
windows are merged, so a head's fusion is per window, as FLOSS's authors run it.

This module is plain torch (no MMSeg).
"""
from typing import Callable, List, Optional, Sequence

import torch

from ..registry import Registry

TEXT_HEADS = Registry('text head', 'model.text_head', 'head_name')
register_text_head = TEXT_HEADS.register

# (queries, templates) -> (len(queries), dim) normalised template-averaged embeddings
Embed = Callable[[Sequence[str], Sequence[str]], torch.Tensor]


def list_text_heads() -> List[str]:
    """Names of the registered text heads."""
    return TEXT_HEADS.names()


def build_text_head(cfg, key: str = 'model.text_head') -> Optional['TextHead']:
    """Build from ``dict(type=NAME, **options)``; None (or an empty dict) means the plain text side."""
    if cfg is None or (isinstance(cfg, dict) and not cfg):
        return None
    if isinstance(cfg, TextHead):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'{key}={cfg!r}: expected None or a dict with a type key, one of {list_text_heads()}')
    cfg = dict(cfg)
    cls = TEXT_HEADS.get(cfg.pop('type'), key)
    TEXT_HEADS.check_options(cls, cfg, f'{key} (type={cls.head_name})')
    return cls(**cfg, key=key)


class TextHead:
    """Base class: the classifier rows (``classifier``) and the per-window fold (``fuse``).

    Subclasses take their options as keyword arguments (the authors' defaults)
    plus ``key`` (the config key, for error messages).
    """
    head_name = 'TextHead'

    def bind(self, vocabulary, templates) -> None:
        """Check the head suits the vocabulary (called once, at build time, before any weights load)."""

    def classifier(self, embed: Embed, vocabulary, templates: Sequence[str]) -> torch.Tensor:
        """The classifier rows (R, dim) the method's patch features are compared with."""
        return embed(vocabulary.queries, templates)

    def fuse(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-window logits over the R rows (B, R, h, w) -> one logit per query (B, Q, h, w)."""
        return logits

    def fuse_window(self, logits: torch.Tensor, size) -> torch.Tensor:
        """``fuse`` with the window's size (H, W), what the segmentor calls per window batch.

        The result may be at the patch grid (it is then upsampled to the window
        bilinearly, as plain logits are) or already at ``size`` (a head that must
        fuse upsampled maps, as FLOSS does). Default: ``fuse(logits)``.
        """
        return self.fuse(logits)

    def options(self) -> dict:
        """The head's resolved options (for records)."""
        return {k: v for k, v in vars(self).items() if not k.startswith('_')}

    def describe(self) -> dict:
        return dict(type=self.head_name, **self.options())
