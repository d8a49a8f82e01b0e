"""Which runs may share one pass: everything up to the last block's input must be the same.

Runs share a pass when everything up to the last block's input is the same:
the segmentor type, the CLIP (arch, weights, precision as resolved, QuickGELU),
the normalisation, the windows (``test_cfg``, all of it: a different batch of
windows would give different batches to the trunk), the random seed (random
weights are drawn from it) and the image set (data root, image folder, split
file, and the pipeline up to the labels: the resize). Everything after it may
differ per run: the method's last-block options, the vocabulary and templates,
the thresholds, the scoring, the post-processing and the labels and metric of
the benchmark. A model key this module does not know counts as "before the
last block": an unknown key never lets two runs share wrongly.

Only methods that declare ``shares_trunk`` (``DenseMethod``) are grouped;
``model.compile`` runs are not (the compiled graph would not see the shared
tokens). The pass checks again at run time that the grouped datasets list the
same images in the same order, and replays the trunk only on equal windows.
"""
import hashlib
import json
import os.path as osp
from typing import Optional, Tuple

from .identity import as_plain

# model keys used only after the tokens entering the last block: they may differ within a pass
HEAD_KEYS = ('vocabulary', 'templates', 'logit_scale', 'logit_bias', 'prob_thd', 'area_thd', 'last_block',
             'method', 'text_cache', 'postprocess', 'scoring', 'fused_attn')
SHAREABLE_SEGMENTORS = ('ClearCLIPSegmentor',)


class ShareError(ValueError):
    """Runs asked to share a pass cannot; the message is one line naming them."""


def method_shares_trunk(model_cfg: dict) -> Tuple[bool, str]:
    """(shareable, why not) from a model config's method (``model.method`` or the legacy ``last_block``)."""
    if model_cfg.get('type') not in SHAREABLE_SEGMENTORS:
        return False, f"segmentor {model_cfg.get('type')!r} is not one the shared pass knows"
    if model_cfg.get('compile'):
        return False, 'model.compile=True'
    method = model_cfg.get('method')
    if not method:
        return True, ''  # the switchable last block (LastBlock)
    from ..methods import get_method_class  # lazy: the methods import torch; planning does not
    name = method.get('type') if isinstance(method, dict) else None
    try:
        cls = get_method_class(name)
    except ValueError:
        return False, f'unknown method {name!r}'
    if not getattr(cls, 'shares_trunk', False):
        return False, f'method {name} does not declare shares_trunk'
    return True, ''


def image_set_key(cfg) -> dict:
    """The images a run reads, as its config says: root, folder, split, suffix and the pipeline before the labels."""
    ds = as_plain(cfg.test_dataloader.dataset)
    pipeline = [t for t in ds.get('pipeline') or [] if t.get('type') != 'LoadAnnotations']
    return dict(data_root=osp.abspath(ds['data_root']) if ds.get('data_root') else None,
                img_path=(ds.get('data_prefix') or {}).get('img_path'), ann_file=ds.get('ann_file'),
                img_suffix=ds.get('img_suffix'), pipeline=pipeline,
                batch_size=as_plain(cfg.test_dataloader).get('batch_size', 1))


def share_key(cfg, precision: str) -> Tuple[Optional[dict], str]:
    """The settings a run must have in common with the others of a shared pass.

    Args:
        cfg: the run's resolved config (overrides merged, data root absolute).
        precision: the precision ``'auto'`` resolves to where the run will execute.

    Returns:
        (key, '') or (None, why the run cannot share).
    """
    model = as_plain(cfg.model)
    ok, why = method_shares_trunk(model)
    if not ok:
        return None, why
    trunk = {k: v for k, v in model.items() if k not in HEAD_KEYS}
    trunk.setdefault('clip', {})['precision'] = precision
    randomness = as_plain(cfg.get('randomness') or {})
    return dict(model=trunk, seed=randomness.get('seed'), images=image_set_key(cfg)), ''


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
