"""The segmentor's dict options, resolved and checked (one-line errors naming the key).

Kept apart from ``segmentor.py`` so the rules (defaults, ranges, the
``last_block`` / ``method`` relation) read in one place and are testable
without MMSeg.
"""
from typing import Optional

import torch

from .methods import build_method
from .methods.last_block import LastBlock
from .options import check_bool, check_keys, check_number, check_pair
from .protocol import constants

TEST_MODES = ('slide', 'whole')
# How windows whose size is not a patch multiple reach the encoder:
#   pad      - zero-padded around (left = pad // 2), logits cut back (ClearCLIP's protocol)
#   truncate - whole window in, conv1 drops the remainder rows/columns, the h x w
#              logits are stretched over the whole window (SCLIP / NACLIP / ResCLIP code)
PATCH_FITS = ('pad', 'truncate')


def default_test_cfg() -> dict:
    """``model.test_cfg``'s defaults: the protocol's windows (``protocol.constants``), read when called."""
    return dict(mode=constants.TEST_MODE, crop_size=(constants.SLIDE_CROP,) * 2, stride=(constants.SLIDE_STRIDE,) * 2,
                max_windows='auto', patch_fit='pad', keep_probs=True)


def resolve_test_cfg(test_cfg: Optional[dict]) -> dict:
    """``model.test_cfg`` with defaults filled in; unknown keys and bad values are errors.

    Keys: ``mode`` (slide | whole), ``crop_size`` / ``stride`` (positive int
    or (h, w) pair, stride <= crop), ``max_windows`` (positive int or 'auto'),
    ``patch_fit`` (pad | truncate), ``keep_probs`` (store the class
    probabilities at the original size as ``seg_logits``; False keeps only the
    labels, computed in bounded memory).
    """
    given = dict(test_cfg or {})
    defaults = default_test_cfg()
    check_keys(given, defaults, 'model.test_cfg')
    cfg = {**defaults, **given}
    if cfg['mode'] not in TEST_MODES:
        raise ValueError(f"unknown test mode {cfg['mode']!r} (model.test_cfg.mode): expected one of {list(TEST_MODES)}")
    crop = check_pair(cfg['crop_size'], 'model.test_cfg.crop_size')
    stride = check_pair(cfg['stride'], 'model.test_cfg.stride')
    if stride[0] > crop[0] or stride[1] > crop[1]:
        raise ValueError(f"model.test_cfg.stride={cfg['stride']!r}: expected at most model.test_cfg.crop_size="
                         f"{cfg['crop_size']!r} (a larger stride leaves pixels no window covers)")
    cfg['crop_size'], cfg['stride'] = list(crop), list(stride)  # lists: as the JSON record holds them
    check_max_windows(cfg['max_windows'])
    if cfg['patch_fit'] not in PATCH_FITS:
        raise ValueError(f"model.test_cfg.patch_fit={cfg['patch_fit']!r}: expected one of {list(PATCH_FITS)}")
    cfg['keep_probs'] = check_bool(cfg['keep_probs'], 'model.test_cfg.keep_probs')
    return cfg


# What ``max_windows='auto'`` resolves to (docs/performance.md, "Window batch and precision"):
# a GPU wants big batches; a CPU in fp32 is as fast one window at a time (and holds the least);
# a CPU computing in bf16/fp16 gains from a few windows per batch.
AUTO_MAX_WINDOWS = dict(cuda=16, cpu=1, cpu_low_precision=4)


def resolve_max_windows(value, device, dtype) -> int:
    """``model.test_cfg.max_windows`` as a number: ``'auto'`` by device and the encoder's dtype."""
    value = check_max_windows(value)
    if value != 'auto':
        return value
    if torch.device(device).type == 'cuda':
        return AUTO_MAX_WINDOWS['cuda']
    low = dtype in (torch.bfloat16, torch.float16)
    return AUTO_MAX_WINDOWS['cpu_low_precision' if low else 'cpu']


def check_max_windows(value):
    """``'auto'`` or a positive integer."""
    if value == 'auto':
        return value
    if isinstance(value, str):
        raise ValueError(f"model.test_cfg.max_windows={value!r}: expected a positive integer or 'auto'")
    return check_number(value, 'model.test_cfg.max_windows', low=1, integer=True)


def check_thresholds(logit_scale, prob_thd, area_thd):
    """``model.logit_scale`` > 0, ``model.prob_thd`` in [0, 1], ``model.area_thd`` None or in [0, 1]."""
    logit_scale = check_number(logit_scale, 'model.logit_scale', low=0, low_open=True)
    prob_thd = check_number(prob_thd, 'model.prob_thd', low=0, high=1)
    if area_thd is not None:
        area_thd = check_number(area_thd, 'model.area_thd', low=0, high=1)
    return logit_scale, prob_thd, area_thd


def resolve_method(method, last_block: Optional[dict]):
    """The dense method: ``model.method`` if given, else ``LastBlock`` from ``model.last_block``.

    ``model.last_block`` keeps its meaning (the three switches of ``LastBlock``,
    defaults ClearCLIP's: ``protocol.constants.CLEARCLIP_LAST_BLOCK``). With
    ``model.method`` of another type it must be None; with
    ``model.method.type='LastBlock'`` the two must agree.
    """
    if last_block is not None:
        last_block = dict(last_block)
        check_keys(last_block, constants.CLEARCLIP_LAST_BLOCK, 'model.last_block')
    if method is None:
        return LastBlock(**{**constants.CLEARCLIP_LAST_BLOCK, **(last_block or {})}, key='model.last_block')
    built = build_method(method)
    if last_block is None:
        return built
    if not isinstance(built, LastBlock):
        raise ValueError(f'model.last_block={last_block!r} and model.method.type={built.method_name!r} both set: '
                         'last_block only configures the LastBlock method; set model.last_block=None')
    clash = {k: v for k, v in last_block.items() if built.options()[k] != v}
    if clash:
        raise ValueError(f'model.last_block {clash!r} conflicts with model.method {built.describe()!r}: '
                         'set one of them')
    return built
