"""Pictures of predictions: colour masks, overlays with a legend, panels.

``ShowPredictionsHook`` saves image | ground truth | prediction panels from
exactly the predictions the metric scored (the test step's outputs), with no
extra post-processing.
"""
import os
import os.path as osp
from typing import List, Optional, Sequence

import numpy as np
from mmengine.hooks import Hook
from mmseg.registry import HOOKS

from .atomic import atomic_path, atomic_write


def make_palette(n: int, seed: int = 7) -> np.ndarray:
    """n distinct-ish RGB colours (deterministic)."""
    rng = np.random.default_rng(seed)
    pal = rng.integers(40, 256, (n, 3)).astype(np.uint8)
    return pal


def colorize(label: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) colours; values outside the palette are black."""
    out = np.zeros((*label.shape, 3), np.uint8)
    valid = label < len(palette)
    out[valid] = palette[label[valid]]
    return out


def overlay(image: np.ndarray, label: np.ndarray, palette: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour mask over an RGB image."""
    color = colorize(label, palette).astype(np.float32)
    return (image.astype(np.float32) * (1 - alpha) + color * alpha).clip(0, 255).astype(np.uint8)


def add_legend(image: np.ndarray, names: Sequence[str], palette: np.ndarray,
               present: Optional[Sequence[int]] = None) -> np.ndarray:
    """Append a legend (colour swatch + class name) under an RGB image."""
    from PIL import Image, ImageDraw
    idx = list(present) if present is not None else list(range(len(names)))
    row_h, cols = 18, max(1, image.shape[1] // 160)
    rows = (len(idx) + cols - 1) // cols
    canvas = Image.new('RGB', (image.shape[1], image.shape[0] + rows * row_h + 4), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 0))
    draw = ImageDraw.Draw(canvas)
    col_w = image.shape[1] // cols
    for n, c in enumerate(idx):
        x, y = (n % cols) * col_w + 4, image.shape[0] + (n // cols) * row_h + 3
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(int(v) for v in palette[c]))
        draw.text((x + 16, y), str(names[c])[:22], fill=(0, 0, 0))
    return np.asarray(canvas)


def titled(image: np.ndarray, title: str) -> np.ndarray:
    from PIL import Image, ImageDraw
    canvas = Image.new('RGB', (image.shape[1], image.shape[0] + 16), (255, 255, 255))
    canvas.paste(Image.fromarray(image), (0, 16))
    ImageDraw.Draw(canvas).text((4, 2), title, fill=(0, 0, 0))
    return np.asarray(canvas)


def hstack(images: List[np.ndarray], gap: int = 4) -> np.ndarray:
    h = max(i.shape[0] for i in images)
    padded = [np.pad(i, ((0, h - i.shape[0]), (0, gap), (0, 0)), constant_values=255) for i in images]
    return np.concatenate(padded, axis=1)[:, :-gap]


def save_rgb(path: str, image: np.ndarray) -> None:
    from PIL import Image
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format='PNG')


def read_rgb(path: str) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert('RGB'))


LABELS_DIR = 'labels'   # raw label maps beside the panels, for the HTML report (clearclip_seg/report)


def save_labels(out_dir: str, img_path: str, classes: Sequence[str], pred: np.ndarray,
                gt: Optional[np.ndarray]) -> None:
    """Save the prediction (and ground truth) as 16-bit label PNGs and index them.

    ``<out_dir>/labels/<stem>_pred.png``, ``<stem>_gt.png`` and ``index.json``
    (``{"classes": [...], "images": {stem: image path}}``): the report puts
    several runs' predictions of one image side by side in these colours.
    """
    import json

    from PIL import Image
    d = osp.join(out_dir, LABELS_DIR)
    os.makedirs(d, exist_ok=True)
    stem = osp.splitext(osp.basename(img_path))[0]
    for kind, label in (('pred', pred), ('gt', gt)):
        if label is not None:
            with atomic_path(osp.join(d, f'{stem}_{kind}.png')) as tmp:
                Image.fromarray(label.astype(np.uint16)).save(tmp, format='PNG')
    index_path = osp.join(d, 'index.json')
    index = {'classes': list(classes), 'images': {}}
    if osp.isfile(index_path):
        with open(index_path, encoding='utf-8') as f:
            index['images'] = json.load(f).get('images', {})
    index['images'][stem] = osp.abspath(img_path)
    atomic_write(index_path, json.dumps(index, indent=1))


@HOOKS.register_module()
class ShowPredictionsHook(Hook):
    """Save image | ground truth | prediction panels for scored test images.

    Args:
        out_dir: folder for the PNG panels.
        max_images: stop after this many images (per process); None = all.
    """
    priority = 'LOW'

    def __init__(self, out_dir: str, max_images: Optional[int] = None):
        self.out_dir = out_dir
        self.max_images = max_images
        self._saved = 0

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if not outputs:
            return
        classes = runner.test_dataloader.dataset.metainfo['classes']
        palette = make_palette(len(classes))
        for sample in outputs:
            if self.max_images is not None and self._saved >= self.max_images:
                return
            image = read_rgb(sample.img_path)
            pred = sample.pred_sem_seg.data[0].cpu().numpy()
            panels = [titled(image, osp.basename(sample.img_path))]
            if 'gt_sem_seg' in sample:
                gt = sample.gt_sem_seg.data[0].cpu().numpy()
                panels.append(titled(colorize(gt, palette), 'ground truth'))
            panels.append(titled(colorize(pred, palette), 'prediction'))
            present = sorted(set(np.unique(pred).tolist()) & set(range(len(classes))))
            panel = add_legend(hstack(panels), classes, palette, present)
            name = osp.splitext(osp.basename(sample.img_path))[0] + '.png'
            save_rgb(osp.join(self.out_dir, name), panel)
            save_labels(self.out_dir, sample.img_path, classes, pred, gt if 'gt_sem_seg' in sample else None)
            self._saved += 1


def add_show_hook(cfg, out_dir: str, max_images: Optional[int] = None) -> None:
    """Add ``ShowPredictionsHook`` to a config (``tools/test.py --show-dir``)."""
    hooks = list(cfg.get('custom_hooks', []) or [])
    hooks.append(dict(type='ShowPredictionsHook', out_dir=out_dir, max_images=max_images))
    cfg.custom_hooks = hooks
