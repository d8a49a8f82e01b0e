"""Every protocol value lives in one place: change it there and the generated configs follow.

The configs are rendered by clearclip_seg/protocol/render.py from clearclip_seg/protocol/
(the freshness test in test_configs.py checks the committed files equal its output); here
protocol values are changed in the tables and the renderer's output must change with them,
and nowhere else needs editing.
"""
import ast
import dataclasses
import os

import pytest

from helpers import ROOT


def load_generator():
    """The config renderer (it reads the protocol tables when called, so patched values show)."""
    from clearclip_seg.protocol import render
    return render


def test_resize_and_threshold_are_written_once(monkeypatch):
    from clearclip_seg.protocol import benchmarks, constants
    before = load_generator().expected_files()
    monkeypatch.setattr(constants, 'RESIZE', (2048, 512))
    voc21 = dataclasses.replace(benchmarks.BENCHMARKS['voc21'], prob_thd=0.35)
    monkeypatch.setitem(benchmarks.BENCHMARKS, 'voc21', voc21)
    after = load_generator().expected_files()
    voc_ds = os.path.join('configs', '_base_', 'datasets', 'voc21.py')
    assert 'scale=(2048, 448)' in before[voc_ds] and 'scale=(2048, 512)' in after[voc_ds]
    leaf = os.path.join('configs', 'clearclip', 'clearclip_vit-b16_voc21.py')
    assert 'prob_thd=0.5,' in before[leaf] and 'prob_thd=0.35,' in after[leaf]
    # every other benchmark's dataset config changes only in its resize
    for key in benchmarks.BENCHMARKS:
        rel = os.path.join('configs', '_base_', 'datasets', f'{key}.py')
        assert before[rel].replace('(2048, 448)', '(2048, 512)').replace('448 unless', '512 unless') == after[rel]


def test_base_model_config_follows_the_protocol(monkeypatch):
    from clearclip_seg.protocol import constants
    rel = os.path.join('configs', '_base_', 'models', 'clearclip_vit-b16.py')
    before = load_generator().expected_files()[rel]
    monkeypatch.setattr(constants, 'LOGIT_SCALE', 40.0)
    monkeypatch.setattr(constants, 'SLIDE_CROP', 336)
    monkeypatch.setattr(constants, 'SLIDE_STRIDE', 112)
    monkeypatch.setattr(constants, 'CLIP_MEAN', (123.456, 111.111, 100.001))
    after = load_generator().expected_files()[rel]
    assert 'logit_scale=50.0,' in before and 'crop_size=(448, 448), stride=(224, 224)' in before
    assert 'mean=[122.771, 116.746, 104.094],' in before
    expected = (before.replace('logit_scale=50.0,', 'logit_scale=40.0,')
                .replace('crop_size=(448, 448), stride=(224, 224)', 'crop_size=(336, 336), stride=(112, 112)')
                .replace('mean=[122.771, 116.746, 104.094],', 'mean=[123.456, 111.111, 100.001],'))
    assert after == expected
# -- every default derived from protocol/constants.py -----------------------------------
# A changed value must be followed by every consumer: those that read it when called
# (segmentor, methods, encoders, data preprocessor, FLOP counts) in this process, and
# those that build tables at import (presets, method cards, published tables, configs)
# in a fresh process where the value is changed before anything imports it.

KK = dict(attn='kk', residual=True, ffn=False)   # not ClearCLIP's: a changed "ClearCLIP" last block


def test_last_block_defaults_follow_the_constant(monkeypatch, tiny_clip):
    import torch

    from clearclip_seg.methods import build_method
    from clearclip_seg.methods.last_block import LastBlock
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    from clearclip_seg.segmentor_options import resolve_method
    from clearclip_seg.flops import encoder_geometry, vit_encoder_flops
    from clearclip_seg.protocol import constants
    monkeypatch.setattr(constants, 'CLEARCLIP_LAST_BLOCK', KK)
    assert LastBlock().options() == KK
    assert build_method(dict(type='LastBlock')).options() == KK
    assert resolve_method(None, None).options() == KK                  # the segmentor's default method
    assert resolve_method(None, dict(ffn=True)).options() == dict(KK, ffn=True)
    enc = DenseCLIPEncoder(tiny_clip[0].visual)
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tokens, _ = enc.last_block_input(x)
        assert torch.equal(enc.last_block(tokens), enc.last_block(tokens, 'kk', True, False))
        assert not torch.equal(enc.last_block(tokens), enc.last_block(tokens, 'qq', False, False))
        assert torch.equal(enc(x), enc(x, attn='kk', residual=True, ffn=False))
        assert torch.equal(enc.decompose_tokens(tokens)['output'], enc.last_block(tokens, 'kk', True, False))
    geo = encoder_geometry(enc)
    assert (geo['last_attn'], geo['last_ffn']) == ('kk', False)
    geo.pop('last_attn'), geo.pop('last_ffn')
    assert vit_encoder_flops((4, 4), **geo) == vit_encoder_flops((4, 4), **geo, last_attn='kk', last_ffn=False)


def test_resclip_internal_pamr_follows_the_constants(monkeypatch):
    from clearclip_seg.methods.resclip import ResCLIP
    from clearclip_seg.protocol import constants
    monkeypatch.setattr(constants, 'PAMR_NUM_ITER', 3)
    monkeypatch.setattr(constants, 'PAMR_DILATIONS', (2, 4))
    m = ResCLIP(temp_thd=0.1, attn_rcs_weights=(2.0, 0.6), attn_sfr_weights=(2.1, 0.6))
    assert (m.pamr_iter, m.pamr_dilations) == (3, (2, 4))


def test_segmentor_and_preprocessor_defaults_follow_the_constants(monkeypatch):
    from clearclip_seg.models.data_preprocessor import ClearCLIPDataPreProcessor
    from clearclip_seg.segmentor_options import resolve_test_cfg
    from clearclip_seg.protocol import constants
    from helpers import tiny_segmentor
    monkeypatch.setattr(constants, 'CLEARCLIP_LAST_BLOCK', KK)
    monkeypatch.setattr(constants, 'LOGIT_SCALE', 7.0)
    monkeypatch.setattr(constants, 'SLIDE_CROP', 64)
    monkeypatch.setattr(constants, 'SLIDE_STRIDE', 48)
    monkeypatch.setattr(constants, 'TEMPLATES', 'a_photo_of')
    monkeypatch.setattr(constants, 'CLIP_MEAN', (1.0, 2.0, 3.0))
    monkeypatch.setattr(constants, 'CLIP_STD', (4.0, 5.0, 6.0))
    assert resolve_test_cfg(None)['crop_size'] == [64, 64] and resolve_test_cfg(None)['stride'] == [48, 48]
    seg = tiny_segmentor(test_cfg=None)
    assert seg.method.options() == KK
    assert seg.logit_scale == 7.0 and seg.scorer.logit_scale == 7.0
    assert (seg.test_cfg['crop_size'], seg.test_cfg['stride']) == ([64, 64], [48, 48])
    pre = ClearCLIPDataPreProcessor(bgr_to_rgb=True)
    assert pre.mean.flatten().tolist() == [1.0, 2.0, 3.0] and pre.std.flatten().tolist() == [4.0, 5.0, 6.0]
    # what the config sets still wins
    assert ClearCLIPDataPreProcessor(mean=[0, 0, 0], std=[1, 1, 1]).mean.flatten().tolist() == [0, 0, 0]


_CHANGED = '''
import json, sys
from clearclip_seg.protocol import constants as c
c.CLEARCLIP_LAST_BLOCK = dict(attn='kk', residual=True, ffn=False)
c.VANILLA_CLIP_LAST_BLOCK = dict(attn='vv', residual=False, ffn=True)
c.VANILLA_CLIP_BACKGROUND_PROB_THD = 0.3
c.LOGIT_SCALE = 7.0
c.PAMR_NUM_ITER, c.PAMR_DILATIONS = 3, (2, 4)
c.PAPER_ORDER = c.PAPER_ORDER[1:] + c.PAPER_ORDER[:1]
c.OPENAI_MEAN, c.OPENAI_STD = (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)
sys.path.insert(0, 'tests')
from test_one_place import load_generator
from clearclip_seg.protocol import backbones, benchmarks, methods, presets, published, published_methods
from clearclip_seg.tables.labels import order_benchmarks
files = load_generator().expected_files()
voc = benchmarks.BENCHMARKS['voc21']
print(json.dumps(dict(
    clearclip=presets.PRESETS['clearclip'].last_block, clip=presets.PRESETS['clip'].last_block,
    clip_thd=presets.PRESETS['clip'].prob_thd(voc),
    gem_scale=methods.METHOD_CARDS['gem'].setting('voc21').logit_scale,
    common_scale=methods.common_setting(methods.METHOD_CARDS['sclip'], 'voc21').logit_scale,
    pamr=methods.common_setting(methods.METHOD_CARDS['sclip'], 'voc21', pamr=True).postprocess,
    naclip_pamr=methods.METHOD_CARDS['naclip'].setting('voc20').postprocess,
    order=list(benchmarks.PAPER_ORDER), table_order=order_benchmarks(set(c.PAPER_ORDER)),
    published_cols=list(published.MAIN_TABLE[('vit-b16', 'clearclip')]),
    mean_std=backbones.backbone_mean_std('vit-b16'),
    clearclip_leaf=files['configs/clearclip/clearclip_vit-b16_voc21.py'],
    clip_leaf=files['configs/clip/clip_vit-b16_voc21.py'],
)))
'''


@pytest.mark.slow
def test_changed_constants_move_presets_cards_tables_and_configs():
    """Every table built at import follows a protocol value changed before the first import."""
    import json
    import subprocess
    import sys
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', _CHANGED], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    order = ['context60', 'coco_object', 'voc20', 'context59', 'coco_stuff164k', 'cityscapes', 'ade20k', 'voc21']
    assert got['clearclip'] == KK and got['clip'] == dict(attn='vv', residual=False, ffn=True)
    assert got['clip_thd'] == 0.3
    assert got['gem_scale'] == got['common_scale'] == 7.0
    assert got['pamr'] == got['naclip_pamr'] == dict(type='PAMR', num_iter=3, dilations=[2, 4])
    assert got['order'] == got['table_order'] == got['published_cols'] == order
    assert got['mean_std'] == [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]
    assert "last_block=dict(attn='kk', residual=True, ffn=False)" in got['clearclip_leaf']
    assert "last_block=dict(attn='vv', residual=False, ffn=True)" in got['clip_leaf']
    assert 'prob_thd=0.3,' in got['clip_leaf']


# -- no second copy anywhere else in the package ----------------------------------------
# Copies left in modules that are being reworked elsewhere: each entry must still be found
# (a stale entry fails too), so the list only shrinks.
PENDING = set()


def _literal(node):
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _named_values(node):
    """(name, value node) pairs a node binds: keywords, parameter defaults, constant dict keys."""
    if isinstance(node, ast.keyword) and node.arg:
        yield node.arg, node.value
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = node.args
        pos = a.posonlyargs + a.args
        yield from ((x.arg, d) for x, d in zip(pos[len(pos) - len(a.defaults):], a.defaults))
        yield from ((x.arg, d) for x, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None)
    if isinstance(node, ast.Dict):
        for k, v in zip(node.keys, node.values):
            if k is not None and isinstance(_literal(k), str):
                yield _literal(k), v


def protocol_copies(path: str):
    """(what, line) for each protocol value written down in a module instead of read from protocol/."""
    from clearclip_seg.protocol import constants as c
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    dict_keys = {id(k) for n in ast.walk(tree) if isinstance(n, ast.Dict) for k in n.keys if k is not None}
    clear_attn = c.CLEARCLIP_LAST_BLOCK['attn']
    stats = c.CLIP_MEAN + c.CLIP_STD + c.OPENAI_MEAN + c.OPENAI_STD
    windows = (c.SLIDE_CROP, c.SLIDE_STRIDE, (c.SLIDE_CROP,) * 2, (c.SLIDE_STRIDE,) * 2)
    for n in ast.walk(tree):
        line = getattr(n, 'lineno', 0)
        for name, node in _named_values(n):
            v = _literal(node)
            if v is None:
                continue
            if name in ('attn', 'last_attn') and isinstance(v, str):
                yield "ClearCLIP's last block", line
            if 'logit_scale' in name and v == c.LOGIT_SCALE:
                yield 'logit scale', line
            if 'prob_thd' in name and v == c.VANILLA_CLIP_BACKGROUND_PROB_THD:
                yield "vanilla CLIP's prob_thd", line
            if (name in ('num_iter', 'pamr_iter') and v == c.PAMR_NUM_ITER) or (
                    'dilations' in name and isinstance(v, tuple) and v == c.PAMR_DILATIONS):
                yield 'PAMR default', line
            if name in ('crop_size', 'stride', 'crop') and v in windows:
                yield 'slide window', line
        if isinstance(n, ast.Constant):
            if n.value == clear_attn and id(n) not in dict_keys:  # a mode table's keys are the modes themselves
                yield "ClearCLIP's last block", line
            if type(n.value) is float and n.value == c.LOGIT_SCALE:
                yield 'logit scale', line
        if isinstance(n, (ast.Tuple, ast.List)):
            v = _literal(n)
            if isinstance(v, (tuple, list)) and v:
                v = tuple(v)
                if len(v) == 3 and all(type(x) is float for x in v) and any(
                        abs(x - s) < 1e-3 for x in v for s in stats):
                    yield 'CLIP mean/std', line
                if all(isinstance(x, str) for x in v) and len(set(v) & set(c.PAPER_ORDER)) >= 3:
                    yield 'benchmark order', line
                if v in windows:
                    yield 'slide window', line


def test_protocol_values_are_written_only_in_protocol():
    found = {}
    for folder, _, files in os.walk(os.path.join(ROOT, 'clearclip_seg')):
        for name in sorted(files):
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, ROOT).replace(os.sep, '/')
            if name.endswith('.py') and not rel.startswith('clearclip_seg/protocol/'):
                for what, line in protocol_copies(path):
                    found.setdefault((rel, what), []).append(line)
    new = {k: v for k, v in found.items() if k not in PENDING}
    assert not new, f'protocol values written outside clearclip_seg/protocol/ (read them from there): {new}'
    assert not PENDING - set(found), f'no longer found, drop from PENDING: {PENDING - set(found)}'


def test_the_scanner_finds_each_kind_of_copy(tmp_path):
    src = tmp_path / 'm.py'
    src.write_text("def f(attn='qq', logit_scale=50.0, num_iter=10):\n"
                   "    return dict(crop_size=(448, 448), prob_thd=0.2, m=[122.771, 116.746, 104.094],\n"
                   "                order=('voc21', 'context60', 'coco_object'), dilations=(8, 16))\n")
    assert sorted({w for w, _ in protocol_copies(str(src))}) == sorted({
        "ClearCLIP's last block", 'logit scale', 'PAMR default', 'slide window', "vanilla CLIP's prob_thd",
        'CLIP mean/std', 'benchmark order'})
