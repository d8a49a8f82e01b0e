"""Methods suites, the methods' published numbers, and result tables of several methods and backbones.

Tables are built from hand-made records (the fields ``tools/test.py`` writes);
published numbers are spot-checked against values typed here from the method
cards, and against the averages the sources print. CPU, no model.
"""
import ast
import csv
import io
import os
import subprocess
import sys

import pytest

from clearclip_seg.protocol.backbones import BACKBONE_INFO
from clearclip_seg.protocol.benchmarks import BENCHMARKS, PAPER_ORDER
from clearclip_seg.protocol.methods import METHOD_CARDS, common_setting
from clearclip_seg.protocol.published_methods import METHOD_ENTRIES, NO_PUBLISHED, SOURCES, find_method_entry
from clearclip_seg.records import atomic_write_json
from clearclip_seg.suites import SUITES, suite_runs
from clearclip_seg.tables import build_main_table, load_records, to_csv, to_latex, to_markdown
from helpers import ROOT

CARDS = ('clearclip', 'sclip', 'naclip', 'resclip', 'proxyclip', 'scclip', 'gem', 'itaclip', 'lposs', 'lposs-plus',
         'trident', 'cliptrase')


# --------------------------------------------------------------------------- suites

@pytest.mark.parametrize('suite', ['methods', 'methods-common', 'methods-common-pamr'])
def test_methods_suites_list_every_method_on_every_benchmark(suite):
    assert suite in SUITES
    runs = suite_runs(suite)
    assert len(runs) == len(CARDS) * 8
    assert {(r.card, r.benchmark) for r in runs} == {(c, b) for c in CARDS for b in PAPER_ORDER}
    assert len({r.name for r in runs}) == len(CARDS) * 8
    for r in runs:
        assert os.path.isfile(os.path.join(ROOT, r.config)), r.config
        backbone = 'vit-b16' if r.card in ('clearclip',) or 'vit-b16' in METHOD_CARDS[r.card].backbones else \
            METHOD_CARDS[r.card].backbones[0]
        assert r.config == f'configs/{r.card}/{r.card}_{backbone}_{r.benchmark}.py'
        info = r.info(suite)
        assert info['card'] == r.card and info['protocol'] == {'methods': 'own', 'methods-common': 'common',
                                                               'methods-common-pamr': 'common+pamr'}[suite]
    if suite == 'methods':  # own protocols: the generated configs as they are
        assert all(r.options == {} for r in runs)
    assert [r.benchmark for r in suite_runs(suite, ['voc20', 'ade20k'])] == ['voc20', 'ade20k'] * len(CARDS)


@pytest.mark.parametrize('suite', ['methods-common', 'methods-common-pamr'])
def test_common_suites_resolve_to_clearclips_protocol(suite):
    from mmengine.config import Config

    from clearclip_seg.evaluation.identity import parse_cfg_options
    pamr = suite.endswith('pamr')
    for r in suite_runs(suite, ['voc21', 'cityscapes']):
        own = Config.fromfile(os.path.join(ROOT, r.config))
        cfg = Config.fromfile(os.path.join(ROOT, r.config))
        cfg.merge_from_dict(parse_cfg_options(r.option_items()))   # exactly as tools/test.py parses them
        b = BENCHMARKS[r.benchmark]
        m = cfg.model
        assert m.vocabulary == b.vocabulary and m.logit_scale == 50.0 and m.prob_thd == b.prob_thd, r.name
        assert m.get('area_thd') is None and m.test_cfg.mode == 'slide', r.name
        assert tuple(m.test_cfg.crop_size) == (b.crop, b.crop) and tuple(m.test_cfg.stride) == (b.stride, b.stride)
        assert m.test_cfg.get('patch_fit', 'pad') == 'pad'
        for pipe in (cfg.test_pipeline, cfg.test_dataloader.dataset.pipeline):
            assert tuple(pipe[1].scale) == (2048, 448) and pipe[1].type == 'Resize'
        if pamr:
            assert dict(m.postprocess) == dict(type='PAMR', num_iter=10, dilations=(8, 16)), r.name
        else:
            assert m.get('postprocess') is None, r.name
        assert m.get('method') == own.model.get('method'), r.name   # the method keeps its own options
        if r.card != 'clearclip':
            s = common_setting(METHOD_CARDS[r.card], r.benchmark, pamr=pamr)
            assert (m.vocabulary, m.prob_thd) == (s.vocabulary, s.prob_thd)


# --------------------------------------------------------------------------- published numbers

def _entry(card, backbone='vit-b16', pamr=False, **method):
    e = find_method_entry(card, backbone, 'own', pamr, method)
    assert e is not None, (card, backbone, pamr, method)
    return e


def test_published_spot_values():
    assert _entry('sclip').numbers['voc21'] == 59.63 and _entry('sclip').numbers['ade20k'] == 16.45
    assert _entry('sclip', 'vit-l14').numbers['voc20'] == 60.3
    assert _entry('naclip', pamr=True).numbers['cityscapes'] == 38.27
    assert _entry('naclip', pamr=True).numbers['context59'] == 38.35
    assert _entry('naclip').numbers['voc21'] == 58.9 and _entry('naclip').quoted
    assert _entry('naclip', 'vit-l14').numbers['cityscapes'] == 31.4
    assert _entry('resclip', attn_strategy='resclip').numbers['voc20'] == 86.0
    assert _entry('resclip', attn_strategy='naclip').numbers['voc21'] == 61.1    # code-identical strategy
    assert _entry('resclip', 'vit-l14', attn_strategy='resclip').numbers['ade20k'] == 18.2
    assert _entry('resclip', attn_strategy='sclip').numbers['coco_object'] == 34.3
    assert _entry('resclip', 'vit-l14', attn_strategy='clearclip').numbers['context59'] == 33.4
    assert _entry('scclip').numbers['cityscapes'] == 41.0 and _entry('scclip').numbers['coco_stuff164k'] == 26.6
    assert _entry('gem', ignore_residual=False).numbers['voc20'] == 79.9
    assert _entry('gem', 'vit-l14', ignore_residual=True).numbers['ade20k'] == 14.2
    assert 'voc21' not in _entry('gem', ignore_residual=False).numbers
    assert _entry('proxyclip').numbers == {'context60': 34.0, 'coco_object': 34.6, 'context59': 37.4,
                                           'coco_stuff164k': 25.1, 'cityscapes': 37.5, 'ade20k': 18.7}
    # nothing was published under the common protocol, nor NACLIP ViT-L/14 with PAMR
    assert find_method_entry('naclip', 'vit-b16', 'common', False, {}) is None
    assert find_method_entry('naclip', 'vit-l14', 'own', True, {}) is None
    assert find_method_entry('sclip', 'vit-b16', 'own', True, {}) is None


@pytest.mark.parametrize('card, backbone, pamr, method, benches, avg', [
    ('naclip', 'vit-b16', True, {}, PAPER_ORDER, 42.46),                     # the NACLIP README's Avg
    ('scclip', 'vit-b16', False, {}, PAPER_ORDER, 43.9),                     # the radar chart's mean
    ('resclip', 'vit-b16', False, {'attn_strategy': 'resclip'}, PAPER_ORDER[3:], 40.3),   # figure's Avg columns
    ('resclip', 'vit-b16', False, {'attn_strategy': 'resclip'}, PAPER_ORDER[:3], 43.2),
    ('resclip', 'vit-l14', False, {'attn_strategy': 'resclip'}, PAPER_ORDER[3:], 39.1),
    ('resclip', 'vit-l14', False, {'attn_strategy': 'clearclip'}, PAPER_ORDER[:3], 37.2),
    ('naclip', 'vit-b16', False, {}, PAPER_ORDER[3:], 38.2),
    ('sclip', 'vit-l14', False, {}, PAPER_ORDER[:3], 30.5),
    ('gem', 'vit-b16', False, {'ignore_residual': False}, PAPER_ORDER[3:], 37.2),
    ('gem', 'vit-l14', False, {'ignore_residual': True}, PAPER_ORDER[3:], 33.8),
])
def test_published_numbers_reproduce_the_sources_averages(card, backbone, pamr, method, benches, avg):
    e = find_method_entry(card, backbone, 'own', pamr, method)
    digits = len(str(avg).split('.')[1])   # the sources round half up (42.455 -> 42.46)
    assert abs(sum(e.numbers[b] for b in benches) / len(benches) - avg) <= 0.5 * 10 ** -digits + 1e-9


def test_published_entries_are_consistent_with_the_cards():
    keys = set()
    for e in METHOD_ENTRIES:
        card = METHOD_CARDS[e.card]
        assert e.backbone in card.backbones and e.backbone in BACKBONE_INFO, e
        assert set(e.numbers) <= set(BENCHMARKS) and e.numbers, e
        assert all(0 < v < 100 for v in e.numbers.values()), e
        assert e.source in SOURCES and e.protocol == 'own', e
        assert set(e.method) <= set(card.method) - {'type'}, e   # variants select options the card sets
        key = (e.card, e.backbone, e.pamr, tuple(sorted((k, str(v)) for k, v in e.method.items())))
        assert key not in keys, e
        keys.add(key)
        # PAMR as the card: NACLIP's and ITACLIP's own protocols have it, the others' don't
        assert (e.card in ('naclip', 'itaclip') and e.pamr) == (e.pamr and card.defaults['postprocess'] is not None)
    assert {e.card for e in METHOD_ENTRIES} | set(NO_PUBLISHED) == set(METHOD_CARDS)  # a row or a reason
    assert not {e.card for e in METHOD_ENTRIES} & set(NO_PUBLISHED)


def test_published_methods_module_is_light():
    with open(os.path.join(ROOT, 'clearclip_seg', 'protocol', 'published_methods.py')) as f:
        tree = ast.parse(f.read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {'typing', 'dataclasses', 'constants'}, imported


# --------------------------------------------------------------------------- tables

def method_record(card, bench, miou, protocol='own', pamr=None, backbone='vit-b16', run=True, method=None,
                  change=None, params=None, wall_s=10.0):
    """A complete record of ``card`` on ``bench`` as tools/test.py writes it, with the card's setting."""
    c = METHOD_CARDS.get(card)
    if card == 'clearclip':
        b = BENCHMARKS[bench]
        s = common_setting(METHOD_CARDS['gem'], bench, pamr=bool(pamr))   # ClearCLIP's protocol values
        method_dict = dict(type='LastBlock', attn='qq', residual=False, ffn=False)
        last_block = dict(attn='qq', residual=False, ffn=False)
        vocabulary = b.vocabulary
    else:
        s = c.setting(bench, backbone) if protocol == 'own' else common_setting(c, bench, pamr=bool(pamr),
                                                                                backbone=backbone)
        if protocol == 'own' and pamr is not None:
            s = s.__class__(**{**s.__dict__, 'postprocess': dict(type='PAMR', num_iter=10, dilations=(8, 16))
                               if pamr else None})
        method_dict = {**s.method, **(method or {})}
        last_block = None
        vocabulary = s.vocabulary
    values = dict(resize=s.resize, mode=s.mode, crop=s.crop, stride=s.stride, logit_scale=s.logit_scale,
                  prob_thd=s.prob_thd, area_thd=s.area_thd, patch_fit=s.patch_fit, postprocess=s.postprocess,
                  vocabulary=vocabulary)
    values.update(change or {})
    arch, pretrained = BACKBONE_INFO[backbone].arch, BACKBONE_INFO[backbone].pretrained
    n = BENCHMARKS[bench].num_images
    rec = {
        'record_version': 2, 'kind': 'evaluation', 'complete': True, 'created': '2025-01-01T00:00:00+00:00',
        'benchmark': bench, 'method': card,
        'config': {'path': f'configs/{card}/{card}_{backbone}_{bench}.py', 'cfg_options': {}, 'resolved': ''},
        'model': {'arch': arch, 'pretrained': pretrained, 'precision': 'fp16', 'method': method_dict,
                  'last_block': last_block,
                  'vocabulary': {'name': values['vocabulary'], 'digest': 'd' + values['vocabulary'],
                                 'num_classes': 3, 'num_queries': 3},
                  'templates': {'name': 'openai_imagenet', 'count': 80}, 'logit_scale': values['logit_scale'],
                  'prob_thd': values['prob_thd'],
                  'test_cfg': {'mode': values['mode'], 'crop_size': [values['crop']] * 2,
                               'stride': [values['stride']] * 2, 'patch_fit': values['patch_fit']},
                  'area_thd': values['area_thd'], 'postprocess': values['postprocess'],
                  'scoring': 'softmax', 'tower': 'openclip_vit'},
        'protocol': {'resize': [2048, values['resize']], 'mode': values['mode'],
                     'crop': [values['crop']] * 2, 'stride': [values['stride']] * 2,
                     'prob_thd': values['prob_thd'], 'logit_scale': values['logit_scale'],
                     'templates': 'openai_imagenet (80)', 'vocab_digest': 'd' + values['vocabulary'],
                     'precision': 'fp16'},
        'dataset': {'type': 'X', 'data_root': 'data/x', 'num_images': n, 'classes': ['a', 'b', 'c']},
        'metrics': {'mIoU': miou, 'aAcc': 90.0, 'mAcc': 60.0, 'IoU': {'a': miou, 'b': miou, 'c': miou}},
        'timing': {'wall_s': wall_s, 'images_per_s': n / wall_s, 'world_size': 1, 'device': 'NVIDIA H100'},
        'versions': {'python': '3.11'}, 'git_commit': None,
    }
    if params is not None:
        rec['model']['params'] = dict(image=params, text=1000, method=0)
    if run:
        rec['run'] = dict(suite='methods' if protocol == 'own' else 'methods-common', card=card,
                          protocol=protocol + ('+pamr' if protocol == 'common' and pamr else ''),
                          preset='clearclip' if card == 'clearclip' else None, backbone=backbone)
    return rec


# (card, benchmark, mIoU, keywords)
RUNS = [
    ('clearclip', 'voc21', 52.0, {}), ('clearclip', 'voc20', 81.0, {}),
    ('naclip', 'voc21', 65.0, {}), ('naclip', 'voc20', 83.5, {}),
    ('naclip', 'voc21', 59.5, dict(pamr=False)),
    ('sclip', 'voc21', 50.25, dict(protocol='common')), ('sclip', 'voc20', 79.0, dict(protocol='common')),
    ('resclip', 'voc21', 61.0, {}), ('resclip', 'voc20', 86.4, {}),
    ('gem', 'voc20', 80.0, dict(method=dict(ignore_residual=True))),
    ('scclip', 'voc21', 64.0, dict(pamr=True, protocol='common')),
]


@pytest.fixture()
def method_table(tmp_path):
    for i, (card, bench, miou, kw) in enumerate(RUNS):
        atomic_write_json(method_record(card, bench, miou, **kw), str(tmp_path / f'{i}_{card}_{bench}.json'))
    warnings = []
    table = build_main_table(load_records([str(tmp_path)], warn=warnings.append), warn=warnings.append)
    assert not warnings, warnings
    return table


def test_one_row_per_method_protocol_and_pamr(method_table):
    labels = [r.method for r in method_table.rows]
    assert labels == ['ClearCLIP', 'SCLIP (common protocol)', 'NACLIP', 'NACLIP, PAMR off', 'ResCLIP',
                      'SC-CLIP (common protocol + PAMR)', 'GEM [ignore_residual=True]']
    rows = {r.method: r for r in method_table.rows}
    # ResCLIP's per-benchmark options (temp_thd, weights) do not split its row
    assert set(rows['ResCLIP'].records) == {'voc21', 'voc20'}
    assert rows['NACLIP'].published == {'voc21': 64.07, 'voc20': 83.03} and not rows['NACLIP'].quoted
    assert rows['NACLIP'].diff('voc21') == pytest.approx(65.0 - 64.07)
    assert rows['NACLIP, PAMR off'].published == {'voc21': 58.9} and rows['NACLIP, PAMR off'].quoted == {'voc21'}
    assert rows['ResCLIP'].published == {'voc21': 61.1, 'voc20': 86.0}
    assert rows['GEM [ignore_residual=True]'].published == {'voc20': 80.2}
    assert rows['ClearCLIP'].published == {'voc21': 51.8, 'voc20': 80.9}
    # nothing was published under the common protocol
    assert not rows['SCLIP (common protocol)'].published
    assert not rows['SC-CLIP (common protocol + PAMR)'].published
    assert all(not r.off_protocol for r in method_table.rows), [(r.method, r.off_protocol)
                                                                for r in method_table.rows]
    assert (rows['SCLIP (common protocol)'].protocol, rows['NACLIP'].protocol) == ('common', 'own')


def test_markdown_has_numbers_published_numbers_and_row_cards(method_table):
    md = to_markdown(method_table)
    for s in ('| NACLIP | CLIP ViT-B/16 (OpenAI) | 65.00 (64.07, +0.93) | 83.50 (83.03, +0.47) |',
              '| ResCLIP | CLIP ViT-B/16 (OpenAI) | 61.00 (61.1, -0.10) | 86.40 (86.0, +0.40) |',
              '| NACLIP, PAMR off | CLIP ViT-B/16 (OpenAI) | 59.50 (58.9\u2020, +0.60) | - |',
              '| SCLIP (common protocol) | CLIP ViT-B/16 (OpenAI) | 50.25 | 79.00 |',
              'sinahmr/NACLIP README (v2)', 'GEM + ClearCLIP', '**Protocol of each row**',
              '| NACLIP \u00b7 CLIP ViT-B/16 (OpenAI) (own protocol) | VOC21 | VOC20 |',
              '| SCLIP (common protocol) \u00b7 CLIP ViT-B/16 (OpenAI) | VOC21 | VOC20 |',
              '| SC-CLIP (common protocol + PAMR) \u00b7 CLIP ViT-B/16 (OpenAI) | VOC21 |'):
        assert s in md, s
    cards = md[md.index('**Protocol of each row**'):]
    naclip = cards[cards.index('| NACLIP \u00b7'):]
    naclip = naclip[:naclip.index('\n\n')]
    for s in ('| resize (short side) | 336 | 336 |', '| windows | whole | whole |',
              '| patch fit | truncate | truncate |', '| logit scale | 40 | 40 |', '| prob_thd | 0.1 | 0 |',
              '| area_thd | off | off |',
              '| PAMR | 10 it (8,16) | 10 it (8,16) |', '| vocabulary | voc21_bg26 | voc20_synonyms |'):
        assert s in naclip, s
    sclip = cards[cards.index('| SCLIP (common protocol) \u00b7'):]
    sclip = sclip[:sclip.index('\n\n')]
    for s in ('| resize (short side) | 448 | 448 |', '| windows | 448/224 | 448/224 |',
              '| logit scale | 50 | 50 |', '| prob_thd | 0.5 | 0 |', '| vocabulary | voc21 | voc20 |',
              '| PAMR | off | off |'):
        assert s in sclip, s
    # a method's own protocol varies per benchmark by design: no "records disagree" lines
    assert 'records disagree' not in md.lower() and 'Off the published protocol' not in md


def test_csv_and_latex_carry_the_protocols(method_table):
    rows = {r['method']: r for r in csv.DictReader(io.StringIO(to_csv(method_table)))}
    n = rows['NACLIP']
    assert (n['card'], n['protocol'], n['pamr'], n['method_type'], n['attn']) == ('naclip', 'own', 'on', 'NACLIP', '')
    assert (n['voc21'], n['voc21_published'], n['voc21_diff']) == ('65.00', '64.07', '+0.93')
    assert (n['voc21_windows'], n['voc21_resize'], n['voc21_vocabulary']) == ('whole', '336', 'voc21_bg26')
    c = rows['ClearCLIP']
    assert (c['attn'], c['residual'], c['ffn'], c['card']) == ('qq', 'off', 'off', '')
    s = rows['SCLIP (common protocol)']
    assert (s['protocol'], s['voc21_windows'], s['voc21_published']) == ('common', '448/224', '')
    tex = to_latex(method_table)
    assert 'Protocol of each row' in tex and 'NACLIP' in tex


def test_deviation_from_the_card_is_flagged(tmp_path):
    atomic_write_json(method_record('naclip', 'voc21', 60.0, change=dict(logit_scale=50.0)),
                      str(tmp_path / 'a.json'))
    atomic_write_json(method_record('naclip', 'voc20', 80.0), str(tmp_path / 'b.json'))
    table = build_main_table(load_records([str(tmp_path)]))
    (row,) = table.rows
    assert row.off_protocol == {'voc21'}
    md = to_markdown(table)
    assert '60.00* (64.07, -4.07)' in md
    assert 'logit scale 50 (expected: 40) on VOC21' in md
    assert '| logit scale | 50* | 40 |' in md


def test_protocol_inferred_without_the_runners_note(tmp_path):
    atomic_write_json(method_record('sclip', 'voc21', 50.0, protocol='common', run=False),
                      str(tmp_path / 'common.json'))
    atomic_write_json(method_record('sclip', 'voc21', 60.0, run=False), str(tmp_path / 'own.json'))
    table = build_main_table(load_records([str(tmp_path)]))
    rows = {r.method: r for r in table.rows}
    assert set(rows) == {'SCLIP', 'SCLIP (common protocol)'}
    assert rows['SCLIP'].published == {'voc21': 59.63} and not rows['SCLIP (common protocol)'].published
    assert not any(r.off_protocol for r in table.rows)


def test_backbone_table_groups_by_family_and_size(tmp_path):
    # (backbone, image-tower parameters, wall seconds of each of the two benchmarks)
    for slug, params, wall in (('vit-l14', 303_966_208, 100.0), ('vit-b16', 86_192_640, 20.0),
                               ('openclip-vit-b16', 86_192_640, 25.0), ('siglip-vit-b16', 92_884_224, 50.0)):
        for bench, miou in (('voc20', 80.0), ('ade20k', 16.0)):
            rec = method_record('clearclip', bench, miou, backbone=slug, params=params, wall_s=wall, run=False)
            atomic_write_json(rec, str(tmp_path / f'{slug}_{bench}.json'))
    table = build_main_table(load_records([str(tmp_path)]), group_by='family')
    assert [(name, [r.backbone for r in rows]) for name, rows in table.groups()] == [
        ('OpenAI CLIP', ['vit-b16', 'vit-l14']), ('OpenCLIP', ['openclip-vit-b16']), ('SigLIP', ['siglip-vit-b16'])]
    md = to_markdown(table)
    assert '| Method | Backbone | Size | Params (M) | img/s | VOC20 | ADE20K | Avg (2 of 8) |' in md
    assert '### family: OpenAI CLIP' in md
    # img/s = all images of the row / all its wall time: (1449 + 2000) / (2 x 20 s)
    assert f'| ClearCLIP | CLIP ViT-B/16 (OpenAI) | B/16 | 86 | {3449 / 40:.2f} | 80.00 (80.9, -0.90) |' in md
    assert f'| ClearCLIP | CLIP ViT-L/14 (OpenAI) | L/14 | 304 | {3449 / 200:.2f} |' in md
    assert 'measured on NVIDIA H100' in md
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [(r['family'], r['size'], r['params']) for r in rows][:2] == [
        ('OpenAI CLIP', 'B/16', '86192640'), ('OpenAI CLIP', 'L/14', '303966208')]
    tex = to_latex(table)
    assert 'Params (M)' in tex


@pytest.mark.slow  # a subprocess of the command line; the grouping itself: the tests above
def test_cli_group_by_family(tmp_path):
    atomic_write_json(method_record('clearclip', 'voc20', 80.0, params=86_192_640, run=False),
                      str(tmp_path / 'r.json'))
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'collect_results.py'), str(tmp_path),
                          '--group-by', 'family'], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert '| Size | Params (M) | img/s |' in out.stdout


def test_record_describes_tower_parameters_and_scoring():
    import open_clip

    from clearclip_seg.records import describe_model
    from helpers import TINY_ARCH, TINY_NAME, tiny_segmentor
    seg = tiny_segmentor()
    info = describe_model(seg)
    open_clip.add_model_config(TINY_ARCH)
    clip = open_clip.create_model(TINY_NAME, pretrained=None)
    visual = sum(p.numel() for p in clip.visual.parameters())
    total = sum(p.numel() for p in clip.parameters())
    assert info['params'] == dict(image=visual, text=total - visual, method=0)
    assert (info['tower'], info['scoring'], info['logit_bias']) == ('openclip_vit', 'softmax', 0.0)


def test_own_scoring_rows_are_marked_not_comparable(tmp_path):
    """CLIPtrase's own protocol (centre crop, its metric): the row and the legend say its numbers stand apart."""
    atomic_write_json(method_record('cliptrase', 'voc21', 51.0), str(tmp_path / 'own.json'))
    atomic_write_json(method_record('cliptrase', 'voc21', 40.0, protocol='common'), str(tmp_path / 'common.json'))
    table = build_main_table(load_records([str(tmp_path)]))
    rows = {r.method: r for r in table.rows}
    assert set(rows) == {'CLIPtrase \u2021', 'CLIPtrase (common protocol)'}
    assert rows['CLIPtrase \u2021'].published == {'voc21': 50.88} and not rows['CLIPtrase \u2021'].off_protocol
    assert not rows['CLIPtrase (common protocol)'].published
    md = to_markdown(table)
    assert '| CLIPtrase \u2021 | CLIP ViT-B/16 (OpenAI) | 51.00 (50.88, +0.12) |' in md
    assert '\u2021 the method\'s own scoring' in md and 'not comparable' in md
