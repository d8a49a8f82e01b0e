#!/usr/bin/env python
"""Segment your own images with an open vocabulary and save coloured overlays.

    python tools/demo.py IMAGE_OR_DIR... (--vocab "cat, dog, grass" | --vocab-file FILE)
        [--preset clearclip [clip maskclip sclip ...]] [--config CONFIG]
        [--arch ViT-B-16 --pretrained openai | --arch-file JSON] [--precision auto]
        [--out DIR]

Vocabulary: ``--vocab`` is a comma-separated list of classes, one query each
(``"cat, dog, grass"`` = 3 classes). Synonyms need a vocabulary file
(``--vocab-file``): one class per line, commas separating the synonyms of that
line's class (docs/protocol.md); a shipped name such as ``voc21`` also works.

For each image and preset: ``<out>/<image>_<preset>.png``, the image with the
predicted mask blended over it and a legend of the classes present. With
several presets also ``<out>/<image>_panel.png``: the image and each preset's
overlay side by side. Directories are scanned (not recursively) for
jpg/jpeg/png/bmp/webp files. Images that cannot be read are reported by name
on one line each and skipped; the exit code is non-zero only if no image
succeeded.

The model is built through the config system (default
``configs/_base_/models/clearclip_vit-b16.py``) with the preset's last block,
the given vocabulary, ``prob_thd`` (default 0) and slide inference (crop 448,
stride 224); images are prepared like the benchmarks' test pipeline (BGR read,
keep-ratio resize to (2048, 448), the model's normalisation) and predictions
come back at the original size. It runs on a CPU.

Without network access use a local checkpoint (``--pretrained /path/to/ckpt``)
or, for a format check, the tiny random test model
(``--arch-file tests/assets/clearclip-tiny-vit.json``).
"""
import argparse
import os
import os.path as osp
import sys
import time

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

DEFAULT_CONFIG = osp.join(ROOT, 'configs', '_base_', 'models', 'clearclip_vit-b16.py')
IMAGE_EXTS = ('.jpg', '.jpeg', '.png', '.bmp', '.webp')
NONE_WORDS = ('', 'none', 'null', 'random')


def parse_args(argv=None):
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Open-vocabulary segmentation of your own images (coloured overlays with a legend)',
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Example: python tools/demo.py photos/ --vocab "cat, dog, grass, sky" '
               '--preset clearclip clip --out demo_out')
    parser.add_argument('inputs', nargs='+', help='image files and/or folders of images')
    voc = parser.add_mutually_exclusive_group(required=True)
    voc.add_argument('--vocab', help='comma-separated class names, e.g. "cat, dog, grass" (no synonyms)')
    voc.add_argument('--vocab-file', help='vocabulary file (one class per line, commas separate synonyms) '
                                          'or a shipped name such as voc21')
    parser.add_argument('--preset', nargs='+', default=['clearclip'],
                        help='one or more method presets (space- or comma-separated): clearclip, clip, '
                             'maskclip, maskclip-nores, sclip-style, sclip-style-nores, ... (default clearclip)')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='model config (default: configs/_base_/models/clearclip_vit-b16.py)')
    parser.add_argument('--arch', help='open_clip architecture (default: the config\'s, ViT-B-16)')
    parser.add_argument('--pretrained', help='open_clip tag or checkpoint file; "none" = random weights '
                                             '(default: the config\'s, openai; none with --arch-file)')
    parser.add_argument('--arch-file', help='JSON architecture to register with open_clip (e.g. the tiny '
                                            'test model tests/assets/clearclip-tiny-vit.json)')
    parser.add_argument('--precision', default=None, help='auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16')
    parser.add_argument('--prob-thd', type=float, default=0.0, help='pixels below it become class 0 (default 0)')
    parser.add_argument('--crop', type=int, default=448, help='slide window size (default 448)')
    parser.add_argument('--stride', type=int, default=224, help='slide window stride (default 224)')
    parser.add_argument('--scale', type=int, nargs=2, default=(2048, 448), metavar=('LONG', 'SHORT'),
                        help='keep-ratio resize bound, as the test pipeline (default 2048 448)')
    parser.add_argument('--templates', default=None, help='prompt templates (default: the config\'s, the '
                                                          '80 OpenAI ImageNet templates)')
    parser.add_argument('--device', default=None, help='cpu, cuda, ... (default: cuda if available)')
    parser.add_argument('--alpha', type=float, default=0.5, help='mask opacity (default 0.5)')
    parser.add_argument('--panel-size', type=int, default=512,
                        help='long side of each tile in the side-by-side panel (default 512)')
    parser.add_argument('--seed', type=int, default=0,
                        help='torch seed before each model build (random weights are then shared by all presets)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                        help='further config overrides, applied last, e.g. model.logit_scale=100')
    parser.add_argument('--out', default='demo_out', help='output folder (default demo_out)')
    return parser.parse_args(argv)


# -- inputs ----------------------------------------------------------------------
def parse_class_list(text: str):
    """``"cat, dog , grass"`` -> ``['cat', 'dog', 'grass']`` (one class each)."""
    return [c.strip() for c in text.split(',') if c.strip()]


def parse_presets(items):
    from clearclip_seg.protocol.presets import PRESETS
    names = []
    for item in items:
        for name in item.split(','):
            name = name.strip()
            if not name:
                continue
            if name not in PRESETS:
                hint = (' (image paths go before --preset, or write --preset a,b)'
                        if osp.splitext(name)[1] or os.sep in name else '')
                raise ValueError(f"unknown preset '{name}': expected one of {list(PRESETS)}{hint}")
            if name not in names:
                names.append(name)
    if not names:
        raise ValueError('no preset given')
    return names


def collect_images(inputs):
    """Files as given; folders scanned (sorted, not recursive) for image files.

    Returns (paths, problems) where problems are (name, reason) for inputs
    that do not exist.
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


def read_image(path: str):
    """BGR uint8 (H, W, 3) as the test pipeline's LoadImageFromFile reads it.

    Raises:
        ValueError: empty file, undecodable data or a zero-sized image.
    """
    import mmcv
    if osp.getsize(path) == 0:
        raise ValueError('empty file (0 bytes)')
    with open(path, 'rb') as f:
        data = f.read()
    try:
        img = mmcv.imfrombytes(data, flag='color', backend='cv2')
    except Exception as e:  # cv2 raises on some malformed data
        raise ValueError(f'cannot decode: {str(e).splitlines()[0][:120]}') from None
    if img is None:
        raise ValueError('not an image (cannot decode)')
    if img.ndim != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f'zero-sized or malformed image {img.shape}')
    return img


def prepare(img_bgr, scale, path: str):
    """Keep-ratio resize (MMSeg's Resize, keep_ratio=True) and pack for the data preprocessor."""
    import mmcv
    import torch
    from mmseg.structures import SegDataSample
    h0, w0 = img_bgr.shape[:2]
    resized, scale_factor = mmcv.imrescale(img_bgr, tuple(scale), interpolation='bilinear',
                                           return_scale=True, backend='cv2')
    inputs = torch.from_numpy(resized.transpose(2, 0, 1).copy())  # (3, H, W) uint8 BGR, as PackSegInputs
    sample = SegDataSample(metainfo=dict(img_path=path, ori_shape=(h0, w0), img_shape=resized.shape[:2],
                                         scale_factor=scale_factor))
    return dict(inputs=[inputs], data_samples=[sample])


# -- model -----------------------------------------------------------------------
def model_config(args, preset: str, vocabulary):
    """The model config for one preset: the config file plus the demo's overrides."""
    from mmengine.config import Config

    from clearclip_seg.protocol.presets import get_preset
    cfg = Config.fromfile(args.config)
    if 'model' not in cfg:
        raise ValueError(f"config '{args.config}' has no model")
    clip = dict(cfg.model.get('clip', {}))
    if args.arch_file:
        clip['arch_file'] = args.arch_file
        clip['arch'] = args.arch  # None: the file's own name
        clip['pretrained'] = None
    elif args.arch:
        clip['arch'] = args.arch
    if args.pretrained is not None:
        clip['pretrained'] = None if args.pretrained.lower() in NONE_WORDS else args.pretrained
    if args.precision:
        clip['precision'] = args.precision
    model = cfg.model
    model.clip = clip
    model.last_block = dict(get_preset(preset).last_block)
    model.vocabulary = vocabulary
    model.prob_thd = args.prob_thd
    model.test_cfg = dict(model.get('test_cfg') or {}, mode='slide', crop_size=(args.crop, args.crop),
                          stride=(args.stride, args.stride))
    if args.templates:
        model.templates = args.templates
    cfg.merge_from_dict(args.cfg_options)  # last: any key can still be overridden
    return cfg


def build_model(cfg, device, seed: int):
    import torch
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    import clearclip_seg
    clearclip_seg.register_all_modules()
    init_default_scope('mmseg')
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model).to(device).eval()
    model.build_text_classifier()
    return model


# -- pictures --------------------------------------------------------------------
def _fit(image, label, long_side: int):
    """Downscale an RGB image (bilinear) and its labels (nearest) to a long side."""
    from PIL import Image
    h, w = label.shape
    s = long_side / max(h, w)
    if s >= 1:
        return image, label
    size = (max(1, round(w * s)), max(1, round(h * s)))
    img = Image.fromarray(image).resize(size, Image.BILINEAR)
    lab = Image.fromarray(label.astype('int32')).resize(size, Image.NEAREST)
    import numpy as np
    return np.asarray(img), np.asarray(lab).astype(label.dtype)


def output_stem(path: str, used: dict) -> str:
    """File-name stem for an image's outputs, unique within a run."""
    stem = osp.splitext(osp.basename(path))[0]
    n = used.get(stem, 0)
    used[stem] = n + 1
    return stem if n == 0 else f'{stem}_{n + 1}'


def main(argv=None) -> int:
    args = parse_args(argv)
    import numpy as np
    import torch
    from mmengine.device import get_device

    from clearclip_seg.visualization import add_legend, hstack, make_palette, overlay, save_rgb, titled

    try:
        presets = parse_presets(args.preset)
    except ValueError as e:
        print(f'error: --preset: {e}', file=sys.stderr)
        return 2
    if args.vocab is not None:
        vocabulary = parse_class_list(args.vocab)
        if not vocabulary:
            print('error: --vocab is empty: give comma-separated class names, e.g. "cat, dog, grass"',
                  file=sys.stderr)
            return 2
    else:
        vocabulary = args.vocab_file
    if not osp.isfile(args.config):
        print(f"error: config '{args.config}' not found", file=sys.stderr)
        return 2

    paths, problems = collect_images(args.inputs)
    for name, why in problems:
        print(f'skipped {name}: {why}')
    if not paths:
        print('error: no images to segment', file=sys.stderr)
        return 1

    device = args.device or get_device()
    models = {}
    for p in presets:
        t0 = time.perf_counter()
        models[p] = build_model(model_config(args, p, vocabulary), device, args.seed)
        print(f'built {p} ({models[p].arch}, {models[p].pretrained or "random weights"}, '
              f'{models[p].precision}) in {time.perf_counter() - t0:.1f}s')
    first = models[presets[0]]
    classes = list(first.vocabulary.classes)
    palette = make_palette(len(classes))
    print(f'vocabulary: {len(classes)} classes ({", ".join(classes[:12])}{", ..." if len(classes) > 12 else ""})')

    from clearclip_seg.protocol.presets import get_preset
    os.makedirs(args.out, exist_ok=True)
    used, ok, bad = {}, 0, 0
    for path in paths:
        name = osp.basename(path)
        try:
            img_bgr = read_image(path)
        except Exception as e:
            bad += 1
            print(f'skipped {name}: {e}')
            continue
        try:
            rgb = np.ascontiguousarray(img_bgr[..., ::-1])
            stem = output_stem(path, used)
            t0 = time.perf_counter()
            labels = {}
            for p, model in models.items():
                data = model.data_preprocessor(prepare(img_bgr, args.scale, path), False)
                with torch.no_grad():
                    out = model.predict(data['inputs'], data['data_samples'])
                labels[p] = out[0].pred_sem_seg.data[0].cpu().numpy()
            written = []
            for p, lab in labels.items():
                present = sorted(int(c) for c in np.unique(lab) if c < len(classes))
                pic = add_legend(overlay(rgb, lab, palette, args.alpha), classes, palette, present)
                written.append(osp.join(args.out, f'{stem}_{p}.png'))
                save_rgb(written[-1], pic)
            if len(labels) > 1:
                tiles = []
                for p, lab in labels.items():
                    small, slab = _fit(rgb, lab, args.panel_size)
                    if not tiles:
                        tiles.append(titled(small, name[:40]))
                    tiles.append(titled(overlay(small, slab, palette, args.alpha), get_preset(p).title))
                present = sorted(set().union(*[set(np.unique(lab).tolist()) for lab in labels.values()])
                                 & set(range(len(classes))))
                written.append(osp.join(args.out, f'{stem}_panel.png'))
                save_rgb(written[-1], add_legend(hstack(tiles), classes, palette, present))
        except Exception as e:
            bad += 1
            print(f'skipped {name}: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ""}')
            continue
        ok += 1
        found = sorted({classes[c] for lab in labels.values() for c in np.unique(lab) if c < len(classes)})
        print(f'{name}: {img_bgr.shape[1]}x{img_bgr.shape[0]}, {time.perf_counter() - t0:.1f}s, '
              f'classes {", ".join(found)} -> {", ".join(osp.basename(w) for w in written)}')
    print(f'{ok} image(s) segmented, {bad + len(problems)} skipped; outputs in {args.out}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
