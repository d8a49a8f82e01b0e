"""Helpers shared by the tests: the tiny random CLIP, synthetic data, an independent mIoU.

Test modules import from here (never from each other); ``conftest.py`` turns
the ones that need a fixture into fixtures.
"""
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_ARCH = os.path.join(ROOT, 'tests', 'assets', 'clearclip-tiny-vit.json')
TINY_NAME = 'clearclip-tiny-vit'
# the official class-name files, verbatim (tests/fixtures/PROVENANCE.md): family folder, benchmark -> file
CLASS_NAMES = os.path.join(ROOT, 'tests', 'fixtures', 'class_names')
CLASS_NAME_FILES = {'voc21': 'cls_voc21.txt', 'voc20': 'cls_voc20.txt', 'context60': 'cls_context60.txt',
                    'context59': 'cls_context59.txt', 'coco_object': 'cls_coco_object.txt',
                    'coco_stuff164k': 'cls_coco_stuff.txt', 'cityscapes': 'cls_city_scapes.txt',
                    'ade20k': 'cls_ade20k.txt'}

# Config overrides that swap the tiny random CLIP into any config and keep data loading in-process.
TINY_CFG_OPTIONS = {'model.clip.arch_file': TINY_ARCH, 'model.clip.arch': TINY_NAME,
                    'model.clip.pretrained': None, 'test_dataloader.num_workers': 0,
                    'test_dataloader.persistent_workers': False}

# ProxyCLIP's proxy model as a tiny random DINO-layout ViT (patch 8, ImageNet normalisation): no download.
TINY_PROXY_VFM = dict(vfm='vit_small_patch8_224.dino', vfm_pretrained=False,
                      vfm_kwargs=dict(img_size=64, embed_dim=32, depth=1, num_heads=2, dynamic_img_size=True))
# Trident's SAM as a tiny random timm SAM (1024 input, patch 16, 2 blocks, the last global): no download.
TINY_TRIDENT_SAM = dict(sam_pretrained=False,
                        sam_kwargs=dict(embed_dim=64, depth=2, num_heads=2, global_attn_indexes=[1]))


def reference_class_file(family: str, key: str) -> str:
    """Path of an official class-name file: ``family`` is clearclip, sclip_family or proxyclip."""
    return os.path.join(CLASS_NAMES, family, CLASS_NAME_FILES[key])


def tiny_cfg_options(data_root, **extra) -> dict:
    """``cfg_options`` (a dict, for ``clearclip_seg.apis``) running a config on the tiny CLIP and ``data_root``."""
    return {**TINY_CFG_OPTIONS, 'test_dataloader.dataset.data_root': str(data_root), **extra}


def tiny_options(data_root, *extra) -> list:
    """The same overrides as command-line arguments (``--cfg-options k=v ...``); ``extra`` are more ``k=v``."""
    return ['--cfg-options', f'test_dataloader.dataset.data_root={data_root}',
            f'model.clip.arch_file={TINY_ARCH}', f'model.clip.arch={TINY_NAME}',
            'model.clip.pretrained=None', 'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False', *extra]


def tiny_segmentor(**kw):
    """A ``ClearCLIPSegmentor`` on the tiny CLIP with seeded random weights (same seed, same weights).

    Defaults: three classes (one with a synonym), one template, no text cache,
    64 x 64 windows with stride 32; any keyword overrides.
    """
    import torch

    from clearclip_seg.segmentor import ClearCLIPSegmentor
    options = dict(clip=dict(arch=TINY_NAME, arch_file=TINY_ARCH, pretrained=None),
                   vocabulary=['sky', 'grass', 'tree, bush'], templates='a_photo_of', text_cache=False,
                   test_cfg=dict(crop_size=(64, 64), stride=(32, 32)))
    options.update(kw)
    torch.manual_seed(0)
    return ClearCLIPSegmentor(**options).eval()


def make_voc2012(root, sizes=((60, 90), (300, 200), (500, 470), (40, 40)), seed=0):
    """A synthetic VOC2012-layout dataset; returns the image ids."""
    from clearclip_seg.synthetic import write_benchmark
    return write_benchmark('voc21', str(root), sizes=sizes, seed=seed)


def vocabulary_lines(name: str) -> list:
    """A shipped vocabulary file's lines, stripped, synonyms kept as written (``'tv,monitor'``)."""
    from clearclip_seg.vocab import resolve_vocabulary_path
    with open(resolve_vocabulary_path(name), encoding='utf-8') as f:
        return [line.strip() for line in f if line.strip()]


def confusion_miou(pairs, num_classes: int, reduce_zero_label: bool = False):
    """Independent mIoU from saved label maps: one numpy confusion matrix over all images.

    Args:
        pairs: (prediction PNG, ground-truth PNG) paths; predictions as MMSeg's
            ``output_dir`` saves them (reduced predictions + 1 when ``reduce_zero_label``).
        num_classes: the benchmark's class count.
        reduce_zero_label: label 0 is ignored and the others shift down by one.

    Returns:
        (mIoU, per-class IoU array, aAcc), in percent; NaN IoU for classes absent from both.
    """
    from PIL import Image
    conf = np.zeros((num_classes, num_classes), np.int64)
    for pred_path, gt_path in pairs:
        gt = np.array(Image.open(gt_path)).astype(np.int64)
        pred = np.array(Image.open(pred_path)).astype(np.int64)
        if reduce_zero_label:
            gt = np.where(gt == 0, 255, gt - 1)
            gt[gt == 254] = 255
            pred = pred - 1
        valid = gt != 255
        conf += np.bincount(gt[valid] * num_classes + pred[valid],
                            minlength=num_classes ** 2).reshape(num_classes, num_classes)
    inter = np.diag(conf).astype(float)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid='ignore', divide='ignore'):
        iou = inter / union
    return np.nanmean(iou) * 100, iou * 100, inter.sum() / conf.sum() * 100


def records_by_name(out) -> dict:
    """Every ``record.json`` under ``out``, as written, keyed by its run name."""
    import json
    found = {}
    for dirpath, _, files in os.walk(out):
        if 'record.json' in files:
            with open(os.path.join(dirpath, 'record.json')) as f:
                rec = json.load(f)
            found[rec['run']['name']] = rec
    return found


# LPOSS's DINO ViT-B/16 as a tiny random ViT of the same layout (patch 16, ImageNet mean/std): no download.
TINY_LPOSS_VFM = dict(vfm_pretrained=False, vfm_kwargs=dict(img_size=64, embed_dim=32, depth=2, num_heads=2))


def lposs_fixture_setup(plus: bool):
    """The official-code fixture's segmentor (tests/fixtures/lposs_official.npz) and its test image.

    Returns:
        (segmentor, RGB image (3, 192, 256) in [0, 1], original size (150, 200)).
    """
    import torch
    seg = tiny_segmentor(method=dict(type='LPOSS', pixel_refine=plus, **TINY_LPOSS_VFM), last_block=None,
                         vocabulary=['sky, cat', 'dog', 'person'])
    rs = np.random.RandomState(3)
    yy, xx = np.mgrid[0:192, 0:256]
    img = np.stack([xx * 0.6, yy * 0.8, 255 - xx * 0.5], -1)
    for _ in range(8):  # coloured rectangles and discs over a gradient, plus noise
        y0, x0, h, w = rs.randint(0, 150), rs.randint(0, 200), rs.randint(20, 90), rs.randint(20, 110)
        colour = rs.randint(0, 256, 3)
        if rs.rand() < 0.5:
            img[y0:y0 + h, x0:x0 + w] = colour
        else:
            img[(yy - y0) ** 2 + (xx - x0) ** 2 < (h // 2) ** 2] = colour
    img = np.clip(img + rs.normal(0, 6, img.shape), 0, 255).round().astype(np.uint8)
    return seg, torch.from_numpy(img).permute(2, 0, 1).float() / 255, (150, 200)
