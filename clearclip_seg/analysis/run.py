"""The analysis over a benchmark's images: norms, entropy and per-component mIoU, as one record.

``tools/analyze_decomposition.py`` is the command line over ``run_analysis``.
"""
import os
import os.path as osp
import time
from typing import Callable, Optional, Sequence, Tuple

import torch

from ..apis import ConfigError, init_segmentor, load_config
from ..models.slide import iter_windows
from ..records import build_analysis_record, write_record
from .components import ALL_MODES, SOURCES, LastBlockInputCache, component_query_logits
from .metrics import AreaAccumulator
from .statistics import window_statistics

RECORD_NAME = 'decomposition.json'
NOTES = dict(
    norms='Frobenius norm of the (tokens x width) matrix of each window, all tokens incl. the '
          'class token; mean over windows, then images. X_res is the last block input '
          '(mode-independent); X_attn its attention branch without residual.',
    entropy='-sum p log p / log N per head and query token in float64, rows normalised to sum 1 '
            '(qq+kk = average of its two softmaxes); mean over heads, queries, windows, images.',
    miou='each component through ln_post + proj, cosine with the text classifier, slide '
         'inference and the segmentor\'s classify (logit scale, synonyms, prob_thd). '
         'x_res+x_attn is the block output with residual on and FFN off.')


def _windows(model, image: torch.Tensor):
    """The windows the segmentor scores ``image`` with (whole-image inference: the image is one window)."""
    cfg = model.test_cfg
    if cfg['mode'] == 'whole':
        size = tuple(image.shape[-2:])
        return list(iter_windows(image, size, size, model.encoder.patch_size))
    return list(iter_windows(image, cfg['crop_size'], cfg['stride'], model.encoder.patch_size))


def _mean(vals):
    return sum(vals) / len(vals)


def analyze(model, dataset, modes: Sequence[str], num_images: int, ignore_index: int = 255,
            skip_miou: bool = False, log: Callable[[str], None] = print) -> dict:
    """Norms, entropy and (unless skipped) per-component mIoU on the first ``num_images`` images.

    Args:
        model: a ``ClearCLIPSegmentor`` (its windows, text classifier and classification are used).
        dataset: an MMSeg test dataset (with labels unless ``skip_miou``).
        modes: attention modes (``parse_modes``).
        num_images: how many images, from the first.
        ignore_index: label value left out of the mIoU.
        skip_miou: only norms and entropy.
        log: one line per image.

    Returns:
        ``modes``, ``sources``, ``notes``, ``num_images``, ``images``, ``norms``,
        ``entropy`` and, unless skipped, ``miou`` and ``iou_per_class``.
    """
    from mmengine.dataset import pseudo_collate
    from mmseg.structures import SegDataSample

    n = min(int(num_images), len(dataset))
    enc = model.encoder
    areas = AreaAccumulator(model.num_classes, ignore_index)
    per_image = {m: [] for m in modes}
    names = []
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in range(n):
            data = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
            image, sample = data['inputs'][0], data['data_samples'][0]
            names.append(osp.basename(sample.metainfo.get('img_path', str(i))))
            windows = _windows(model, image)
            cache = LastBlockInputCache(enc)  # blocks 0..L-2 run once per window
            stats = window_statistics(enc, windows, modes, cache)
            for m in modes:
                per_image[m].append(stats[m])
            if not skip_miou:
                if 'gt_sem_seg' not in sample:
                    raise ValueError(f'{names[-1]} has no labels (no LoadAnnotations in the test pipeline?): '
                                     'use a benchmark config, or skip the mIoU')
                gt = sample.gt_sem_seg.data.squeeze(0)
                for j, m in enumerate(modes):
                    # X_res does not depend on the mode: scored once, with the first mode
                    sources = SOURCES if j == 0 else tuple(s for s in SOURCES if s != 'x_res')
                    logits = component_query_logits(model, [image], m, sources, cache)
                    for s in sources:
                        out = model.postprocess_result([logits[s][0]], [SegDataSample(metainfo=sample.metainfo)])
                        key = ('*', s) if s == 'x_res' else (m, s)
                        areas.add(key, out[0].pred_sem_seg.data.squeeze(0), gt)
            log(f'[{i + 1}/{n}] {names[-1]} ({len(windows)} windows, {time.perf_counter() - t0:.1f}s)')

    norms, entropy = {}, {}
    for m in modes:
        rows = per_image[m]
        norms[m] = dict(x_res=_mean([r['x_res_norm'] for r in rows]), x_attn=_mean([r['x_attn_norm'] for r in rows]),
                        attn_to_res=_mean([r['attn_to_res'] for r in rows]),
                        per_image=dict(x_res=[r['x_res_norm'] for r in rows],
                                       x_attn=[r['x_attn_norm'] for r in rows]))
        heads = [r['entropy_per_head'] for r in rows]
        entropy[m] = dict(mean=_mean([r['entropy'] for r in rows]),
                          per_head=[_mean(h) for h in zip(*heads)],
                          per_image=[r['entropy'] for r in rows])
    result = dict(modes=list(modes), sources=list(SOURCES), notes=dict(NOTES), num_images=n, images=names,
                  norms=norms, entropy=entropy)
    if not skip_miou:
        res = areas.metrics(('*', 'x_res'))
        result['miou'] = {m: {'x_res': res['mIoU'], 'x_attn': areas.metrics((m, 'x_attn'))['mIoU'],
                              'x_res+x_attn': areas.metrics((m, 'x_res+x_attn'))['mIoU']} for m in modes}
        per_class = {'x_res': res['IoU']}
        for m in modes:
            per_class[m] = {s: areas.metrics((m, s))['IoU'] for s in ('x_attn', 'x_res+x_attn')}
        result['iou_per_class'] = per_class
    return result


def check_last_block_method(cfg, config) -> None:
    """The analysis decomposes the ``LastBlock`` method's last block; another method is refused, by name.

    Its modes replace the last block's attention, so on a config of another
    method (SCLIP, NACLIP, ProxyCLIP...) it would silently analyse ClearCLIP's
    decomposition instead of that method.
    """
    method = (cfg.get('model') or {}).get('method')
    kind = method.get('type') if hasattr(method, 'get') else method
    if method is not None and kind != 'LastBlock':
        raise ConfigError(f"config '{config}' uses model.method.type={kind!r}: the decomposition analysis "
                          "applies to the LastBlock method's last block only (ClearCLIP, MaskCLIP, CLIP configs); "
                          'use one of those configs')


def build_model_and_dataset(config, cfg_options: Optional[dict] = None, device=None, seed: int = 0):
    """(cfg, segmentor, test dataset) of a benchmark config; ``seed`` is set before the weights are drawn.

    Raises:
        ConfigError: no test dataloader, an empty dataset.
    """
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS

    cfg = load_config(config, cfg_options)
    if 'test_dataloader' not in cfg:
        raise ConfigError(f"config '{config}' has no test_dataloader: use a benchmark config "
                          '(configs/<method>/...)')
    check_last_block_method(cfg, config)
    torch.manual_seed(seed)
    model = init_segmentor(cfg, device=device)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    if len(dataset) == 0:
        raise ConfigError(f"dataset at '{cfg.test_dataloader.dataset.get('data_root')}' lists no images")
    return cfg, model, dataset


def run_analysis(config, cfg_options: Optional[dict] = None, modes: Optional[Sequence[str]] = None,
                 num_images: int = 50, skip_miou: bool = False, seed: int = 0, device=None,
                 out_dir: Optional[str] = None, log: Callable[[str], None] = print) -> Tuple[dict, Optional[str]]:
    """Analyse a benchmark config's first images and write the record.

    Args:
        config: benchmark config path.
        cfg_options: ``{'a.b': value}`` overrides.
        modes: attention modes (default: all, in the paper's order).
        num_images: how many images, from the first (at least 1).
        skip_miou: only norms and entropy (no labels needed).
        seed: torch seed before the model is built (only matters for random weights).
        device: None picks the GPU when there is one.
        out_dir: where ``decomposition.json`` goes (None: not written).
        log: progress lines.

    Returns:
        The record (``kind='analysis'``) and its path.

    Raises:
        ConfigError: a config mistake, named in one line.
    """
    if num_images < 1:
        raise ConfigError(f'num_images={num_images}: expected at least 1')
    modes = list(modes or ALL_MODES)
    cfg, model, dataset = build_model_and_dataset(config, cfg_options, device, seed)
    classes = list(dataset.metainfo['classes'])
    if not skip_miou and model.num_classes != len(classes):
        raise ConfigError(f"vocabulary '{model.vocabulary.name}' (model.vocabulary) has {model.num_classes} "
                          f"classes but the dataset has {len(classes)}: use the benchmark's vocabulary")
    ignore_index = (cfg.get('test_evaluator') or {}).get('ignore_index', 255)
    t0 = time.perf_counter()
    result = analyze(model, dataset, modes, num_images, ignore_index, skip_miou, log)
    record = build_analysis_record(cfg, str(config), dict(cfg_options or {}), model, dataset, result,
                                   ignore_index, wall_s=time.perf_counter() - t0)
    path = None
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        path = osp.join(out_dir, RECORD_NAME)
        write_record(record, path)
    return record, path
