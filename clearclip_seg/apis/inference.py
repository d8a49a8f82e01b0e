"""Build a segmentor from a config and run it on single images.

``init_segmentor`` and ``inference_segmentor`` are what the demo, the
analysis and the speed tools use; ``evaluate`` (``evaluate.py``) runs a whole
benchmark (``clearclip_seg.evaluation.passes``).
"""
from dataclasses import dataclass, field
from typing import List, Optional, Union

import numpy as np

from .. import register_all_modules
from ..protocol.constants import RESIZE
from .config import load_config, pin_precision, resolve_device


@dataclass
class SegResult:
    """One image's prediction at its original size.

    Attributes:
        labels: (H, W) int64 class indices.
        probs: (C, H, W) float32 class probabilities (per class, the max over its synonyms).
        query_logits: (Q, H_in, W_in) averaged cosine logits at the network-input size.
        classes: the class names, in label order: ``classes[labels[y, x]]`` names the pixel's class.
    """
    labels: np.ndarray
    probs: np.ndarray
    query_logits: Optional[np.ndarray] = None
    classes: List[str] = field(default_factory=list)

    def present(self) -> List[str]:
        """The names of the classes predicted somewhere in the image, in label order."""
        return [self.classes[i] for i in np.unique(self.labels) if 0 <= i < len(self.classes)]


def init_segmentor(config, pretrained: Optional[str] = None, device=None,
                   cfg_options: Optional[dict] = None, build_text: bool = True):
    """Build the segmentor of a config, in eval mode on ``device``.

    Args:
        config: config path or ``mmengine.Config``.
        pretrained: overrides ``model.clip.pretrained`` (an open_clip tag, a
            checkpoint file, or ``'none'`` for random weights).
        device: ``'cpu'``, ``'cuda'``, ``'cuda:1'``...; None picks the GPU when there is one.
        cfg_options: ``{'a.b': value}`` overrides.
        build_text: build (or load from cache) the text classifier now.

    Returns:
        The ``ClearCLIPSegmentor``; its config is ``model.cfg``.
    """
    register_all_modules()
    from mmseg.registry import MODELS

    cfg = load_config(config, cfg_options)
    if pretrained is not None:
        cfg.model.clip['pretrained'] = None if str(pretrained).lower() == 'none' else pretrained
    device = resolve_device(device)
    pin_precision(cfg, device)
    model = MODELS.build(cfg.model).to(device).eval()
    model.cfg = cfg
    if build_text:
        model.build_text_classifier()
    return model


def load_image(path: str) -> np.ndarray:
    """Read an image as BGR uint8 (MMSeg's loader), naming the file on failure."""
    import mmcv
    import os
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image '{path}' not found")
    if os.path.getsize(path) == 0:
        raise ValueError(f"image '{path}' is an empty file")
    try:
        img = mmcv.imread(path, flag='color', channel_order='bgr')
    except Exception as e:  # cv2/PIL errors carry no file name
        raise ValueError(f"image '{path}' cannot be decoded ({e})") from None
    if img is None:
        raise ValueError(f"image '{path}' cannot be decoded")
    return img


def _test_resize(cfg):
    """The config's test-time ``Resize``; the protocol's when the config has no data pipeline."""
    pipeline = cfg.get('test_pipeline', None)
    if not pipeline and cfg.get('test_dataloader', None) is not None:
        pipeline = cfg.test_dataloader.dataset.get('pipeline', [])
    if not pipeline:
        return RESIZE, True
    for t in pipeline:
        if t.get('type') == 'Resize':
            return tuple(t['scale']), bool(t.get('keep_ratio', True))
    return None, True


def preprocess(model, img_bgr: np.ndarray, scale=None):
    """An image as the test pipeline gives it to the model: resized, normalised (1, 3, h, w).

    Args:
        model: from ``init_segmentor`` (its ``cfg`` gives the resize).
        img_bgr: (H, W, 3) uint8, BGR.
        scale: ``(long, short)`` keep-ratio resize; None uses the config's.
    """
    import mmcv
    import torch
    if scale is None:
        scale, _ = _test_resize(model.cfg)
    if scale is not None:
        img_bgr = mmcv.imrescale(img_bgr, tuple(scale), interpolation='bilinear', backend='cv2')
    x = torch.from_numpy(np.ascontiguousarray(img_bgr.transpose(2, 0, 1))).to(model.query_to_class.device)
    data = model.data_preprocessor(dict(inputs=[x], data_samples=None), training=False)
    inputs = data['inputs']
    return inputs if isinstance(inputs, torch.Tensor) else torch.stack(inputs)


def inference_segmentor(model, image: Union[str, np.ndarray], scale=None,
                        return_logits: bool = False) -> SegResult:
    """Segment one image (path or BGR uint8 array) at its original size; the result names its classes."""
    import torch
    from mmseg.structures import SegDataSample
    img = load_image(image) if isinstance(image, str) else image
    inputs = preprocess(model, img, scale)
    sample = SegDataSample(metainfo=dict(ori_shape=img.shape[:2], img_shape=tuple(inputs.shape[-2:])))
    with torch.no_grad():
        res = model.predict(inputs, [sample], keep_probs=True)[0]  # probs wanted whatever the config says
        logits = model.query_logits(inputs)[0] if return_logits else None
    return SegResult(labels=res.pred_sem_seg.data[0].cpu().numpy().astype(np.int64),
                     probs=res.seg_logits.data.float().cpu().numpy(),
                     query_logits=logits.float().cpu().numpy() if logits is not None else None,
                     classes=list(model.vocabulary.classes))
