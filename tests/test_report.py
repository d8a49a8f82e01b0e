"""The HTML report (clearclip_seg.report, tools/report.py) and the analysis tables (long format, suites,
your own dataset), from hand-made records with known numbers; the page in headless Chromium; a tiny-model
sweep end to end (slow)."""
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import numpy as np
import pytest

from clearclip_seg.records import atomic_write_json
from clearclip_seg.tables import build_main_table, load_records, to_latex, to_markdown, write_outputs
from clearclip_seg.tables.long import LONG_COLUMNS, long_rows, to_long_csv, to_long_jsonl
from clearclip_seg.tables.plot import plot_title
from helpers import ROOT, confusion_miou, tiny_cfg_options

CLASSES = {'voc21': ['background', 'aeroplane', 'bicycle'], 'voc20': ['aeroplane', 'bicycle', 'bird'],
           'my_dataset': ['sky', 'grass', 'tree']}
IMAGES = {'voc21': 1449, 'voc20': 1449, 'my_dataset': 2}
CLEARCLIP = dict(type='LastBlock', attn='qq', residual=False, ffn=False)
CLIP = dict(type='LastBlock', attn='qk', residual=True, ffn=True)


def record(bench, miou, ious, method=CLEARCLIP, name='clearclip', run=None, prob_thd=None, protocol=None,
           pretrained='openai', wall_s=10.0, created='2024-07-01T00:00:00+00:00', vocabulary=None,
           precision='fp16', images=None, patch_fit='pad', area_thd=None):
    """A complete version-2 record with the fields tools/test.py writes (numbers chosen by the test)."""
    classes = CLASSES[bench]
    last_block = {k: method[k] for k in ('attn', 'residual', 'ffn')} if method['type'] == 'LastBlock' else None
    thd = prob_thd if prob_thd is not None else {'voc21': 0.5}.get(bench, 0.0)
    proto = dict(resize=[2048, 448], mode='slide', crop=[448, 448], stride=[224, 224], prob_thd=thd,
                 logit_scale=50.0, templates='openai_imagenet (80)', vocab_digest=f'd{bench}', precision=precision)
    proto.update(protocol or {})
    images = images or IMAGES[bench]
    model = {'arch': 'ViT-B-16', 'pretrained': pretrained, 'precision': precision, 'method': dict(method),
             'last_block': last_block,
             'vocabulary': {'name': vocabulary or bench, 'digest': f'd{bench}', 'num_classes': 3, 'num_queries': 3},
             'templates': {'name': 'openai_imagenet', 'count': 80}, 'logit_scale': proto['logit_scale'],
             'prob_thd': thd, 'test_cfg': {'mode': proto['mode'], 'crop_size': proto['crop'],
                                           'stride': proto['stride'], 'patch_fit': patch_fit},
             'area_thd': area_thd, 'postprocess': None, 'params': {'image': 86_000_000, 'text': 1, 'method': 0}}
    identity = {'model': model, 'benchmark': bench, 'data': f'data/{bench}'}
    return {
        'record_version': 2, 'kind': 'evaluation', 'complete': True, 'created': created, 'benchmark': bench,
        'method': name,
        'config': {'path': f'configs/{name}/{name}_vit-b16_{bench}.py', 'cfg_options': {},
                   'resolved': f"work_dir = '{(run or {}).get('name')}'", 'identity': identity},
        'model': model, 'protocol': proto,
        'dataset': {'type': 'X', 'data_root': f'data/{bench}', 'num_images': images, 'classes': classes},
        'metrics': {'mIoU': miou, 'aAcc': 90.0, 'mAcc': 60.0, 'IoU': dict(zip(classes, ious)),
                    'Acc': dict(zip(classes, [50.0, 40.0, 30.0])), 'area_intersect': [1, 2, 3],
                    'area_union': [2, 3, round(miou * 100)], 'area_pred': [1, 1, 1], 'area_label': [1, 1, 1]},
        'timing': {'wall_s': wall_s, 'images_per_s': images / wall_s, 'world_size': 1, 'device': 'cpu',
                   'torch_threads': 2},
        'versions': {'python': '3.11.7', 'torch': '2.14.1'}, 'git_commit': 'c184c1f91cf7bbec2e99494f1eed224acd8461ff',
        'run': run or {},
    }


def write(root, suite, name, rec):
    rec['run'] = dict(rec['run'], suite=suite, name=name)
    path = os.path.join(str(root), suite, name, 'record.json')
    atomic_write_json(rec, path)
    return path


SCLIP = dict(type='SCLIP')
SCLIP_OWN = dict(resize=[2048, 336], crop=[224, 224], stride=[112, 112], logit_scale=65.0, prob_thd=0.1)


@pytest.fixture()
def sweep(tmp_path):
    """main + baselines + ablation + methods + methods-common, with known numbers."""
    r = tmp_path / 'results'
    for suite, tag in (('main', ''), ('methods', ''), ('methods-common', '_common')):   # one run, three suites
        write(r, suite, f'clearclip_vit-b16_voc21{tag}', record('voc21', 52.34, [81.25, 40.5, None]))
    write(r, 'main', 'clearclip_vit-b16_voc20', record('voc20', 80.12, [90.0, 70.24, 80.12]))
    # off the published protocol: vanilla CLIP in fp32 on 2 images (2 runs, 2 differences each)
    off = dict(precision='fp32', images=2)
    write(r, 'baselines', 'clip_vit-b16_voc21', record('voc21', 17.01, [20.0, 14.02, 17.01], CLIP, 'clip',
                                                        prob_thd=0.2, **off))
    write(r, 'baselines', 'clip_vit-b16_voc20', record('voc20', 40.55, [50.5, 31.15, 40.0], CLIP, 'clip', **off))
    for attn, res, ffn, miou in (('vv', True, False, 30.5), ('kk', False, False, 60.25)):
        write(r, 'ablation', f'ablation_{attn}_res{int(res)}_ffn{int(ffn)}_vit-b16_voc20',
              record('voc20', miou, [miou, 1.0, 2.0], dict(type='LastBlock', attn=attn, residual=res, ffn=ffn),
                     'clearclip'))
    write(r, 'methods', 'sclip_vit-b16_voc21',
          record('voc21', 60.0, [88.0, 50.0, 42.0], SCLIP, 'sclip', run=dict(card='sclip', protocol='own'),
                 protocol=SCLIP_OWN, vocabulary='voc21_bg26', patch_fit='truncate', area_thd=0.1))
    write(r, 'methods-common', 'sclip_vit-b16_voc21_common',   # fp32 on 2 images: off the common protocol
          record('voc21', 55.5, [80.0, 44.5, 42.0], SCLIP, 'sclip', run=dict(card='sclip', protocol='common'),
                 precision='fp32', images=2))
    return r


class Tables(HTMLParser):
    """Every <table> of a page: id -> rows of cell texts; and every <img> src."""

    def __init__(self):
        super().__init__()
        self.tables, self.images, self._stack = {}, [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == 'table':
            self._stack.append((a.get('id') or f'table{len(self.tables) + len(self._stack)}', []))
        elif tag == 'tr' and self._stack:
            self._stack[-1][1].append([])
        elif tag in ('td', 'th') and self._stack and self._stack[-1][1]:
            self._stack[-1][1][-1].append('')
        elif tag == 'img':
            self.images.append(a['src'])
        elif tag == 'br' and self._stack and self._stack[-1][1] and self._stack[-1][1][-1]:
            self._stack[-1][1][-1][-1] += ' '

    def handle_endtag(self, tag):
        if tag == 'table' and self._stack:
            ident, rows = self._stack.pop()
            self.tables[ident] = [[' '.join(c.split()) for c in row] for row in rows]

    def handle_data(self, data):
        if self._stack and self._stack[-1][1] and self._stack[-1][1][-1]:
            self._stack[-1][1][-1][-1] += data


def parse(path):
    p = Tables()
    with open(path, encoding='utf-8') as f:
        p.feed(f.read())
    return p


# --------------------------------------------------------------------------- tables for analysis

def test_one_run_in_two_suites_is_one_row_without_warnings(sweep):
    warnings = []
    t = build_main_table(load_records([str(sweep)], warn=warnings.append), warn=warnings.append)
    assert warnings == []
    clear = next(r for r in t.rows if r.method == 'ClearCLIP')
    assert clear.ours('voc21') == 52.34 and clear.ours('voc20') == 80.12
    assert t.notes == ['ClearCLIP \u00b7 CLIP ViT-B/16 (OpenAI): the same run in the suites main, methods, '
                       'methods-common on VOC21: one row.']
    # a different record of the same row and benchmark is still a warning naming both files
    write(sweep, 'rerun', 'clearclip_vit-b16_voc21', record('voc21', 50.0, [1.0, 2.0, 3.0],
                                                           created='2025-01-01T00:00:00+00:00'))
    t = build_main_table(load_records([str(sweep)], warn=lambda m: None), warn=warnings.append)
    assert len(warnings) == 1 and 'two records' in warnings[0] and 'rerun' in warnings[0]
    assert next(r for r in t.rows if r.method == 'ClearCLIP').ours('voc21') == 50.0   # the newer


def test_long_format_rows(sweep):
    """The long rows as plain CSV and JSON (no pandas needed): one per run x benchmark x class."""
    t = build_main_table(load_records([str(sweep)], warn=lambda m: None), warn=lambda m: None)
    rows = long_rows(t)
    assert len(rows) == 8 * 3
    text = to_long_csv(rows)
    parsed = list(csv.DictReader(io.StringIO(text)))
    lines = [json.loads(line) for line in to_long_jsonl(rows).splitlines()]
    sclip = [r for r in parsed if r['method'] == 'SCLIP']
    assert [(r['class'], r['iou'], r['miou'], r['published_miou'], r['protocol']) for r in sclip] == [
        ('background', '88.0', '60.0', '59.63', 'own'), ('aeroplane', '50.0', '60.0', '59.63', 'own'),
        ('bicycle', '42.0', '60.0', '59.63', 'own')]
    assert (sclip[0]['resize'], sclip[0]['windows'], sclip[0]['patch_fit'], sclip[0]['logit_scale'],
            sclip[0]['area_thd'], sclip[0]['vocabulary']) == ('336', '224/112', 'truncate', '65', '0.1', 'voc21_bg26')
    clear = next(r for r in lines if r['method'] == 'ClearCLIP' and r['class'] == 'bicycle')
    assert clear['iou'] is None and clear['miou'] == 52.34 and clear['attn'] == 'qq' and clear['residual'] is False
    assert clear['record'].endswith('/record.json') and not os.path.isabs(clear['record'])


def test_long_format_loads_into_pandas(sweep, tmp_path):
    pd = pytest.importorskip('pandas')
    t = build_main_table(load_records([str(sweep)], warn=lambda m: None), warn=lambda m: None)
    out = tmp_path / 'tables'
    write_outputs(t, str(out), ['long'])
    df = pd.read_csv(out / 'results_long.csv')
    js = pd.read_json(out / 'results_long.jsonl', lines=True)
    runs = sum(len(r.records) for r in t.rows)
    assert runs == 8 and len(df) == len(js) == 3 * runs
    assert list(df.columns) == list(LONG_COLUMNS) == list(js.columns)
    clear21 = df[(df.method == 'ClearCLIP') & (df.benchmark == 'voc21')].sort_values('class_index')
    assert clear21['class'].tolist() == CLASSES['voc21']
    assert clear21.iou.tolist()[:2] == [81.25, 40.5] and math.isnan(clear21.iou.tolist()[2])  # undefined: NaN
    assert set(clear21.miou) == {52.34} and set(clear21.published_miou) == {51.8}
    assert clear21.diff_miou.iloc[0] == pytest.approx(52.34 - 51.8, abs=1e-12)
    assert set(clear21.prob_thd) == {0.5} and set(clear21.precision) == {'fp16'}
    assert clear21.record.iloc[0].endswith('clearclip_vit-b16_voc21/record.json')
    # settings as columns: the mean IoU per method and protocol straight from a groupby
    sclip = df[df.card == 'sclip'].groupby('protocol').iou.mean()
    assert sclip['own'] == pytest.approx((88.0 + 50.0 + 42.0) / 3) and sclip['common'] == pytest.approx(
        (80.0 + 44.5 + 42.0) / 3)
    grid = df[(df.benchmark == 'voc20') & (df.class_index == 0)].set_index(['attn', 'residual', 'ffn']).miou
    assert grid[('vv', True, False)] == 30.5 and grid[('kk', False, False)] == 60.25
    assert js[(js.method == 'ClearCLIP') & (js.benchmark == 'voc21')].iou.tolist()[:2] == [81.25, 40.5]
    assert (js.logit_scale[js.card == 'sclip'].tolist()) == [65.0] * 3 + [50.0] * 3


def test_plot_counts_runs_and_marks_published(sweep):
    from clearclip_seg.report.plots import miou_svg
    t = build_main_table(load_records([str(sweep)], warn=lambda m: None), warn=lambda m: None)
    off = sorted((r.method, b) for r in t.rows for b in r.off_protocol)
    assert off == [('SCLIP (common protocol)', 'voc21'), ('vanilla CLIP', 'voc20'), ('vanilla CLIP', 'voc21')]
    assert len(t.card.deviations) == 4   # (row, difference) lines: what the title used to count as runs
    assert plot_title(t).endswith('(3 of 8 runs off the published protocol)')
    from clearclip_seg.report.plots import speed_points, speed_svg
    # images/s = images over wall time of the row's records; only rows with every benchmark
    assert [(label.split(' \u00b7')[0], ips, avg) for label, ips, avg, _ in speed_points(t)] == [
        ('ClearCLIP', 2 * 1449 / 20.0, (52.34 + 80.12) / 2), ('vanilla CLIP', 4 / 20.0, (17.01 + 40.55) / 2)]
    assert len(re.findall(r'id="speed-\d+"', speed_svg(t))) == 2
    svg = miou_svg(t)
    # published ticks: ClearCLIP (2 + avg), vanilla CLIP (2 + avg), the ablation points kk/vv have
    # none (no preset), SCLIP own on VOC21 (1)
    assert len(re.findall(r'id="published-\d+"', svg)) == 3 + 3 + 1


def test_latex_footnotes_have_no_paths_or_runner_warnings(sweep):
    write(sweep, 'rerun', 'clearclip_vit-b16_voc21', record('voc21', 50.0, [1.0, 2.0, 3.0],
                                                           created='2025-01-01T00:00:00+00:00',
                                                           vocabulary='/home/me/vocabs/voc21.txt'))
    t = build_main_table(load_records([str(sweep)], warn=lambda m: None), warn=lambda m: None)
    tex, md = to_latex(t), to_markdown(t)
    assert 'two records' in md and str(sweep) in md
    assert 'two records' not in tex and str(sweep) not in tex and '/home/me' not in tex
    assert 'vocabulary voc21.txt' in tex   # the file's name stays (the row card of the methods rows)


def test_your_own_dataset_is_a_column(tmp_path):
    named = record('my_dataset', 15.6, [5.73, 8.32, 32.74])
    atomic_write_json(named, str(tmp_path / 'a' / 'record.json'))
    unnamed = record('my_dataset', 12.5, [1.0, 2.0, 3.0], CLIP, 'clip')
    unnamed['benchmark'] = None
    unnamed['dataset']['data_root'] = '/data/flowers/'
    atomic_write_json(unnamed, str(tmp_path / 'b' / 'record.json'))
    t = build_main_table(load_records([str(tmp_path)], warn=lambda m: None))
    assert t.benchmarks == ['flowers', 'my_dataset']
    md = to_markdown(t)
    assert '| ClearCLIP | CLIP ViT-B/16 (OpenAI) | - | 15.60 | 15.60\u00a7 |' in md
    assert '| vanilla CLIP | CLIP ViT-B/16 (OpenAI) | 12.50 | - | 12.50\u00a7 |' in md


# --------------------------------------------------------------------------- the report

@pytest.fixture()
def report(sweep, tmp_path):
    from clearclip_seg.report import write_report
    recs = load_records([str(sweep)], warn=lambda m: None)
    path = write_report(recs, str(tmp_path / 'report'), compare=['ClearCLIP \u00b7 CLIP ViT-B/16 (OpenAI) | voc21',
                                                                 'SCLIP \u00b7 CLIP ViT-B/16 (OpenAI) | voc21'],
                        warn=lambda m: None)
    return path


def test_report_tables_hold_the_records_numbers(report):
    p = parse(report)
    main = p.tables['main-table-0']
    assert main[0] == ['Method', 'Backbone', 'VOC21', 'VOC20', 'Avg (2 of 8)']
    assert main[1] == ['ClearCLIP', 'CLIP ViT-B/16 (OpenAI)', '52.34 51.8\u2020 +0.54', '80.12 80.9 -0.78',
                       '66.23 66.35 -0.12']
    assert main[2] == ['vanilla CLIP', 'CLIP ViT-B/16 (OpenAI)', '17.01* 16.2 +0.81', '40.55* 41.8 -1.25',
                       '28.78 29.00 -0.22']
    methods = p.tables['methods-table']
    assert methods[1] == ['own', 'common'] * 3
    sclip = next(r for r in methods if r[0] == 'SCLIP')
    assert sclip == ['SCLIP', 'CLIP ViT-B/16 (OpenAI)', '60.00 59.63 +0.37', '55.50*', '-', '-',
                     '60.00\u00a7', '55.50\u00a7']
    clear = next(r for r in methods if r[0] == 'ClearCLIP')   # its own protocol is the common one
    assert clear[2:4] == ['52.34 51.8\u2020 +0.54'] * 2
    assert any('protocol of SCLIP' in r[0] for r in methods if len(r) == 1)   # the details row
    grid = p.tables['ablation-avg']
    assert grid[0] == ['attention', 'residual on, FFN on', 'residual on, FFN off', 'residual off, FFN on',
                       'residual off, FFN off']
    assert grid[1:] == [['qk', '40.55', '-', '-', '-'], ['qq', '-', '-', '-', '80.12'],
                        ['kk', '-', '-', '-', '60.25'], ['vv', '-', '30.50', '-', '-']]
    assert p.tables['ablation-voc20'][1:] == grid[1:]
    per = p.tables['per-class-voc21']
    assert per[1][0] == 'background' and per[1][1:4] == ['81.25', '20.00', '88.00']
    assert per[3][1] == '-'   # undefined IoU
    # bicycle is undefined for ClearCLIP: not compared; the largest |B - A| first
    assert p.tables['cmp-out'][1:] == [['aeroplane', '40.50', '50.00', '+9.50'],
                                       ['background', '81.25', '88.00', '+6.75']]
    prov = p.tables['provenance']
    assert len(prov) == 1 + 8
    row = next(r for r in prov if r[0].startswith('SCLIP \u00b7') and r[1] == 'VOC21')
    assert row[2] == '60.00' and row[3].endswith('methods/sclip_vit-b16_voc21/record.json')
    assert re.fullmatch('[0-9a-f]{12}', row[5]) and row[6:9] == ['openai', 'fp16', 'c184c1f91cf7']
    assert row[9] == 'cpu, 2 thread(s), python 3.11.7, torch 2.14.1'
    html = open(report, encoding='utf-8').read()
    assert 'random weights' not in html.lower()   # openai weights: no banner
    assert not re.search(r'(src|href)\s*=\s*["\']?(https?:)?//', html)   # nothing fetched: opens offline
    assert '<svg' in html and 'id="published-0"' in html


def test_a_new_method_card_appears_in_the_methods_table(sweep, tmp_path, monkeypatch):
    """Cards added to protocol/methods.py (ITACLIP, FLOSS, ...) need nothing in the report: a made-up card."""
    import dataclasses

    from clearclip_seg.protocol import methods as cards
    from clearclip_seg.report import write_report
    card = dataclasses.replace(cards.METHOD_CARDS['sclip'], name='newclip', title='NewCLIP',
                               method={'type': 'NewCLIP'})
    monkeypatch.setitem(cards.METHOD_CARDS, 'newclip', card)
    for bench, miou in (('voc21', 33.25), ('voc20', 66.5)):
        own = dict(SCLIP_OWN, prob_thd=0.1 if bench == 'voc21' else 0.0,
                   logit_scale=card.setting(bench).logit_scale, resize=[2048, card.setting(bench).resize])
        write(sweep, 'methods', f'newclip_vit-b16_{bench}',
              record(bench, miou, [miou, 1.0, 2.0], dict(type='NewCLIP'), 'newclip',
                     run=dict(card='newclip', protocol='own'), protocol=own,
                     vocabulary=card.setting(bench).vocabulary, patch_fit='truncate',
                     area_thd=card.setting(bench).area_thd))
    path = write_report(load_records([str(sweep)], warn=lambda m: None), str(tmp_path / 'r'), warn=lambda m: None)
    methods = parse(path).tables['methods-table']
    assert next(r for r in methods if r[0] == 'NewCLIP') == ['NewCLIP', 'CLIP ViT-B/16 (OpenAI)', '33.25', '-',
                                                            '66.50', '-', '49.88', '-']
    assert any(r[0].startswith('protocol of NewCLIP') for r in methods if len(r) == 1)


def test_backbone_table_groups_by_family(tmp_path):
    from clearclip_seg.report import write_report
    write(tmp_path, 'main', 'a', record('voc20', 80.12, [1.0, 2.0, 3.0], wall_s=14.49))
    rec = record('voc20', 81.0, [1.0, 2.0, 3.0], wall_s=28.98)
    rec['model']['pretrained'] = 'laion2b_s34b_b88k'
    write(tmp_path, 'backbones', 'b', rec)
    path = write_report(load_records([str(tmp_path)]), str(tmp_path / 'r'))
    p = parse(path)
    assert p.tables['backbone-table-0'][1] == ['ClearCLIP', 'CLIP ViT-B/16 (OpenAI)', 'B/16', '86.0', '100.00',
                                               '80.12 80.9 -0.78', '80.12 80.90 -0.78']   # avg: 2 decimals
    assert p.tables['backbone-table-1'][1] == ['ClearCLIP', 'OpenCLIP ViT-B/16 laion2b_s34b_b88k', 'B/16', '86.0',
                                               '50.00', '81.00 81.4 -0.40', '81.00 81.40 -0.40']
    html = open(path, encoding='utf-8').read()
    assert '<h3>OpenAI CLIP</h3>' in html and '<h3>OpenCLIP</h3>' in html


@pytest.mark.slow
def test_report_cli(sweep, tmp_path):
    tool = os.path.join(ROOT, 'tools', 'report.py')
    out = tmp_path / 'r'
    proc = subprocess.run([sys.executable, tool, str(sweep), '--out', str(out), '--compare', 'SCLIP', 'x'],
                          capture_output=True, text=True, cwd=ROOT)
    err = proc.stderr.strip()
    assert proc.returncode == 2 and err.startswith("error: --compare 'SCLIP': 2 runs match") and '\n' not in err
    assert not (out / 'index.html').exists()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'collect_results.py'), str(sweep),
                           '--html', str(out)], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert (out / 'index.html').is_file() and proc.stdout.strip() == str(out / 'index.html')


# --------------------------------------------------------------------------- a real browser

def chromium():
    return shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')


def browse(html, fragment=''):
    """The DOM after the page's load (scripts run) and the browser's console lines."""
    exe = chromium()
    if exe is None:
        pytest.skip('no chromium on PATH (bash tools/setup_browser.sh installs it from the distribution)')
    proc = subprocess.run([exe, '--headless', '--no-sandbox', '--disable-gpu', '--enable-logging=stderr', '--v=0',
                           '--virtual-time-budget=5000', '--dump-dom', 'file://' + os.path.abspath(html) + fragment],
                          capture_output=True, text=True, timeout=120)
    console = [line for line in proc.stderr.splitlines() if ':CONSOLE' in line]
    return proc.stdout, console


def test_report_in_headless_chromium(report):
    dom, console = browse(report)
    assert console == []                                # no console message, no uncaught error
    body = re.search(r'<body[^>]*>', dom).group(0)
    assert 'data-ready="1"' in body                     # the script ran to its end
    p = Tables()
    p.feed(dom)
    assert p.tables['cmp-out'][1] == ['aeroplane', '40.50', '50.00', '+9.50']   # filled by the script
    assert p.tables['main-table-0'][1][2] == '52.34 51.8\u2020 +0.54'
    # the sort script: ClearCLIP's VOC21 column ascending, the undefined IoU last; vanilla CLIP's descending
    for frag, order in (('#sort=per-class-voc21:1', ['aeroplane', 'background', 'bicycle']),
                        ('#sort=per-class-voc21:2:desc', ['background', 'bicycle', 'aeroplane'])):
        dom, console = browse(report, frag)
        p = Tables()
        p.feed(dom)
        assert console == [] and [r[0] for r in p.tables['per-class-voc21'][1:]] == order, frag


# --------------------------------------------------------------------------- tiny model, end to end

def _sample():
    import runpy
    return runpy.run_path(os.path.join(ROOT, 'docs', 'report', 'make_sample.py'))


@pytest.mark.slow
def test_tiny_sweep_report_end_to_end(tmp_path):
    """main + baselines + methods (ClearCLIP, SCLIP, NACLIP, own and common) on VOC21/VOC20 with the tiny
    random CLIP; panels from three runs; the page in Chromium: numbers of the records, pictures load."""
    from clearclip_seg.report import write_report
    results = _sample()['make_sweep'](str(tmp_path), ablation=False)
    warnings = []
    recs = load_records([results], warn=warnings.append)
    path = write_report(recs, str(tmp_path / 'report'), warn=warnings.append)
    assert warnings == []   # ClearCLIP in main, methods and methods-common: one row, no warning
    by_run = {r.data['run']['name']: r for r in recs}
    p = parse(path)
    main = p.tables['main-table-0']
    clear = next(r for r in main if r[0] == 'ClearCLIP')
    assert clear[2].split()[0] == f"{by_run['clearclip_vit-b16_voc21'].miou:.2f}*"   # * fp32, 2 images
    methods = p.tables['methods-table']
    sclip = next(r for r in methods if r[0] == 'SCLIP')
    assert sclip[2].split()[0].rstrip('*') == f"{by_run['sclip_vit-b16_voc21'].miou:.2f}"
    assert sclip[3].rstrip('*') == f"{by_run['sclip_vit-b16_voc21_common'].miou:.2f}"
    html = open(path, encoding='utf-8').read()
    assert 'id="random-weights"' in html
    assert len(p.images) == 2 * (2 + 3)   # two images: image, ground truth, three predictions
    assert all(os.path.isfile(os.path.join(os.path.dirname(path), s)) for s in p.images)
    if chromium() is not None:
        dom, console = browse(path)
        assert console == []
        assert 'data-images="10/10"' in dom and 'data-ready="1"' in dom


@pytest.mark.slow
def test_your_own_dataset_by_config_only(tmp_path):
    """docs/examples/own_dataset.py on a BaseSegDataset folder: the record, the table column, and the mIoU
    equal to an independent confusion-matrix computation on the saved predictions."""
    from PIL import Image

    from clearclip_seg.apis import evaluate
    root = tmp_path / 'my_dataset'
    rng = np.random.default_rng(0)
    for d in ('images', 'labels'):
        (root / d).mkdir(parents=True)
    for i, (h, w) in enumerate(((40, 60), (50, 30))):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / 'images' / f'im{i}.jpg')
        label = rng.integers(0, 3, (h, w), dtype=np.uint8)
        label[:3] = 255   # ignored
        Image.fromarray(label).save(root / 'labels' / f'im{i}.png')
    (root / 'classes.txt').write_text('sky\ngrass\ntree, bush\n')
    show = tmp_path / 'vis'
    rec = evaluate(os.path.join(ROOT, 'docs', 'examples', 'own_dataset.py'),
                   tiny_cfg_options(root, **{'model.vocabulary': str(root / 'classes.txt')}),
                   work_dir=str(tmp_path / 'w'), record_path=str(tmp_path / 'w' / 'record.json'),
                   show_dir=str(show))
    assert rec['benchmark'] == 'my_dataset' and rec['dataset']['num_images'] == 2
    pairs = [(str(show / 'labels' / f'im{i}_pred.png'), str(root / 'labels' / f'im{i}.png')) for i in range(2)]
    for _, gt in pairs:   # the saved ground truth is the label file, ignore value included
        saved = np.asarray(Image.open(gt.replace(str(root / 'labels'), str(show / 'labels')).replace('.png',
                                                                                                     '_gt.png')))
        assert np.array_equal(saved, np.asarray(Image.open(gt)))
    assert rec['metrics']['mIoU'] == pytest.approx(confusion_miou(pairs, 3)[0], abs=1e-9)
    t = build_main_table(load_records([str(tmp_path / 'w')]))
    assert t.benchmarks == ['my_dataset']
    assert f"{rec['metrics']['mIoU']:.2f}" in to_markdown(t).split('| my_dataset |')[1]
