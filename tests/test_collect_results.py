"""Result tables from synthetic run records (clearclip_seg.tables; the CLI once, as a subprocess). CPU, no mmseg."""
import ast
import csv
import io
import json
import os
import subprocess
import sys

import pytest

from clearclip_seg.protocol import published
from clearclip_seg.protocol.benchmarks import BACKBONES
from clearclip_seg.protocol.presets import PRESETS
from clearclip_seg.records import atomic_write_json
from clearclip_seg.tables import (RecordError, build_main_table, build_per_class_tables, load_records, to_csv,
                                  to_latex, to_markdown, write_outputs)
from helpers import ROOT

CLASSES = {
    'voc21': ['background', 'aeroplane', 'bicycle'],
    'voc20': ['aeroplane', 'bicycle', 'bird'],
    'ade20k': ['wall', 'building', 'sky'],
}
# Two models x three benchmarks: mIoU and per-class IoU (None = undefined).
CLEAR = dict(arch='ViT-B-16', pretrained='openai', last_block=dict(attn='qq', residual=False, ffn=False),
             method='clearclip')
VANILLA = dict(arch='ViT-B-16', pretrained='openai', last_block=dict(attn='qk', residual=True, ffn=True),
               method='clip')
NUMBERS = {
    ('clear', 'voc21'): (52.34, [81.25, 40.5, None]),
    ('clear', 'voc20'): (80.12, [90.0, 70.24, 80.12]),
    ('clear', 'ade20k'): (17.5, [30.11, 12.0, 10.39]),
    ('vanilla', 'voc21'): (17.01, [20.0, 14.02, 17.01]),
    ('vanilla', 'voc20'): (40.55, [50.5, 31.15, 40.0]),
    ('vanilla', 'ade20k'): (2.25, [3.0, 1.5, 2.25]),
}
PROB_THD = {('clear', 'voc21'): 0.5, ('vanilla', 'voc21'): 0.2}


def make_record(model, bench, miou, ious, complete=True, prob_thd=None, precision='fp16'):
    spec = CLEAR if model == 'clear' else VANILLA
    thd = PROB_THD.get((model, bench), 0.0) if prob_thd is None else prob_thd
    classes = CLASSES[bench]
    n_images = {'voc21': 1449, 'voc20': 1449, 'ade20k': 2000}[bench]
    return {
        'record_version': 1, 'complete': complete, 'created': '2024-07-01T00:00:00+00:00',
        'benchmark': bench, 'method': spec['method'],
        'config': {'path': f"configs/{spec['method']}/x_{bench}.py", 'cfg_options': {}, 'resolved': ''},
        'model': {'arch': spec['arch'], 'pretrained': spec['pretrained'], 'precision': precision,
                  'last_block': spec['last_block'],
                  'vocabulary': {'name': bench, 'digest': f'digest{bench}', 'num_classes': len(classes),
                                 'num_queries': len(classes)},
                  'templates': {'name': 'openai_imagenet', 'count': 80}, 'logit_scale': 50.0,
                  'prob_thd': thd, 'test_cfg': {'mode': 'slide', 'crop_size': [448, 448], 'stride': [224, 224]}},
        'protocol': {'resize': [2048, 448], 'mode': 'slide', 'crop': [448, 448], 'stride': [224, 224],
                     'prob_thd': thd, 'logit_scale': 50.0, 'templates': 'openai_imagenet (80)',
                     'vocab_digest': f'digest{bench}', 'precision': precision},
        'dataset': {'type': 'X', 'data_root': 'data/x', 'num_images': n_images, 'classes': classes},
        'metrics': {'mIoU': miou, 'aAcc': 90.0, 'mAcc': 60.0, 'IoU': dict(zip(classes, ious)),
                    'Acc': dict(zip(classes, [50.0] * 3)), 'area_intersect': [1, 2, 3],
                    'area_union': [2, 3, 4], 'area_pred': [1, 1, 1], 'area_label': [1, 1, 1]},
        'timing': {'wall_s': 10.0, 'images_per_s': 100.0, 'world_size': 1, 'device': 'cpu'},
        'versions': {'python': '3.11'}, 'git_commit': None,
    }


@pytest.fixture()
def record_dir(tmp_path):
    for (model, bench), (miou, ious) in NUMBERS.items():
        atomic_write_json(make_record(model, bench, miou, ious), str(tmp_path / f'{model}_{bench}' / 'record.json'))
    # a partial record of a benchmark no complete record has
    partial = make_record('clear', 'voc21', 99.99, [1.0, 2.0, 3.0], complete=False)
    partial['benchmark'] = 'context60'
    atomic_write_json(partial, str(tmp_path / 'partial' / 'record.json'))
    return tmp_path


@pytest.fixture()
def table(record_dir):
    warnings = []
    recs = load_records([str(record_dir)], warn=warnings.append)
    assert len(recs) == 6
    assert any('partial' in w and 'complete=False' in w for w in warnings), warnings
    return build_main_table(recs, warn=warnings.append)


def test_rows_columns_and_average(table):
    assert table.benchmarks == ['voc21', 'voc20', 'ade20k']      # PAPER_ORDER, no context60 (partial)
    assert [r.preset for r in table.rows] == ['clearclip', 'clip']
    clear, vanilla = table.rows
    assert clear.ours('voc21') == 52.34
    avg, have = table.avg(clear)
    assert avg == pytest.approx((52.34 + 80.12 + 17.5) / 3) and have == table.benchmarks
    assert table.avg_published(clear) == pytest.approx((51.8 + 80.9 + 16.7) / 3)
    assert vanilla.published == {'voc21': 16.2, 'voc20': 41.8, 'ade20k': 2.1}
    assert clear.quoted == {'voc21'}
    assert not clear.off_protocol and not vanilla.off_protocol   # vanilla at 0.2 on voc21 is the protocol


def test_markdown(table):
    md = to_markdown(table)
    for s in ('| ClearCLIP | CLIP ViT-B/16 (OpenAI) | 52.34 (51.8\u2020, +0.54) | 80.12 (80.9, -0.78) '
              '| 17.50 (16.7, +0.80) | 49.99 (49.80, +0.19) |',
              '| vanilla CLIP | CLIP ViT-B/16 (OpenAI) | 17.01 (16.2, +0.81) | 40.55 (41.8, -1.25) '
              '| 2.25 (2.1, +0.15) | 19.94 (20.03, -0.10) |'):
        assert s in md, md
    assert '| Method | Backbone | VOC21 | VOC20 | ADE20K | Avg (3 of 8) |' in md
    assert 'Avg: mean mIoU over the 3 benchmarks present (VOC21, VOC20, ADE20K)' in md
    assert 'Context60' not in md and '99.99' not in md


def test_protocol_card(table):
    md = to_markdown(table)
    assert '**Protocol** (from the records):' in md
    for s in ('- resize: 2048x448', '- mode: slide', '- logit scale: 50', '- templates: openai_imagenet (80)',
              '- precision: fp16', '| crop/stride | 448/224 | 448/224 | 448/224 |', 'digestvoc21', 'digestade20k',
              '| images | 1449 | 1449 | 2000 |'):
        assert s in md, s
    prob_row = next(line for line in md.splitlines() if line.startswith('| prob_thd |'))
    assert '0.5' in prob_row and '0.2' in prob_row and 'vanilla CLIP' in prob_row
    assert 'records disagree' not in md.lower() and 'Off the published protocol' not in md
    assert 'Protocol (from the records)' in to_latex(table)
    header = next(csv.reader(io.StringIO(to_csv(table))))
    assert {'resize', 'precision', 'voc21_prob_thd', 'voc21_vocab_digest'} <= set(header)


def test_protocol_disagreement_and_deviation(record_dir):
    rec = make_record('vanilla', 'ade20k', 2.25, [3.0, 1.5, 2.25], precision='fp32')
    atomic_write_json(rec, str(record_dir / 'vanilla_ade20k' / 'record.json'))
    rec = make_record('clear', 'voc21', 52.34, [81.25, 40.5, None], prob_thd=0.3)
    atomic_write_json(rec, str(record_dir / 'clear_voc21' / 'record.json'))
    t = build_main_table(load_records([str(record_dir)], warn=lambda m: None))
    md = to_markdown(t)
    assert 'vanilla CLIP \u00b7 CLIP ViT-B/16 (OpenAI), precision: fp16 (voc21, voc20); fp32 (ade20k)' in md
    assert 'prob_thd 0.3 (published: 0.5)' in md
    assert '52.34* (51.8\u2020, +0.54)' in md


def test_csv(table):
    rows = list(csv.DictReader(io.StringIO(to_csv(table))))
    assert [r['method'] for r in rows] == ['ClearCLIP', 'vanilla CLIP']
    clear, vanilla = rows
    assert (clear['voc21'], clear['voc21_published'], clear['voc21_diff'], clear['voc21_quoted']) == \
        ('52.34', '51.8', '+0.54', 'yes')
    assert (clear['voc20'], clear['voc20_diff'], clear['ade20k'], clear['ade20k_diff']) == \
        ('80.12', '-0.78', '17.50', '+0.80')
    assert (clear['avg'], clear['avg_published'], clear['avg_diff'], clear['avg_over']) == \
        ('49.99', '49.80', '+0.19', 'voc21 voc20 ade20k')
    assert (vanilla['voc21'], vanilla['voc20'], vanilla['ade20k'], vanilla['avg']) == \
        ('17.01', '40.55', '2.25', '19.94')
    assert vanilla['voc21_prob_thd'] == '0.2' and clear['voc21_prob_thd'] == '0.5'
    assert clear['precision'] == 'fp16' and clear['resize'] == '2048x448'


def test_latex(table):
    tex = to_latex(table)
    assert '\\toprule' in tex and '\\bottomrule' in tex
    assert 'ClearCLIP & CLIP ViT-B/16 (OpenAI) & 52.34\\,{\\scriptsize(51.8$^\\dagger$, +0.54)}' in tex
    assert '49.99\\,{\\scriptsize(49.80, +0.19)}' in tex
    assert '2.25\\,{\\scriptsize(2.1, +0.15)}' in tex
    assert 'resize: 2048x448' in tex and 'precision: fp16' in tex


def test_one_decimal(table):
    table.decimals = 1
    md = to_markdown(table)
    assert '| 52.3 (51.8\u2020, +0.5) | 80.1 (80.9, -0.8) | 17.5 (16.7, +0.8) | 50.0 (49.8, +0.2) |' in md


def test_per_class(table):
    tables = build_per_class_tables(table)
    assert [t.benchmark for t in tables] == ['voc21', 'voc20', 'ade20k']
    voc21 = tables[0]
    assert voc21.classes == CLASSES['voc21']
    md = to_markdown(voc21)
    assert '| background | 81.25 | 20.00 |' in md
    assert '| aeroplane | 40.50 | 14.02 |' in md
    assert '| bicycle | - | 17.01 |' in md
    assert '**Protocol**' in md
    rows = list(csv.reader(io.StringIO(to_csv(tables[2]))))
    assert rows[1] == ['wall', '30.11', '3.00'] and rows[4] == ['mIoU', '17.50', '2.25']
    assert ['protocol.prob_thd', '0', '0'] in rows
    full = to_markdown(table, tables)
    assert '### Per-class IoU: ADE20K (%)' in full and '| sky | 10.39 | 2.25 |' in full


def test_group_by(record_dir):
    t = build_main_table(load_records([str(record_dir)], warn=lambda m: None), group_by='preset')
    md = to_markdown(t)
    assert '### preset: ClearCLIP' in md and '### preset: vanilla CLIP' in md


def test_custom_last_block_has_no_published(tmp_path):
    rec = make_record('clear', 'voc21', 40.0, [1.0, 2.0, 3.0])
    rec['model']['last_block'] = dict(attn='vv', residual=True, ffn=False)
    atomic_write_json(rec, str(tmp_path / 'r.json'))
    t = build_main_table(load_records([str(tmp_path / 'r.json')]))
    (row,) = t.rows
    assert row.preset is None and not row.published
    assert '| attn=vv, residual on, FFN off | CLIP ViT-B/16 (OpenAI) | 40.00 | 40.00 |' in to_markdown(t)


def test_png_and_files(record_dir, tmp_path):
    out = tmp_path / 'out'
    table = build_main_table(load_records([str(record_dir)], warn=lambda m: None))
    write_outputs(table, str(out), ['md', 'csv', 'tex', 'png'], build_per_class_tables(table))
    png = out / 'results.png'
    assert png.is_file() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    for name in ('results.md', 'results.csv', 'results.tex', 'per_class_voc21.csv', 'per_class_ade20k.csv'):
        assert (out / name).is_file(), name
    assert '52.34' in (out / 'results.md').read_text()


@pytest.mark.slow  # subprocesses of the command line; the tables themselves: the tests above
def test_cli_prints_tables_and_fails_in_one_line(record_dir, tmp_path):
    tool = os.path.join(ROOT, 'tools', 'collect_results.py')
    proc = subprocess.run([sys.executable, tool, str(record_dir)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert '49.99 (49.80, +0.19)' in proc.stdout
    assert 'partial' in proc.stderr and 'partial/record.json' in proc.stderr
    bad = tmp_path / 'bad.json'
    bad.write_text('{"record_version": 1, "complete": tr')
    proc = subprocess.run([sys.executable, tool, str(bad)], capture_output=True, text=True, cwd=ROOT)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.startswith('error: ') and 'bad.json' in err and '\n' not in err


def test_bad_input(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    with pytest.raises(RecordError, match='empty'):
        load_records([str(empty)])
    bad = tmp_path / 'bad.json'
    bad.write_text('{"record_version": 1, "complete": tr')
    with pytest.raises(RecordError, match='bad.json: malformed JSON'):
        load_records([str(bad)])
    only_partial = tmp_path / 'p.json'
    only_partial.write_text(json.dumps(make_record('clear', 'voc21', 1.0, [1.0, 1.0, 1.0], complete=False)))
    with pytest.raises(RecordError, match='no complete records'):
        load_records([str(only_partial)], warn=lambda m: None)
    with pytest.raises(RecordError, match='no such file'):
        load_records([str(tmp_path / 'missing')])


def test_published_module_is_light():
    pub = published
    assert pub.published_miou('vit-b16', 'clearclip', 'voc21') == 51.8
    assert pub.published_miou('vit-l14', 'clip', 'voc21') is None
    assert pub.published_miou('vit-b16', 'maskclip', 'voc20') == 74.9
    assert pub.published_miou('vit-b16', 'maskclip-nores', 'voc20') == 61.4
    assert pub.published_miou('vit-b16', 'sclip-style', 'ade20k') == 14.6
    assert pub.published_miou('vit-b16', 'sclip-style-nores', 'ade20k') == 17.0
    assert pub.published_miou('openclip-vit-b16', 'clearclip', 'ade20k') == 18.9
    assert set(k for k, _ in pub.PUBLISHED) <= set(BACKBONES)
    assert set(p for _, p in pub.PUBLISHED) <= set(PRESETS)
    with open(os.path.join(ROOT, 'clearclip_seg', 'protocol', 'published.py')) as f:
        tree = ast.parse(f.read())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {'typing', 'constants', 'benchmarks'}, imported   # the protocol's pure tables only
