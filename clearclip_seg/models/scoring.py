"""Query logits -> per-query probabilities, picked by name (``model.scoring``).

* ``softmax`` (the protocol, default): ``softmax_q(s * logit_scale)`` over the
  queries, so tables stay comparable across backbones.
* ``sigmoid``: ``sigmoid(s * logit_scale + logit_bias)`` per query, the way
  SigLIP-style models were trained to score an image-text pair.

``s`` is the cosine similarity. ``logit_scale`` and ``logit_bias`` may be
numbers, or ``'model'`` for the CLIP's own learned values (``exp(logit_scale)``
and ``logit_bias``; a model without a bias has 0).
"""
from typing import Callable, Dict, Optional, Union

import torch

from ..options import ConfigError, check_number
from ..protocol import constants
from .classify import labels_from_probs, suppress_small_classes

Number = Union[int, float, str]


def _softmax(logits: torch.Tensor, scale: float, bias: float) -> torch.Tensor:
    # a bias shared by every query cancels in the softmax: it is ignored
    return torch.softmax(logits * scale, dim=0)


def _sigmoid(logits: torch.Tensor, scale: float, bias: float) -> torch.Tensor:
    return torch.sigmoid(logits * scale + bias)


SCORINGS: Dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    'softmax': _softmax,
    'sigmoid': _sigmoid,
}


def check_scoring(name: str) -> str:
    if name not in SCORINGS:
        raise ValueError(f"unknown scoring '{name}' (model.scoring): expected one of {list(SCORINGS)}")
    return name


def resolve_logit(value: Number, key: str, clip_model=None) -> float:
    """A number, or ``'model'``: the CLIP's learned ``exp(logit_scale)`` / ``logit_bias``."""
    if value == 'model':
        if clip_model is None:
            raise ValueError(f"{key}='model' needs the CLIP model")
        if key.endswith('logit_scale'):
            return float(clip_model.logit_scale.detach().exp().float())
        bias = getattr(clip_model, 'logit_bias', None)
        return 0.0 if bias is None else float(bias.detach().float().reshape(-1)[0])
    return check_number(value, key)


class Scorer:
    """Per-query probabilities (Q, H, W) from cosine logits (Q, H, W).

    Args:
        scoring: a key of ``SCORINGS``.
        logit_scale: multiplies the cosine similarities (number or ``'model'``); None:
            the protocol's (``protocol.constants.LOGIT_SCALE``).
        logit_bias: added before a sigmoid (number or ``'model'``); no effect on softmax.
        clip_model: the CLIP, to resolve ``'model'``.
    """

    def __init__(self, scoring: str = 'softmax', logit_scale: Optional[Number] = None, logit_bias: Number = 0.0,
                 clip_model=None):
        self.scoring = check_scoring(scoring)
        logit_scale = constants.LOGIT_SCALE if logit_scale is None else logit_scale
        self.logit_scale = resolve_logit(logit_scale, 'model.logit_scale', clip_model)
        self.logit_bias = resolve_logit(logit_bias, 'model.logit_bias', clip_model)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return SCORINGS[self.scoring](logits, self.logit_scale, self.logit_bias)


def classify_scored(logits: torch.Tensor, scorer: Scorer, query_to_class: torch.Tensor, num_classes: int,
                    prob_thd: float = 0.0, area_thd=None):
    """``classify.classify`` with ``scorer`` in place of the softmax (query logits (Q, H, W) at full size).

    Per-query probabilities, then per class the max over its synonyms, the area
    rule if set, argmax and ``prob_thd``: the same steps as the protocol.
    """
    probs = scorer(logits)
    if probs.shape[0] != num_classes:  # synonyms: max over each class's queries
        idx = query_to_class.view(-1, *([1] * (probs.dim() - 1))).expand_as(probs)
        probs = probs.new_full((num_classes, *probs.shape[1:]), -1.0).scatter_reduce(0, idx, probs, reduce='amax')
    if area_thd is not None:
        probs = suppress_small_classes(probs, area_thd)
    return probs, labels_from_probs(probs, prob_thd)


def check_finite_logits(logits: torch.Tensor, meta: dict, model) -> None:
    """Stop, naming the image, method and options, when an image's query logits hold NaN or inf.

    Called once per image on its final query logits (network-input size, before
    resizing and the argmax): one ``isfinite().all()`` reduction. A NaN would
    otherwise become class 0 on every pixel and a plausible-looking, wrong mIoU.
    """
    if bool(torch.isfinite(logits).all()):
        return
    nan = int(torch.isnan(logits).sum())
    inf = int(torch.isinf(logits).sum())
    method = getattr(model, 'method', None)
    described = method.describe() if hasattr(method, 'describe') else None
    options = {k: v for k, v in (described or {}).items() if k != 'type' and not isinstance(v, dict)}
    image = meta.get('img_path') or 'an input image'
    raise ConfigError(f"non-finite query logits ({nan} NaN, {inf} inf of {logits.numel()}) for image '{image}' "
                      f"from method {(described or {}).get('type', type(method).__name__)} with options {options} "
                      f'and model.logit_scale={getattr(model, "logit_scale", None)!r}: one of these options '
                      'leaves the method without a finite value (e.g. an attention with every entry masked); '
                      'change it')
