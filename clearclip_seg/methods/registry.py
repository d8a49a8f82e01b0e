"""The method registry: training-free dense-prediction methods picked by name.

A method decides how a window's per-patch query logits are computed from a
wrapped CLIP tower (``DenseCLIPEncoder``): which blocks run unchanged, what the
last block(s) do, and how patch features meet the text classifier. Everything
around it (resize, windows, text classifier, post-processing, thresholds) stays
in the segmentor, so adding a method is one module here.

Like timm's ``register_model`` / ``create_model``::

    @register_method('NACLIP')
    class NACLIP(DenseMethod): ...

    method = build_method(dict(type='NACLIP', gaussian_std=5.0))
"""
from typing import Callable, Dict, List, Optional, Type

import torch
import torch.nn.functional as F

_METHODS: Dict[str, Type['DenseMethod']] = {}


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator: make a ``DenseMethod`` buildable by ``type=name``."""
    def wrap(cls):
        if name in _METHODS and _METHODS[name] is not cls:
            raise KeyError(f"method '{name}' is registered twice")
        _METHODS[name] = cls
        cls.method_name = name
        return cls
    return wrap


def list_methods() -> List[str]:
    """Names of the registered methods."""
    return sorted(_METHODS)


def get_method_class(name: str) -> Type['DenseMethod']:
    if name not in _METHODS:
        raise ValueError(f"unknown method '{name}' (model.method.type): expected one of {list_methods()}")
    return _METHODS[name]


def build_method(cfg) -> 'DenseMethod':
    """Build a method from ``dict(type=NAME, **options)`` (or pass an instance through)."""
    if isinstance(cfg, DenseMethod):
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(f'model.method={cfg!r}: expected a dict with a type key, one of {list_methods()}')
    cfg = dict(cfg)
    cls = get_method_class(cfg.pop('type'))
    return cls(**cfg)


class DenseMethod:
    """Base class: per-patch query logits of a batch of same-sized windows.

    Subclasses set their options in ``__init__`` (keyword arguments whose
    defaults are the authors' published settings) and override ``features``
    (projected patch features) or, when the text classifier takes part in the
    forward pass itself, ``patch_logits``.
    """
    method_name = 'DenseMethod'

    def bind(self, encoder) -> None:
        """Check that the wrapped tower suits the method (called once, at build time)."""

    def features(self, encoder, x: torch.Tensor) -> torch.Tensor:
        """Projected patch features (B, gh, gw, dim), not normalised."""
        raise NotImplementedError

    def patch_logits(self, encoder, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """Cosine similarities (B, Q, gh, gw) of patches ``x`` with the text embeddings ``text`` (Q, dim)."""
        feats = F.normalize(self.features(encoder, x).float(), dim=-1)
        return torch.einsum('bhwc,qc->bqhw', feats, text.to(feats.dtype))

    def options(self) -> dict:
        """The method's resolved options (for records and protocol cards)."""
        return {k: v for k, v in vars(self).items() if not k.startswith('_')}

    def describe(self) -> dict:
        return dict(type=self.method_name, **self.options())
