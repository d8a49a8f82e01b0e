"""Methods' own protocols: generated configs equal the card values, vocabularies equal the
reference files, the common protocol, and every method end to end on every benchmark layout."""
import json
import os

import pytest
from mmengine.config import Config

from clearclip_seg.protocol.benchmarks import BENCHMARKS
from clearclip_seg.protocol.constants import config_path
from clearclip_seg.protocol.methods import METHOD_CARDS, common_setting
from clearclip_seg.vocab import load_vocabulary, resolve_vocabulary_path
from helpers import ROOT, confusion_miou, reference_class_file, tiny_cfg_options

# The official configs' values, typed here (not read from protocol/methods.py).
FAMILY_VOCAB = {'voc21': 'voc21_bg26', 'voc20': 'voc20_synonyms', 'coco_object': 'coco_object_bg26'}
# benchmark: (classes, queries, query 0) of the SCLIP family's class files, counted in the official files
FAMILY_COUNTS = {'voc21': (21, 56, 'sky'), 'voc20': (20, 30, 'aeroplane'), 'context60': (60, 60, 'background'),
                 'context59': (59, 59, 'aeroplane'), 'coco_object': (81, 113, 'sky'),
                 'coco_stuff164k': (171, 171, 'person'), 'cityscapes': (19, 19, 'road'), 'ade20k': (150, 150, 'wall')}
SCLIP = {  # benchmark: (resize short side, logit scale, prob_thd, area_thd)
    'voc21': (336, 65.0, 0.1, 0.1), 'context60': (336, 50.0, 0.1, None), 'coco_object': (336, 50.0, 0.1, None),
    'voc20': (336, 40.0, 0.0, None), 'context59': (336, 40.0, 0.0, None), 'coco_stuff164k': (448, 40.0, 0.0, None),
    'cityscapes': (560, 40.0, 0.0, None), 'ade20k': (336, 40.0, 0.0, None)}
NACLIP = {  # benchmark: (resize short side, mode, prob_thd); logit 40 and PAMR 10 @ (8, 16) everywhere
    'voc21': (336, 'whole', 0.1), 'context60': (336, 'slide', 0.1), 'coco_object': (336, 'slide', 0.1),
    'voc20': (336, 'whole', 0.0), 'context59': (336, 'slide', 0.0), 'coco_stuff164k': (336, 'slide', 0.0),
    'cityscapes': (560, 'slide', 0.0), 'ade20k': (336, 'slide', 0.0)}


def _expected(card, key):
    if card == 'sclip':
        resize, logit, prob, area = SCLIP[key]
        return dict(resize=resize, mode='slide', logit=logit, prob=prob, area=area, post=None,
                    method=dict(type='SCLIP'))
    resize, mode, prob = NACLIP[key]
    return dict(resize=resize, mode=mode, logit=40.0, prob=prob, area=None,
                post=dict(type='PAMR', num_iter=10, dilations=(8, 16)),
                method=dict(type='NACLIP', arch='reduced', attn_strategy='naclip', gaussian_std=5.0))


@pytest.mark.parametrize('card', ['sclip', 'naclip'])
def test_generated_configs_resolve_to_the_card(card):
    for backbone in ('vit-b16', 'vit-l14'):
        for key, b in BENCHMARKS.items():
            path = os.path.join(ROOT, config_path(card, backbone, key))
            cfg = Config.fromfile(path)
            e, m = _expected(card, key), cfg.model
            assert (cfg.method, cfg.backbone, cfg.benchmark) == (card, backbone, key)
            assert m.last_block is None and m.method.to_dict() == e['method'], path
            assert m.vocabulary == FAMILY_VOCAB.get(key, key), path
            assert (m.logit_scale, m.prob_thd, m.area_thd) == (e['logit'], e['prob'], e['area']), path
            post = None if m.postprocess is None else {k: (tuple(v) if isinstance(v, list) else v)
                                                       for k, v in m.postprocess.items()}
            assert post == e['post'], path
            t = m.test_cfg
            assert t.mode == e['mode'] and t.patch_fit == 'truncate' and not t.keep_probs, path
            assert tuple(t.crop_size) == (224, 224) and tuple(t.stride) == (112, 112), path
            for pipe in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline):
                resize = [s for s in pipe if s.type == 'Resize']
                assert len(resize) == 1 and tuple(resize[0].scale) == (2048, e['resize']) and resize[0].keep_ratio
                names = [s.type for s in pipe]
                assert names.index('Resize') < names.index('LoadAnnotations')
            ds = cfg.test_dataloader.dataset
            assert ds.type == b.dataset_type and ds.reduce_zero_label == b.reduce_zero_label, path


def test_common_protocol_is_clearclips():
    for name, card in METHOD_CARDS.items():
        for key, b in BENCHMARKS.items():
            s = common_setting(card, key)
            assert (s.resize, s.mode, s.crop, s.stride, s.patch_fit) == (448, 'slide', b.crop, b.stride, 'pad')
            assert (s.logit_scale, s.prob_thd, s.area_thd, s.postprocess) == (50.0, b.prob_thd, None, None)
            assert s.vocabulary == b.vocabulary and s.method == card.setting(key).method
            assert common_setting(card, key, pamr=True).postprocess == dict(type='PAMR', num_iter=10,
                                                                            dilations=(8, 16))
    # the overrides turn an own-protocol config into the common one
    cfg = Config.fromfile(os.path.join(ROOT, config_path('sclip', 'vit-b16', 'voc21')))
    cfg.merge_from_dict(common_setting(METHOD_CARDS['sclip'], 'voc21').cfg_options())
    assert cfg.model.vocabulary == 'voc21' and cfg.model.logit_scale == 50.0 and cfg.model.prob_thd == 0.5
    assert cfg.model.area_thd is None and cfg.model.test_cfg.patch_fit == 'pad'
    assert tuple(cfg.model.test_cfg.crop_size) == (448, 448) and cfg.model.method.type == 'SCLIP'
    assert tuple(cfg.test_dataloader.dataset.pipeline[1].scale) == (2048, 448)
    assert tuple(cfg.test_pipeline[1].scale) == (2048, 448)


@pytest.mark.parametrize('key', list(BENCHMARKS))
def test_family_vocabularies(key):
    name = FAMILY_VOCAB.get(key, key)
    voc = load_vocabulary(name)
    classes, queries, first = FAMILY_COUNTS[key]
    assert (voc.num_classes, len(voc.queries), voc.queries[0]) == (classes, queries, first)
    with open(reference_class_file('sclip_family', key), 'rb') as f:
        ref = f.read()
    if key in FAMILY_VOCAB:  # shipped verbatim
        with open(resolve_vocabulary_path(name), 'rb') as f:
            assert f.read() == ref
    else:  # the family's file is ClearCLIP's, byte for byte: the same shipped name serves both
        with open(reference_class_file('clearclip', key), 'rb') as f:
            assert f.read() == ref
    # the official parse: split on ', ', drop '\n' (ours also strips: only context60's 'wood ' differs)
    official = [q.replace('\n', '') for line in ref.decode().splitlines(True) for q in line.split(', ')]
    assert list(voc.queries) == [q.strip() for q in official]
    assert list(voc.query_to_class) == [i for i, line in enumerate(ref.decode().splitlines())
                                        for _ in line.split(', ')]


def _own_miou(b, root, ids, preds):
    pairs = [(os.path.join(preds, os.path.splitext(os.path.basename(i) + b.img_suffix)[0] + '.png'),
              os.path.join(root, b.ann_dir, i + b.seg_map_suffix)) for i in ids]
    return confusion_miou(pairs, b.num_classes, b.reduce_zero_label)[0]


# cards whose method runs on the 3-block tiny tower (methods reading intermediate blocks, e.g.
# ResCLIP's RCS at blocks 5..8, run end to end in their own test modules on a 12-block tower)
E2E_CARDS = ('sclip', 'naclip')


@pytest.mark.parametrize('key', list(BENCHMARKS))
@pytest.mark.parametrize('card', E2E_CARDS)
def test_method_config_end_to_end(tmp_path, card, key):
    """Every method's own config runs on its benchmark's synthetic layout with the tiny CLIP."""
    from clearclip_seg.apis import evaluate
    from clearclip_seg.synthetic import write_benchmark
    b = BENCHMARKS[key]
    root = tmp_path / 'data'
    ids = write_benchmark(key, str(root), sizes=((40, 60),), seed=2)
    preds = tmp_path / 'preds'
    opts = tiny_cfg_options(root, **{'test_evaluator.output_dir': str(preds), 'model.templates': 'a_photo_of',
                                     'model.text_cache': False,
                                     # short side 150 (the card's is checked above): two 150 x 224 windows
                                     # per image, 150 not a patch multiple, so truncation runs too; fast
                                     'test_dataloader.dataset.pipeline.1.scale': (2048, 150)})
    rec = evaluate(os.path.join(ROOT, config_path(card, 'vit-b16', key)), opts, work_dir=str(tmp_path / 'w'))
    assert json.loads((tmp_path / 'w' / 'record.json').read_text())['metrics'] == rec['metrics']
    assert rec['model']['method']['type'] == METHOD_CARDS[card].method['type']
    assert rec['dataset']['num_images'] == len(ids)
    assert rec['metrics']['mIoU'] == pytest.approx(_own_miou(b, root, ids, preds), abs=1e-6)
