"""Configs and vocabularies: generated files up to date, protocol values exact,
every benchmark's ViT-B/16 config runs end to end with a tiny architecture."""
import glob
import json
import os
import subprocess
import sys

import pytest
from mmengine.config import Config

from clearclip_seg.apis import evaluate
from clearclip_seg.protocol.backbones import backbone_mean_std
from clearclip_seg.protocol.benchmarks import BACKBONES, BENCHMARKS
from clearclip_seg.protocol.presets import PRESETS
from clearclip_seg.synthetic import write_benchmark
from clearclip_seg.vocab import load_vocabulary
from helpers import (ROOT, TINY_ARCH, TINY_LPOSS_VFM, TINY_PROXY_VFM, TINY_TRIDENT_SAM, confusion_miou,
                     reference_class_file, tiny_cfg_options)

TINY12_ARCH = os.path.join(ROOT, 'tests', 'assets', 'tiny12oa.json')


@pytest.mark.slow  # renders every config in a subprocess; the quick subset checks the ViT-B/16 leaves below
def test_generated_configs_are_up_to_date():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'make_configs.py'), '--check'], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _preset_leaves():
    leaves = sorted(glob.glob(os.path.join(ROOT, 'configs', '*', '*.py')))
    # last-block presets here; the methods' own protocol cards: tests/test_method_configs.py
    leaves = [p for p in leaves if '_base_' not in p and os.path.basename(os.path.dirname(p)) in PRESETS]
    assert len(leaves) == sum(len(p.backbones) for p in PRESETS.values()) * len(BENCHMARKS)
    return leaves


def test_every_vit_b16_leaf_config_has_the_protocol_values():
    """Every preset x benchmark on ViT-B/16 (the quick subset; every backbone: the slow test below)."""
    leaves = [p for p in _preset_leaves() if '_vit-b16_' in os.path.basename(p)]
    assert len(leaves) == len(PRESETS) * len(BENCHMARKS)
    _check_leaf_configs(leaves)


@pytest.mark.slow
def test_every_leaf_config_has_the_protocol_values():
    _check_leaf_configs(_preset_leaves())


def _check_leaf_configs(leaves):
    for path in leaves:
        cfg = Config.fromfile(path)
        b = BENCHMARKS[cfg.benchmark]
        preset = PRESETS[cfg.method]
        m = cfg.model
        assert m.vocabulary == b.vocabulary, path
        assert m.prob_thd == preset.prob_thd(b), path
        assert tuple(m.test_cfg.crop_size) == (b.crop, b.crop) and tuple(m.test_cfg.stride) == (b.stride, b.stride)
        assert m.test_cfg.mode == 'slide' and m.logit_scale == 50.0 and m.templates == 'openai_imagenet'
        assert dict(m.last_block) == preset.last_block, path
        assert (m.clip.arch, m.clip.pretrained) == BACKBONES[cfg.backbone][:2]
        ds = cfg.test_dataloader.dataset
        assert ds.type == b.dataset_type and ds.reduce_zero_label == b.reduce_zero_label
        assert ds.data_root == b.data_root and ds.get('ann_file') == b.ann_file
        resize = [t for t in ds.pipeline if t.type == 'Resize'][0]
        assert tuple(resize.scale) == (2048, 448) and resize.keep_ratio
        names = [t.type for t in ds.pipeline]
        assert names.index('Resize') < names.index('LoadAnnotations')  # labels stay at original size
        # the backbone's own mean/std (open_clip's config; the paper's CLIP statistics for its rows)
        mean, std = backbone_mean_std(cfg.backbone)
        assert m.data_preprocessor.mean == pytest.approx([c * 255 for c in mean], abs=1e-3), path
        assert m.data_preprocessor.std == pytest.approx([c * 255 for c in std], abs=1e-3), path
        assert m.data_preprocessor.bgr_to_rgb


@pytest.mark.parametrize('key', list(BENCHMARKS))
def test_vocabulary_matches_reference(key):
    voc = load_vocabulary(key)
    assert voc.num_classes == BENCHMARKS[key].num_classes
    assert all(q == q.strip() and q for q in voc.queries)
    with open(reference_class_file('clearclip', key)) as f:
        ref = [line.strip() for line in f.read().splitlines() if line.strip()]
    ref_queries = [s.strip() for line in ref for s in line.split(',') if s.strip()]
    assert list(voc.queries) == ref_queries


def _independent_miou(b, root, ids, preds, num_classes):
    """``confusion_miou`` over the saved predictions of a benchmark's synthetic images."""
    pairs = [(os.path.join(preds, os.path.splitext(os.path.basename(i) + b.img_suffix)[0] + '.png'),
              os.path.join(root, b.ann_dir, i + b.seg_map_suffix)) for i in ids]
    return confusion_miou(pairs, num_classes, b.reduce_zero_label)[0]


# the two largest synthetic sets (150 and 171 classes) run with the slow tests; the other six stay quick
@pytest.mark.parametrize('key', [pytest.param(k, marks=pytest.mark.slow) if k in ('ade20k', 'coco_stuff164k') else k
                                 for k in BENCHMARKS])
def test_benchmark_config_end_to_end(tmp_path, key):
    b = BENCHMARKS[key]
    root = tmp_path / 'data'
    ids = write_benchmark(key, str(root), sizes=((50, 70), (90, 40)), seed=1)
    preds = tmp_path / 'preds'
    config = os.path.join(ROOT, f'configs/clearclip/clearclip_vit-b16_{key}.py')
    # in-process through the API (the command line is covered by test_tools_test.py)
    rec = evaluate(config, tiny_cfg_options(root, **{'test_evaluator.output_dir': str(preds),
                                                     'model.templates': 'a_photo_of'}), work_dir=str(tmp_path / 'w'))
    assert json.loads((tmp_path / 'w' / 'record.json').read_text())['metrics'] == rec['metrics']
    assert rec['benchmark'] == key and rec['dataset']['num_images'] == len(ids)
    assert len(rec['dataset']['classes']) == b.num_classes
    assert rec['model']['prob_thd'] == b.prob_thd
    assert rec['protocol']['crop'] == [b.crop, b.crop]
    assert rec['metrics']['mIoU'] == pytest.approx(_independent_miou(b, root, ids, preds, b.num_classes), abs=1e-6)


@pytest.fixture(scope='module')
def synthetic_roots(tmp_path_factory):
    base = tmp_path_factory.mktemp('bench')
    roots = {}
    for key in BENCHMARKS:
        roots[key] = str(base / key)
        write_benchmark(key, roots[key], sizes=((20, 30),))
    return roots


def split_leaf(path):
    """(method, backbone, benchmark) of a generated leaf config path."""
    method = os.path.basename(os.path.dirname(path))
    stem = os.path.basename(path)[:-3]
    bench = next(k for k in sorted(BENCHMARKS, key=len, reverse=True) if stem.endswith('_' + k))
    return method, stem[len(method) + 1:-(len(bench) + 1)], bench


def covering_subset(leaves):
    """Leaf configs covering every (method, benchmark) and every (method, backbone) pair at least once.

    The files are generated from one table (and checked current above), so a file that adds no new
    pair builds nothing the others don't; this keeps the test to about a third of the files.
    """
    seen, picked = set(), []
    for path in leaves:
        method, backbone, bench = split_leaf(path)
        pairs = {('bench', method, bench), ('backbone', method, backbone)}
        if not pairs <= seen:
            seen |= pairs
            picked.append(path)
    return picked


def test_covering_subset_covers_every_method_benchmark_and_backbone():
    leaves = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '*', '*.py')) if '_base_' not in p)
    picked = covering_subset(leaves)
    for i in (1, 2):  # (method, backbone) and (method, benchmark)
        assert {(split_leaf(p)[0], split_leaf(p)[i]) for p in picked} == \
            {(split_leaf(p)[0], split_leaf(p)[i]) for p in leaves}
    assert len(picked) < len(leaves) / 2


CONFIG_FOLDERS = sorted(d for d in os.listdir(os.path.join(ROOT, 'configs'))
                        if d != '_base_' and os.path.isdir(os.path.join(ROOT, 'configs', d)))


@pytest.mark.slow
@pytest.mark.parametrize('folder', CONFIG_FOLDERS)  # one test per folder: pytest-xdist shares them out
def test_every_config_builds_model_and_dataset(synthetic_roots, folder):
    """Leaf configs covering every method x benchmark and method x backbone build their segmentor
    (tiny arch swapped in) and their dataset."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, MODELS
    init_default_scope('mmseg')
    leaves = sorted(p for p in glob.glob(os.path.join(ROOT, 'configs', '*', '*.py')) if '_base_' not in p)
    built = {}  # with the tiny arch swapped in, backbones differ only in names: build each distinct config once
    for path in covering_subset(leaves):
        if os.path.basename(os.path.dirname(path)) != folder:
            continue
        cfg = Config.fromfile(path)
        if cfg.model.get('method') is None:
            cfg.model.clip.update(arch='clearclip-tiny-vit', arch_file=TINY_ARCH, pretrained=None)
        else:  # methods may read intermediate blocks (ResCLIP's 5..8, GEM's last 4...): a 12-block tower
            cfg.model.clip.update(arch='tiny12oa', arch_file=TINY12_ARCH, pretrained=None)
            if cfg.model.method.type == 'ProxyCLIP':  # and a tiny proxy model instead of a download
                cfg.model.method.update(TINY_PROXY_VFM)
            if cfg.model.method.type == 'LPOSS':  # a tiny random DINO-layout ViT instead of a download
                cfg.model.method.update(TINY_LPOSS_VFM)
            elif cfg.model.method.type == 'Trident':  # a tiny proxy model and a tiny SAM
                cfg.model.method.update(TINY_PROXY_VFM, **TINY_TRIDENT_SAM)
        cfg.test_dataloader.dataset.data_root = synthetic_roots[cfg.benchmark]
        key = repr((cfg.model.to_dict(), cfg.test_dataloader.dataset.to_dict()))
        if key not in built:
            built[key] = MODELS.build(cfg.model), DATASETS.build(cfg.test_dataloader.dataset)
        model, dataset = built[key]
        assert len(dataset) == 1, path
        assert model.num_classes == len(dataset.metainfo['classes']) == BENCHMARKS[cfg.benchmark].num_classes
        if cfg.model.last_block is not None:
            assert model.method.options() == cfg.model.last_block.to_dict()
        else:
            assert model.method.method_name == cfg.model.method.type, path
