"""The decomposition analysis: components, entropy, per-component logits, the tool's JSON."""
import importlib.util
import json
import os
import shutil

import pytest
import torch

from conftest import ROOT, TINY_ARCH, TINY_NAME, make_voc2012

CONFIG = os.path.join('configs', 'clearclip', 'clearclip_vit-b16_voc21.py')


def load_tool(name):
    spec = importlib.util.spec_from_file_location(f'_tool_{name}', os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def images():
    torch.manual_seed(1)
    return torch.randn(2, 3, 48, 64)


@pytest.mark.parametrize('mode', ['qk', 'qq', 'kk', 'vv', 'qq+kk', 'identity'])
def test_res_plus_attn_is_block_output_with_residual_and_no_ffn(tiny_clip, images, mode):
    from clearclip_seg.analysis import decompose_last_block
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    model, _ = tiny_clip
    enc = DenseCLIPEncoder(model.visual, attn=mode, residual=True, ffn=False, fused_attn=False)
    with torch.no_grad():
        parts = decompose_last_block(enc, images)
        own = enc.decompose(images)
    # residual on, FFN off: the block's own output is exactly X_res + X_attn
    torch.testing.assert_close(parts['x_res+x_attn'], own['output'], rtol=0, atol=1e-6)
    torch.testing.assert_close(parts['x_res'] + parts['x_attn'], own['output'], rtol=0, atol=1e-6)
    torch.testing.assert_close(parts['x_res'], own['x_res'])
    torch.testing.assert_close(parts['x_attn'], own['x_attn'], rtol=1e-5, atol=1e-6)
    assert parts['grid'] == (3, 4)


def test_ffn_on_adds_the_ffn_term_to_the_sum(tiny_clip, images):
    """FFN on: output = X_res + X_attn + ls_2(mlp(ln_2(X_res + X_attn))); for qk this is open_clip's block."""
    from clearclip_seg.analysis import decompose_last_block
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    model, _ = tiny_clip
    enc = DenseCLIPEncoder(model.visual, attn='qk', residual=True, ffn=True, fused_attn=False)
    with torch.no_grad():
        parts = decompose_last_block(enc, images)
        output = enc.last_block(parts['x_res'])
        native = model.visual.transformer.resblocks[-1](parts['x_res'])
    assert (output - parts['x_res+x_attn']).abs().max() > 1e-3  # the FFN term is not negligible here
    torch.testing.assert_close(parts['x_res+x_attn'] + parts['ffn'], output, rtol=0, atol=1e-5)
    torch.testing.assert_close(output, native, rtol=1e-5, atol=1e-5)


def test_decompose_does_not_change_the_encoder(tiny_clip, images):
    from clearclip_seg.analysis import decompose_last_block, last_block_settings
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    model, _ = tiny_clip
    enc = DenseCLIPEncoder(model.visual)
    decompose_last_block(enc, images, mode='kk')
    assert (enc.attn_mode, enc.residual, enc.ffn) == ('qq', False, False)
    with pytest.raises(RuntimeError):
        with last_block_settings(enc, attn='vv', residual=True, ffn=True):
            assert (enc.attn_mode, enc.residual, enc.ffn) == ('vv', True, True)
            raise RuntimeError
    assert (enc.attn_mode, enc.residual, enc.ffn) == ('qq', False, False)
    with pytest.raises(ValueError, match='unknown attention mode'):
        decompose_last_block(enc, images, mode='qv')


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
        enc = DenseCLIPEncoder(model.visual, attn=mode)
        with torch.no_grad():
            own = enc.decompose(images)
            amap = attention_map_float64(enc, own['x_res'], mode)
        assert amap.dtype == torch.float64
        torch.testing.assert_close(amap.float(), own['attn_map'], rtol=1e-4, atol=1e-5)
    assert normalized_entropy(amap).abs().max() == 0  # identity


def test_window_statistics(tiny_clip):
    from clearclip_seg.analysis import iter_windows, window_statistics
    from clearclip_seg.models.encoder import DenseCLIPEncoder
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


def tiny_segmentor(**kw):
    from clearclip_seg.models.segmentor import ClearCLIPSegmentor
    torch.manual_seed(0)
    return ClearCLIPSegmentor(clip=dict(arch=TINY_NAME, arch_file=TINY_ARCH, pretrained=None),
                              vocabulary=['sky', 'grass', 'tree, bush'], templates='a_photo_of',
                              text_cache=False, test_cfg=dict(crop_size=(64, 64), stride=(32, 32)),
                              **kw).eval()


def test_component_logits_reuse_the_segmentor_scoring():
    from clearclip_seg.analysis import component_query_logits, last_block_settings
    seg = tiny_segmentor()
    imgs = [torch.randn(3, 70, 100), torch.randn(3, 50, 40)]
    comp = component_query_logits(seg, imgs, 'qq')
    assert set(comp) == {'x_res', 'x_attn', 'x_res+x_attn'}
    # ClearCLIP's features are X_attn of the qq mode
    for a, b in zip(comp['x_attn'], seg.query_logits(imgs)):
        assert a.shape == (4, *b.shape[1:])
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # residual on, FFN off: X_res + X_attn
    comp = component_query_logits(seg, imgs, 'qk', sources=('x_res+x_attn',))
    with last_block_settings(seg.encoder, attn='qk', residual=True, ffn=False):
        ref = seg.query_logits(imgs)
    for a, b in zip(comp['x_res+x_attn'], ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert (seg.encoder.attn_mode, seg.encoder.residual) == ('qq', False)


def test_last_block_input_cache_reuses_windows_exactly():
    from clearclip_seg.analysis import (LastBlockInputCache, component_query_logits, iter_windows,
                                        window_statistics)
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


def benchmark_config(tmp_path):
    """The generated VOC21 ClearCLIP config (written to a scratch tree if not generated yet)."""
    path = os.path.join(ROOT, CONFIG)
    if os.path.isfile(path):
        return path
    make_configs = load_tool('make_configs')
    files = make_configs.expected_files()
    tree = tmp_path / 'cfgtree'
    shutil.copytree(os.path.join(ROOT, 'configs', '_base_'), tree / 'configs' / '_base_')
    for rel in (os.path.join('configs', '_base_', 'datasets', 'voc21.py'), CONFIG):
        os.makedirs(os.path.dirname(tree / rel), exist_ok=True)
        (tree / rel).write_text(files[rel])
    return str(tree / CONFIG)


def test_analyze_tool_json_and_plots(tmp_path, capsys):
    root = tmp_path / 'VOC2012'
    ids = make_voc2012(root, sizes=((40, 40), (30, 30), (20, 20)))  # one 448 x 448 window each
    out = tmp_path / 'out'
    tool = load_tool('analyze_decomposition')
    rc = tool.main([benchmark_config(tmp_path), '--num-images', '2', '--out', str(out), '--device', 'cpu',
                    '--cfg-options', f'model.clip.arch_file={TINY_ARCH}', f'model.clip.arch={TINY_NAME}',
                    'model.clip.pretrained=None', f'test_dataloader.dataset.data_root={root}',
                    'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
                    'model.templates=a_photo_of'])
    assert rc == 0
    res = json.loads((out / 'decomposition.json').read_text())
    modes = ['qk', 'qq', 'kk', 'vv', 'qq+kk', 'identity']
    assert res['modes'] == modes
    assert res['num_images'] == 2 and res['images'] == [i + '.jpg' for i in ids[:2]]
    assert res['benchmark'] == 'voc21' and res['dataset']['size'] == 3 and len(res['dataset']['classes']) == 21
    assert res['model']['arch'] == TINY_NAME and res['model']['pretrained'] is None
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
    for name in ('norms.png', 'entropy.png', 'miou.png'):
        assert (out / name).stat().st_size > 1000
    assert 'qq+kk' in capsys.readouterr().out
