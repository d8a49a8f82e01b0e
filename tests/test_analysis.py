"""The decomposition analysis: components, entropy, per-component logits, the analysis record."""
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, TINY_NAME, make_voc2012, tiny_cfg_options, tiny_segmentor

CONFIG = os.path.join(ROOT, 'configs', 'clearclip', 'clearclip_vit-b16_voc21.py')


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.randn(2, 3, 48, 64)


@pytest.mark.parametrize('mode', ['qk', 'qq', 'kk', 'vv', 'qq+kk', 'identity'])
def test_res_plus_attn_is_block_output_with_residual_and_no_ffn(tiny_clip, images, mode):
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    model, _ = tiny_clip
    enc = DenseCLIPEncoder(model.visual, fused_attn=False)
    with torch.no_grad():
        parts = enc.decompose(images, mode, residual=True, ffn=False)
        block_output = enc.last_block(parts['x_res'], mode, residual=True, ffn=False)
    # residual on, FFN off: the block's own output is exactly X_res + X_attn
    torch.testing.assert_close(parts['x_res+x_attn'], block_output, rtol=0, atol=1e-6)
    torch.testing.assert_close(parts['x_res'] + parts['x_attn'], parts['output'], rtol=0, atol=0)
    assert parts['grid'] == (3, 4)


def test_ffn_on_adds_the_ffn_term_to_the_sum(tiny_clip, images):
    """FFN on: output = X_res + X_attn + ls_2(mlp(ln_2(X_res + X_attn))); for qk this is open_clip's block."""
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    model, _ = tiny_clip
    enc = DenseCLIPEncoder(model.visual, fused_attn=False)
    with torch.no_grad():
        parts = enc.decompose(images, 'qk', residual=True, ffn=True)
        output = enc.last_block(parts['x_res'], 'qk', residual=True, ffn=True)
        native = model.visual.transformer.resblocks[-1](parts['x_res'])
    assert (output - parts['x_res+x_attn']).abs().max() > 1e-3  # the FFN term is not negligible here
    torch.testing.assert_close(parts['x_res+x_attn'] + parts['ffn'], output, rtol=0, atol=1e-5)
    torch.testing.assert_close(output, native, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(parts['output'], native, rtol=1e-5, atol=1e-5)


def test_decompose_does_not_change_the_encoder(tiny_clip, images):
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    model, _ = tiny_clip
    enc = DenseCLIPEncoder(model.visual)
    with torch.no_grad():
        kk = enc.decompose(images, mode='kk')
        own = enc.decompose(images)
        ref = DenseCLIPEncoder(model.visual).decompose(images, 'kk')
    assert not hasattr(enc, 'attn_mode')  # the encoder holds no switches: every call names its own
    assert torch.equal(kk['x_attn'], ref['x_attn']) and not torch.equal(kk['x_attn'], own['x_attn'])
    assert torch.equal(own['output'], own['x_attn'])  # ClearCLIP: no residual, no FFN
    with pytest.raises(ValueError, match='unknown attention mode'):
        enc.decompose(images, mode='qv')


def test_parse_modes():
    from clearclip_seg.analysis import parse_modes
    assert parse_modes('qk, qq+kk,qk,identity') == ['qk', 'qq+kk', 'identity']
    with pytest.raises(ValueError, match='unknown attention mode'):
        parse_modes('qk,qv')
    with pytest.raises(ValueError, match='no attention mode'):
        parse_modes(' , ')


def test_normalized_entropy_uniform_is_one_identity_is_zero():
    from clearclip_seg.analysis import normalized_entropy
    n = 7
    uniform = torch.full((2, 3, n, n), 1.0 / n, dtype=torch.float32)
    ent = normalized_entropy(uniform)
    assert ent.dtype == torch.float64 and ent.shape == (2, 3, n)
    torch.testing.assert_close(ent, torch.ones_like(ent), rtol=0, atol=1e-12)
    identity = torch.eye(n).expand(2, 3, n, n)
    ent = normalized_entropy(identity)
    assert torch.equal(ent, torch.zeros_like(ent))
    # a sum of two softmaxes (qq+kk) is read as their average: two one-hots -> log 2 / log n
    two = torch.eye(n) + torch.roll(torch.eye(n), 1, dims=1)
    torch.testing.assert_close(normalized_entropy(two), torch.full((n,), torch.log(torch.tensor(2.0)).item()
                                                                   / torch.log(torch.tensor(float(n))).item(),
                                                                   dtype=torch.float64))
    # in between for anything else
    p = torch.softmax(torch.randn(4, n, n), dim=-1)
    ent = normalized_entropy(p)
    assert ((ent > 0) & (ent < 1)).all()


def test_attention_map_float64_matches_encoder_map(tiny_clip, images):
    from clearclip_seg.analysis import attention_map_float64, normalized_entropy
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    model, _ = tiny_clip
    for mode in ('qk', 'qq+kk', 'identity'):
        enc = DenseCLIPEncoder(model.visual)
        with torch.no_grad():
            own = enc.decompose(images, mode, attn_map=True)
            amap = attention_map_float64(enc, own['x_res'], mode)
        assert amap.dtype == torch.float64
        torch.testing.assert_close(amap.float(), own['attn_map'], rtol=1e-4, atol=1e-5)
    assert normalized_entropy(amap).abs().max() == 0  # identity


def test_window_statistics(tiny_clip):
    from clearclip_seg.analysis import window_statistics
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    from clearclip_seg.models.slide import iter_windows
    model, _ = tiny_clip
    enc = DenseCLIPEncoder(model.visual)
    image = torch.randn(3, 40, 70)
    windows = list(iter_windows(image, 48, 32, 16))
    assert [tuple(w.shape[-2:]) for w in windows] == [(48, 48)] * 2  # height 40 < crop: padded to 48
    stats = window_statistics(enc, windows, ['qk', 'identity'])
    assert stats['qk']['x_res_norm'] == pytest.approx(stats['identity']['x_res_norm'])
    assert stats['identity']['entropy'] == 0
    assert 0 < stats['qk']['entropy'] <= 1 and len(stats['qk']['entropy_per_head']) == 4
    assert stats['qk']['x_attn_norm'] > 0


def test_component_logits_reuse_the_segmentor_scoring():
    from clearclip_seg.analysis import component_query_logits
    seg = tiny_segmentor()
    imgs = [torch.randn(3, 70, 100), torch.randn(3, 50, 40)]
    comp = component_query_logits(seg, imgs, 'qq')
    assert set(comp) == {'x_res', 'x_attn', 'x_res+x_attn'}
    # ClearCLIP's features are X_attn of the qq mode
    for a, b in zip(comp['x_attn'], seg.query_logits(imgs)):
        assert a.shape == (4, *b.shape[1:])
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # residual on, FFN off: X_res + X_attn (the same weights, built with that last block)
    comp = component_query_logits(seg, imgs, 'qk', sources=('x_res+x_attn',))
    ref = tiny_segmentor(last_block=dict(attn='qk', residual=True, ffn=False)).query_logits(imgs)
    for a, b in zip(comp['x_res+x_attn'], ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert seg.method.options() == dict(attn='qq', residual=False, ffn=False)


def test_last_block_input_cache_reuses_windows_exactly():
    from clearclip_seg.analysis import LastBlockInputCache, component_query_logits, window_statistics
    from clearclip_seg.models.slide import iter_windows
    seg = tiny_segmentor()
    img = torch.randn(3, 70, 100)
    cache = LastBlockInputCache(seg.encoder)
    stats = window_statistics(seg.encoder, list(iter_windows(img, 64, 32, 16)), ['qk'], cache)
    assert cache.misses == 6 and cache.hits == 0
    assert stats == window_statistics(seg.encoder, list(iter_windows(img, 64, 32, 16)), ['qk'])
    for mode in ('qq', 'kk'):
        cached = component_query_logits(seg, [img], mode, cache=cache)
        plain = component_query_logits(seg, [img], mode)
        for s in cached:
            assert torch.equal(cached[s][0], plain[s][0])
    assert cache.misses == 6 and cache.hits == 12  # every later pass found its windows


def test_miou_from_areas():
    from clearclip_seg.analysis import AreaAccumulator, miou_from_areas
    acc = AreaAccumulator(3)
    label = torch.tensor([[0, 0, 1, 255]])
    acc.add('k', torch.tensor([[0, 1, 1, 2]]), label)
    m = acc.metrics('k')
    assert m['IoU'][0] == pytest.approx(50.0) and m['IoU'][1] == pytest.approx(50.0) and m['IoU'][2] is None
    assert m['mIoU'] == pytest.approx(50.0) and m['aAcc'] == pytest.approx(200 / 3)
    assert miou_from_areas([0, 0], [0, 0], [0, 0], [0, 0])['mIoU'] is None


def test_analysis_record_and_plots(tmp_path):
    from clearclip_seg.analysis import format_summary, plot_figures, run_analysis
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(root, sizes=((40, 40), (30, 30), (20, 20)))  # one 448 x 448 window each
    out = tmp_path / 'out'
    lines = []
    rec, path = run_analysis(CONFIG, tiny_cfg_options(root, **{'model.templates': 'a_photo_of'}), num_images=2,
                             device='cpu', out_dir=str(out), log=lines.append)
    assert path == str(out / 'decomposition.json') and len(lines) == 2
    assert json.loads((out / 'decomposition.json').read_text()) == json.loads(json.dumps(rec))
    assert rec['kind'] == 'analysis' and rec['complete'] is True and rec['record_version'] == 2
    assert rec['config']['path'] == os.path.relpath(CONFIG, ROOT)
    assert rec['benchmark'] == 'voc21' and rec['dataset']['num_images'] == 3 and len(rec['dataset']['classes']) == 21
    assert rec['model']['arch'] == TINY_NAME and rec['model']['pretrained'] is None
    assert rec['model']['precision'] == 'fp32' and rec['model']['prob_thd'] == 0.5
    res = rec['analysis']
    modes = ['qk', 'qq', 'kk', 'vv', 'qq+kk', 'identity']
    assert res['modes'] == modes
    assert res['num_images'] == 2 and res['images'] == [i + '.jpg' for i in ids[:2]]
    for m in modes:
        n = res['norms'][m]
        assert n['x_res'] > 0 and n['x_attn'] > 0 and len(n['per_image']['x_res']) == 2
        assert n['x_res'] == pytest.approx(res['norms']['qk']['x_res'])  # X_res does not depend on the mode
        e = res['entropy'][m]
        assert 0 <= e['mean'] <= 1 and len(e['per_head']) == 4 and len(e['per_image']) == 2
        mi = res['miou'][m]
        assert set(mi) == {'x_res', 'x_attn', 'x_res+x_attn'}
        assert all(v is None or 0 <= v <= 100 for v in mi.values())
        assert mi['x_res'] == res['miou']['qk']['x_res']
        assert len(res['iou_per_class'][m]['x_attn']) == 21
    assert res['entropy']['identity']['mean'] == 0
    assert res['entropy']['qk']['mean'] > 0
    paths = plot_figures(res, str(out), title='tiny', benchmark='voc21')
    assert [os.path.basename(p) for p in paths] == ['norms.png', 'entropy.png', 'miou.png']
    for p in paths:
        assert os.path.getsize(p) > 1000
    summary = format_summary(res).splitlines()
    assert len(summary) == 7 and summary[5].startswith('qq+kk') and 'mIoU sum' in summary[0]


@pytest.mark.slow
def test_analyze_tool_smoke(tmp_path):
    root = tmp_path / 'VOC2012'
    make_voc2012(root, sizes=((20, 20),))
    out = tmp_path / 'out'
    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'analyze_decomposition.py'), CONFIG,
                           '--num-images', '1', '--modes', 'qk,identity', '--skip-miou', '--out', str(out),
                           '--device', 'cpu', '--cfg-options', *[f'{k}={v}' for k, v in tiny_cfg_options(
                               root, **{'model.templates': 'a_photo_of'}).items()]],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'identity' in proc.stdout and f"written: {out / 'decomposition.json'}" in proc.stdout
    assert sorted(os.listdir(out)) == ['decomposition.json', 'entropy.png', 'norms.png']
