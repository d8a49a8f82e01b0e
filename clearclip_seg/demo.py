"""Segment your own images with an open vocabulary and draw coloured overlays (``tools/demo.py``).

A model is named by a preset (``clearclip``, ``clip``, ``sclip-style``...: a
last block, ``protocol/presets.py``), a method card (``sclip``, ``naclip``...:
the method with its authors' windows, patch fit, logit scale and
post-processing, ``protocol/methods.py``) or a registered method (``SCLIP``,
``NACLIP``...: its default options under the protocol's windows). Models are
built with ``clearclip_seg.apis.init_segmentor`` from a model config plus the
model's and the demo's overrides (``demo_config``), so ``precision='auto'`` is decided
for the device the model runs on; images are segmented with
``inference_segmentor`` (the benchmarks' test pipeline: BGR read, keep-ratio
resize, the model's normalisation; predictions at the original size).
"""
import os
import os.path as osp
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .apis import ConfigError, inference_segmentor, init_segmentor, load_config, load_image
from .protocol import constants
from .protocol.methods import METHOD_CARDS
from .protocol.presets import PRESETS
from .repo_root import ROOT

IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
NONE_WORDS = ('', 'none', 'null', 'random')
DEFAULT_CONFIG = osp.join(ROOT, 'configs', '_base_', 'models',
                          'clearclip_vit-b16.py')


# -- inputs ----------------------------------------------------------------------
def parse_class_list(text: str) -> List[str]:
    """``"cat, dog , grass"`` -> ``['cat', 'dog', 'grass']`` (one class each)."""
    return [c.strip() for c in text.split(',') if c.strip()]


def model_names() -> List[str]:
    """Every name a demo model can have: presets, method cards, registered methods."""
    from .methods import list_methods  # lazy: the methods import torch; the demo's parser lists them
    return list(dict.fromkeys([*PRESETS, *METHOD_CARDS, *list_methods()]))


def parse_models(items: Sequence[str]) -> List[str]:
    """Model names (presets, method cards, registered methods), space- or comma-separated, checked,
    without duplicates.

    Raises:
        ValueError: an unknown name (with a hint when it looks like an image path) or none.
    """
    names, known = [], model_names()
    for item in items:
        for name in item.split(','):
            name = name.strip()
            if not name:
                continue
            if name not in known:
                hint = (' (image paths go before --method, or write --method a,b)'
                        if osp.splitext(name)[1] or os.sep in name else '')
                raise ValueError(f"unknown method '{name}': expected a preset ({', '.join(PRESETS)}), a method "
                                 f"card ({', '.join(METHOD_CARDS)}) or a registered method "
                                 f"({', '.join(n for n in known if n not in PRESETS and n not in METHOD_CARDS)}){hint}")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError('no method given')
    return names


parse_presets = parse_models  # the name before method cards and registered methods joined the presets


def model_title(name: str) -> str:
    """The name shown over a model's tile in the panel."""
    if name in PRESETS:
        return PRESETS[name].title
    if name in METHOD_CARDS:
        return METHOD_CARDS[name].title
    return name


def model_overrides(name: str) -> Tuple[dict, Optional[Tuple[int, int]]]:
    """``model`` keys that make a model config into ``name``, and its own resize (None: the protocol's).

    A preset sets the last block; a method card its method with its authors' defaults (windows,
    patch fit, logit scale, ``area_thd``, post-processing, resize); a registered method its
    default options.
    """
    if name in PRESETS:
        return dict(last_block=dict(PRESETS[name].last_block)), None
    if name in METHOD_CARDS:
        card = METHOD_CARDS[name]
        d = card.defaults
        test_cfg = dict(mode=d['mode'], crop_size=(d['crop'], d['crop']), stride=(d['stride'], d['stride']),
                        patch_fit=d['patch_fit'])
        return (dict(last_block=None, method=dict(card.method), logit_scale=d['logit_scale'], area_thd=d['area_thd'],
                     postprocess=None if d['postprocess'] is None else dict(d['postprocess']), test_cfg=test_cfg),
                (constants.RESIZE_LONG_SIDE, d['resize']))
    return dict(last_block=None, method=dict(type=name)), None


def collect_images(inputs: Sequence[str]) -> Tuple[List[str], List[Tuple[str, str]]]:
    """Files as given; folders scanned (sorted, not recursive) for image files.

    Returns:
        (paths, problems) where problems are (name, reason) for inputs that
        do not exist or folders without images.
    """
    paths, problems = [], []
    for item in inputs:
        if osp.isdir(item):
            found = sorted(osp.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMAGE_EXTS) and osp.isfile(osp.join(item, f)))
            if not found:
                problems.append((item, f'no {"/".join(e[1:] for e in IMAGE_EXTS)} files in this folder'))
            paths.extend(found)
        elif osp.isfile(item):
            paths.append(item)
        else:
            problems.append((item, 'no such file or folder'))
    return paths, problems


def output_stem(path: str, used: dict) -> str:
    """File-name stem for an image's outputs, unique within a run."""
    stem = osp.splitext(osp.basename(path))[0]
    n = used.get(stem, 0)
    used[stem] = n + 1
    return stem if n == 0 else f'{stem}_{n + 1}'


def earlier_outputs(folder: str) -> List[str]:
    """Pictures a demo run writes (``<image>_<preset>.png``, ``<image>_panel.png``) found in ``folder``."""
    if not osp.isdir(folder):
        return []
    ends = tuple(f'_{p}.png' for p in (*model_names(), 'panel'))
    return [f for f in os.listdir(folder) if f.endswith(ends) and osp.isfile(osp.join(folder, f))]


# -- models ----------------------------------------------------------------------
def demo_config(name: str, vocabulary, config: str = DEFAULT_CONFIG, arch: Optional[str] = None,
                arch_file: Optional[str] = None, pretrained: Optional[str] = None,
                precision: Optional[str] = None, prob_thd: float = 0.0, crop: Optional[int] = None,
                stride: Optional[int] = None, templates: Optional[str] = None,
                cfg_options: Optional[dict] = None):
    """The model config of one demo model: a config file plus the model's and the demo's overrides.

    Args:
        name: a preset, method card or registered method (``model_names``; ``model_overrides``).
        vocabulary: class names (a list) or a vocabulary file / shipped name.
        config: a config with a ``model`` (default: ClearCLIP on ViT-B/16).
        arch, arch_file, pretrained, precision: ``model.clip`` overrides;
            ``arch_file`` alone means random weights; ``pretrained`` 'none' too.
        prob_thd, crop, stride, templates: scoring overrides; crop and stride, when given,
            replace the model's own windows (a method card's, else the protocol's).
        cfg_options: further ``{'a.b': value}`` overrides, applied last.

    Raises:
        ConfigError: the config is missing or has no model.
    """
    cfg = load_config(config)
    if 'model' not in cfg:
        raise ConfigError(f"config '{config}' has no model")
    clip = dict(cfg.model.get('clip', {}))
    if arch_file:
        clip.update(arch_file=arch_file, arch=arch, pretrained=None)  # arch None: the file's own name
    elif arch:
        clip['arch'] = arch
    if pretrained is not None:
        clip['pretrained'] = None if pretrained.lower() in NONE_WORDS else pretrained
    if precision:
        clip['precision'] = precision
    own, _ = model_overrides(name)
    test_cfg = dict(cfg.model.get('test_cfg') or {}, mode='slide', crop_size=(constants.SLIDE_CROP,) * 2,
                    stride=(constants.SLIDE_STRIDE,) * 2)
    test_cfg.update(own.pop('test_cfg', {}))
    if crop is not None:
        test_cfg['crop_size'] = (crop, crop)
    if stride is not None:
        test_cfg['stride'] = (stride, stride)
    model = cfg.model
    model.clip = clip
    for key, value in own.items():
        model[key] = value
    model.vocabulary = vocabulary
    model.prob_thd = prob_thd
    model.test_cfg = test_cfg
    if templates:
        model.templates = templates
    # last: any key can still be overridden (each checked: a typo is an error, not a silent default)
    return load_config(cfg, cfg_options)


def demo_scales(names: Sequence[str], scale: Optional[Tuple[int, int]] = None) -> Dict[str, Tuple[int, int]]:
    """Each model's keep-ratio resize: ``scale`` when given, else its own (a method card's) or the protocol's."""
    return {n: tuple(scale or model_overrides(n)[1] or constants.RESIZE) for n in names}


def build_models(names: Sequence[str], vocabulary, device=None, seed: int = 0,
                 log: Callable[[str], None] = print, **overrides) -> Dict[str, object]:
    """One segmentor per model name (``init_segmentor``), each built after ``torch.manual_seed(seed)``.

    With random weights every model then has the same CLIP weights. ``overrides``
    are ``demo_config``'s keywords.
    """
    import torch

    models = {}
    for p in names:
        t0 = time.perf_counter()
        cfg = demo_config(p, vocabulary, **overrides)
        torch.manual_seed(seed)
        try:
            models[p] = init_segmentor(cfg, device=device)
        except (ValueError, FileNotFoundError, KeyError) as e:  # bad arch, method, weights: one line
            if isinstance(e, ConfigError):
                raise
            raise ConfigError(f'{p}: {model_error_line(e)}') from e
        m = models[p]
        log(f'built {p} ({m.arch}, {m.pretrained or "random weights"}, {m.precision}) in '
            f'{time.perf_counter() - t0:.1f}s')
    return models


def model_error_line(err: BaseException) -> str:
    """The last line of a build error, without MMEngine's ``class `X` in module:`` prefix."""
    import re
    text = str(err).strip()
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])
    line = text.splitlines()[-1] if text else type(err).__name__
    return re.sub(r'^class `\w+` in [\w./]+: ', '', line)


# -- pictures --------------------------------------------------------------------
def _fit(image: np.ndarray, label: np.ndarray, long_side: int):
    """Downscale an RGB image (bilinear) and its labels (nearest) to a long side."""
    from PIL import Image
    h, w = label.shape
    s = long_side / max(h, w)
    if s >= 1:
        return image, label
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = Image.fromarray(image).resize(size, Image.BILINEAR)
    lab = Image.fromarray(label.astype('int32')).resize(size, Image.NEAREST)
    return np.asarray(img), np.asarray(lab).astype(label.dtype)


def draw(rgb: np.ndarray, labels: Dict[str, np.ndarray], classes: Sequence[str], out_dir: str, stem: str,
         title: str, alpha: float = 0.5, panel_size: int = 512) -> List[str]:
    """Write ``<stem>_<preset>.png`` per preset (overlay + legend) and, with several, ``<stem>_panel.png``.

    Returns:
        The paths written.
    """
    from .visualization import add_legend, hstack, make_palette, overlay, save_rgb, titled  # lazy: it imports MMSeg
    palette = make_palette(len(classes))
    written = []
    for p, lab in labels.items():
        present = sorted(int(c) for c in np.unique(lab) if c < len(classes))
        written.append(osp.join(out_dir, f'{stem}_{p}.png'))
        save_rgb(written[-1], add_legend(overlay(rgb, lab, palette, alpha), classes, palette, present))
    if len(labels) > 1:
        tiles = []
        for p, lab in labels.items():
            small, slab = _fit(rgb, lab, panel_size)
            if not tiles:
                tiles.append(titled(small, title[:40]))
            tiles.append(titled(overlay(small, slab, palette, alpha), model_title(p)))
        present = sorted(set().union(*[set(np.unique(lab).tolist()) for lab in labels.values()])
                         & set(range(len(classes))))
        written.append(osp.join(out_dir, f'{stem}_panel.png'))
        save_rgb(written[-1], add_legend(hstack(tiles), classes, palette, present))
    return written


def segment_images(models: Dict[str, object], paths: Sequence[str], out_dir: str,
                   scale=None, alpha: float = 0.5, panel_size: int = 512,
                   log: Callable[[str], None] = print) -> Tuple[int, int]:
    """Segment each image with every model and draw the pictures; unreadable images are skipped by name.

    ``scale`` is the keep-ratio resize bound: one ``(long, short)`` for every model, or
    ``{name: (long, short)}`` (``demo_scales``); default each model's own (``demo_scales``).

    Returns:
        (images segmented, images skipped).
    """
    scales = scale if isinstance(scale, dict) else demo_scales(list(models), scale)
    classes = list(next(iter(models.values())).vocabulary.classes)
    used, ok, bad = {}, 0, 0
    for path in paths:
        name = osp.basename(path)
        try:
            img_bgr = load_image(path)
        except (OSError, ValueError) as e:
            bad += 1
            log(f'skipped {name}: {e}')
            continue
        try:
            stem = output_stem(path, used)
            t0 = time.perf_counter()
            labels = {p: inference_segmentor(m, img_bgr, scale=scales[p]).labels for p, m in models.items()}
            written = draw(np.ascontiguousarray(img_bgr[..., ::-1]), labels, classes, out_dir, stem, name,
                           alpha, panel_size)
        except Exception as e:  # one bad image must not stop the others; say which and why
            bad += 1
            log(f'skipped {name}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ""}')
            continue
        ok += 1
        found = sorted({classes[c] for lab in labels.values() for c in np.unique(lab) if c < len(classes)})
        log(f'{name}: {img_bgr.shape[1]}x{img_bgr.shape[0]}, {time.perf_counter() - t0:.1f}s, '
            f'classes {", ".join(found)} -> {", ".join(osp.basename(w) for w in written)}')
    return ok, bad
