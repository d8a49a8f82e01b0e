"""timm-trunk towers (SigLIP-like MAP ViT, EVA02-like and PE-like rotary Eva) against their own
forward and the formulas written out here; the tower factory; tokenizer errors; the backbone table."""
import functools
import json
import os

import pytest
import torch
import torch.nn as nn

from helpers import ROOT, TINY_ARCH

ASSETS = os.path.join(ROOT, 'tests', 'assets')
TIMM_TOWERS = {  # tiny architecture -> (tower kind, prefix tokens)
    'clearclip-tiny-map': ('timm_vit', 0),    # SigLIP layout: no class token, MAP head, q/k norm, layer scale
    'clearclip-tiny-rope': ('timm_eva', 1),   # EVA02 layout: separate q/k/v, rotary, token pooling
    'clearclip-tiny-pe': ('timm_eva', 3),     # PE layout: fused qkv, rotary, class + 2 registers, MAP head
}


@functools.lru_cache(maxsize=None)
def _tower(name, seed=0):
    """(model, visual) with random weights; zero-initialised biases/latents jittered so nothing is trivial.

    Built once per module (no test changes weights)."""
    from clearclip_seg.models.clip_loader import create_clip
    torch.manual_seed(seed)
    model, _ = create_clip(None, arch_file=os.path.join(ASSETS, f'{name}.json'))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.visual.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model, model.visual


def _images(n=2, h=64, w=64, seed=3):
    return torch.randn(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


def _rotate(x, emb):
    """Interleaved rotary embedding written out: pairs (x0, x1) -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
    sin, cos = emb.chunk(2, dim=-1)
    x0, x1 = x[..., 0::2], x[..., 1::2]
    rot = torch.stack([-x1, x0], dim=-1).reshape(x.shape)
    return x * cos + rot * sin


def _manual_qkv(blk, x, rope, npt):
    """q, k, v of a timm block from its weights: projections, q/k norms, rotary on the patch tokens."""
    a = blk.attn
    h = blk.norm1(x)
    B, N, C = h.shape
    if a.qkv is not None:
        bias = a.qkv.bias if a.qkv.bias is not None else (
            torch.cat([a.q_bias, torch.zeros_like(a.q_bias), a.v_bias]) if getattr(a, 'q_bias', None) is not None
            else None)
        qkv = h @ a.qkv.weight.T + (0 if bias is None else bias)
        q, k, v = qkv.reshape(B, N, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
    else:
        q, k, v = ((getattr(a, f'{n}_proj')(h)).reshape(B, N, a.num_heads, -1).transpose(1, 2) for n in 'qkv')
    q, k = a.q_norm(q), a.k_norm(k)
    if rope is not None:
        q = torch.cat([q[:, :, :npt], _rotate(q[:, :, npt:], rope)], dim=2)
        k = torch.cat([k[:, :, :npt], _rotate(k[:, :, npt:], rope)], dim=2)
    return q, k, v


def _manual_last_block(enc, x, mode, residual, ffn, rope):
    blk = enc.trunk.blocks[-1]
    q, k, v = _manual_qkv(blk, x, rope, enc.num_prefix_tokens)
    s = q.shape[-1] ** -0.5

    def sm(a, b):
        return torch.softmax(a @ b.transpose(-1, -2) * s, dim=-1)
    n = x.shape[1]
    weights = {'qk': sm(q, k), 'qq': sm(q, q), 'kk': sm(k, k), 'vv': sm(v, v), 'qq+kk': sm(q, q) + sm(k, k),
               'identity': torch.eye(n).expand(*q.shape[:2], n, n)}[mode]
    o = (weights @ v).transpose(1, 2).reshape(x.shape)
    y = blk.attn.proj(blk.attn.norm(o))
    y = blk.ls1(y) if hasattr(blk, 'ls1') else blk.gamma_1 * y
    if residual:
        y = x + y
    if ffn:
        m = blk.mlp(blk.norm2(y))
        y = y + (blk.ls2(m) if hasattr(blk, 'ls2') else blk.gamma_2 * m)
    return y


@pytest.mark.parametrize('name', list(TIMM_TOWERS))
def test_surgery_off_reproduces_the_tower(name):
    from clearclip_seg.models.towers import TOWER_ENCODERS, tower_kind, wrap_visual
    model, visual = _tower(name)
    kind, npt = TIMM_TOWERS[name]
    assert tower_kind(visual) == kind
    enc = wrap_visual(visual)
    assert type(enc) is TOWER_ENCODERS[kind] and enc.num_prefix_tokens == npt
    x = _images()
    with torch.no_grad():
        patches, pooled = enc(x, return_cls=True, attn='qk', residual=True, ffn=True)
        tokens, grid = enc.last_block_input(x)
        trunk_tokens = visual.trunk.forward_features(x)  # after the trunk's final norm
        torch.testing.assert_close(pooled, model.encode_image(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(visual.trunk.norm(enc.last_block(tokens, 'qk', True, True)), trunk_tokens, rtol=1e-5, atol=1e-5)
        # patch features are the dense projection of the trunk's own last-block patch tokens
        trunk_patches = visual.trunk.forward_intermediates(x, indices=1, output_fmt='NLC',
                                                           intermediates_only=True)[0]
        expected = enc.head(trunk_patches)
    assert patches.shape == (2, 4, 4, enc.embed_dim) and grid == (4, 4) and trunk_patches.shape[1] == 16
    torch.testing.assert_close(patches.flatten(1, 2), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('name', list(TIMM_TOWERS))
@pytest.mark.parametrize('mode', ['qk', 'qq', 'kk', 'vv', 'qq+kk', 'identity'])
def test_each_mode_equals_its_formula_with_rotary(name, mode):
    from clearclip_seg.models.towers import wrap_visual
    _, visual = _tower(name)
    enc = wrap_visual(visual)
    x_in, grid = enc.last_block_input(_images(n=1))
    rope = visual.trunk.rope.get_embed() if getattr(visual.trunk, 'rope', None) is not None else None
    with torch.no_grad():
        for residual, ffn in [(False, False), (True, False), (True, True)]:
            expected = _manual_last_block(enc, x_in, mode, residual, ffn, rope)
            torch.testing.assert_close(enc.last_block(x_in, mode, residual, ffn), expected, rtol=1e-5, atol=1e-5)
        plain_enc = wrap_visual(visual, fused_attn=False)
        plain = plain_enc.last_block(plain_enc.last_block_input(_images(n=1))[0], mode, False, False)
        torch.testing.assert_close(enc.last_block(x_in, mode, False, False), plain, rtol=1e-5, atol=1e-5)
    if rope is not None and mode in ('qk', 'qq', 'kk', 'qq+kk'):  # rotary matters: leaving it out is wrong
        wrong = _manual_last_block(enc, x_in, mode, False, False, None)
        assert (wrong - enc.last_block(x_in, mode, False, False)).abs().max() > 1e-3


def test_rotary_recomputed_for_another_grid():
    """At a 3x5 grid the encoder equals the same trunk built for dynamic sizes (rope rebuilt per shape)."""
    import timm

    from clearclip_seg.models.timm_trunks import register_timm_trunk
    from clearclip_seg.models.towers import wrap_visual
    spec = dict(name='clearclip_tiny_rope_noabs', base='eva02_base_patch16_clip_224',
                kwargs=dict(img_size=64, embed_dim=32, depth=2, num_heads=2, use_abs_pos_emb=False))
    register_timm_trunk(spec)
    torch.manual_seed(0)
    trunk = timm.create_model(spec['name']).eval()
    dynamic = timm.create_model(spec['name'], dynamic_img_size=True).eval()
    dynamic.load_state_dict(trunk.state_dict())
    visual = nn.Module()
    visual.trunk, visual.head = trunk, nn.Sequential()
    enc = wrap_visual(visual)
    x = _images(n=1, h=48, w=80)
    with torch.no_grad():
        tokens, grid = enc.last_block_input(x)
        assert grid == (3, 5)
        torch.testing.assert_close(trunk.norm(enc.last_block(tokens, 'qk', True, True)), dynamic.forward_features(x),
                                   rtol=1e-5, atol=1e-5)
        # and the native grid's cached embedding is the trunk's own
        enc.last_block_input(_images(n=1))
        torch.testing.assert_close(enc.rope(), trunk.rope.get_embed())


def test_map_value_path_equals_direct_computation():
    from clearclip_seg.models.towers import wrap_visual
    _, visual = _tower('clearclip-tiny-map')
    pool = visual.trunk.attn_pool
    enc = wrap_visual(visual)
    t = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        n = visual.trunk.norm(t)
        c = n.shape[-1]
        v = n @ pool.kv.weight[c:].T + pool.kv.bias[c:]          # value half of the key/value projection
        u = v @ pool.proj.weight.T + pool.proj.bias               # the pool's output projection
        full = u + pool.mlp(pool.norm(u))                          # its norm/MLP residual
        torch.testing.assert_close(enc.head(t), full, rtol=1e-5, atol=1e-6)   # no fc_norm/head/proj here
        torch.testing.assert_close(wrap_visual(visual, map_head='proj').head(t), u, rtol=1e-5, atol=1e-6)
        # what the pool itself returns for an image whose tokens all equal one token
        same = n[:, :1].expand(2, 7, c)
        torch.testing.assert_close(pool(same), full[:, 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='model.clip.map_head'):
        wrap_visual(visual, map_head='attn')


def test_pe_dense_head_runs_value_path_then_trunk_head():
    from clearclip_seg.models.towers import wrap_visual
    _, visual = _tower('clearclip-tiny-pe')
    enc = wrap_visual(visual)
    t = torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = visual.trunk.head(enc.map_value(visual.trunk.norm(t)))
        torch.testing.assert_close(enc.head(t), expected)
        assert not torch.allclose(enc.head(t), visual.trunk.head(visual.trunk.norm(t)))


def test_several_prefix_tokens_and_other_grids():
    from clearclip_seg.methods import build_method
    from clearclip_seg.models.towers import wrap_visual
    _, visual = _tower('clearclip-tiny-pe')
    enc = wrap_visual(visual)
    x = _images(n=1, h=96, w=48)
    with torch.no_grad():
        feats = build_method(dict(type='LastBlock')).features(enc, x)
        tokens, grid = enc.last_block_input(x)
        out = enc.head(enc.last_block(tokens))
    assert grid == (6, 3) and tokens.shape[1] == 3 + 18
    torch.testing.assert_close(feats.flatten(1, 2), out[:, 3:])
    # positions: prefix rows kept, patch rows resized as the open_clip ViT's
    from clearclip_seg.models.encoder import interpolate_pos_embed
    pe = visual.trunk.pos_embed[0]
    resized = enc.pos_embed((6, 3))
    torch.testing.assert_close(resized[:3], pe[:3])
    torch.testing.assert_close(resized[3:], interpolate_pos_embed(pe[2:], (4, 4), (6, 3))[1:])
    with pytest.raises(ValueError, match='grid'):
        enc.qkv(tokens[:, :-1])  # token count no longer matches the grid: rotary positions unknown


def test_factory_picks_the_open_clip_encoder_and_rejects_other_towers(tiny_clip):
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    from clearclip_seg.models.timm_encoder import TimmCLIPEncoder
    from clearclip_seg.models.towers import tower_kind, wrap_visual
    model, _ = tiny_clip
    enc = wrap_visual(model.visual, map_head='proj')
    assert type(enc) is DenseCLIPEncoder and tower_kind(model.visual) == 'openclip_vit'
    torch.testing.assert_close(enc.pooled(enc.last_block(enc.last_block_input(_images())[0], 'qk', True, True)),
                               model.encode_image(_images()), rtol=1e-5, atol=1e-5)
    conv = nn.Module()
    conv.trunk, conv.head = nn.Conv2d(3, 8, 3), nn.Sequential()
    with pytest.raises(TypeError, match='Conv2d is not supported'):
        wrap_visual(conv)
    with pytest.raises(TypeError, match='not supported'):
        wrap_visual(nn.Linear(2, 2))
    with pytest.raises(TypeError, match='not an open_clip TimmModel'):
        TimmCLIPEncoder(model.visual)


def test_tiny_trunk_specs_are_checked(tmp_path):
    from clearclip_seg.models.timm_trunks import prepare_arch_file, register_timm_trunk
    with pytest.raises(ValueError, match='not a timm model name'):
        register_timm_trunk(dict(name='clearclip_bad_trunk', base='no_such_model'))
    with pytest.raises(ValueError, match='unknown keys'):
        register_timm_trunk(dict(name='clearclip_bad_trunk', base='vit_tiny_patch16_224', kw={}))
    spec = json.load(open(os.path.join(ASSETS, 'clearclip-tiny-map.json')))
    register_timm_trunk(spec['timm_trunk'])  # same spec again: fine
    with pytest.raises(ValueError, match='different spec'):
        register_timm_trunk(dict(spec['timm_trunk'], kwargs=dict(depth=1)))
    spec['vision_cfg']['timm_model_name'] = 'something_else'
    path = tmp_path / 'clearclip-tiny-mismatch.json'
    path.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match='does not name its timm_trunk'):
        prepare_arch_file(str(path))
    assert prepare_arch_file(TINY_ARCH) == TINY_ARCH  # plain open_clip files pass through


def test_hub_tokenizer_errors_are_one_line(monkeypatch, tmp_path):
    import open_clip

    from clearclip_seg.models.towers import hub_tokenizer_name, load_tokenizer
    assert hub_tokenizer_name('ViT-B-16-SigLIP2') == 'timm/ViT-B-16-SigLIP2'
    assert hub_tokenizer_name('ViT-H-14-worldwide') == 'facebook/xlm-v-base'
    assert hub_tokenizer_name('ViT-B-16') is None and hub_tokenizer_name('EVA02-B-16') is None

    def offline(*a, **k):
        raise OSError('We could not connect to huggingface.co\nmore detail')
    monkeypatch.setattr(open_clip, 'get_tokenizer', offline)
    with pytest.raises(RuntimeError) as e:
        load_tokenizer('ViT-B-16-SigLIP2')
    msg = str(e.value)
    assert '\n' not in msg and 'timm/ViT-B-16-SigLIP2' in msg and 'model.clip.tokenizer=' in msg

    def missing(*a, **k):
        raise ImportError("No module named 'transformers'")
    monkeypatch.setattr(open_clip, 'get_tokenizer', missing)
    with pytest.raises(RuntimeError, match='pip install transformers'):
        load_tokenizer('ViT-B-16-SigLIP2')
    with pytest.raises(FileNotFoundError, match='model.clip.tokenizer'):
        load_tokenizer('ViT-B-16-SigLIP2', tokenizer=str(tmp_path / 'missing'))


def test_backbone_table_names_what_open_clip_lists():
    import open_clip
    import timm

    from clearclip_seg.protocol.backbones import BACKBONE_TABLE, FAMILIES, backbone_mean_std, preprocess_mean_std
    from clearclip_seg.protocol.benchmarks import BACKBONES
    listed = set(open_clip.list_pretrained())
    eva_models = set(timm.list_models(module='eva'))
    for b in BACKBONE_TABLE:
        assert (b.arch, b.pretrained) in listed, b
        assert BACKBONES[b.slug] == (b.arch, b.pretrained, b.title)
        family = FAMILIES[b.family]
        timm_name = open_clip.get_model_config(b.arch)['vision_cfg'].get('timm_model_name')
        kind = 'openclip_vit' if timm_name is None else 'timm_eva' if timm_name in eva_models else 'timm_vit'
        assert family.tower == kind, b
        mean, std = backbone_mean_std(b.slug)
        if b.norm == 'open_clip':
            cfg = open_clip.get_pretrained_cfg(b.arch, b.pretrained)
            assert (mean, std) == (tuple(cfg['mean']), tuple(cfg['std']))
    assert {b.family for b in BACKBONE_TABLE} == set(FAMILIES)
    assert preprocess_mean_std('ViT-B-16-SigLIP2', 'webli') == ((0.5,) * 3, (0.5,) * 3)
    # the paper's rows keep the protocol's CLIP statistics (OpenCLIP L/14's own config says 0.5)
    assert backbone_mean_std('openclip-vit-l14')[0] == (0.48145466, 0.4578275, 0.40821073)


TINY_BY_KIND = {'openclip_vit': ('clearclip-tiny-vit', TINY_ARCH),
                'timm_vit': ('clearclip-tiny-map', os.path.join(ASSETS, 'clearclip-tiny-map.json')),
                'timm_eva': ('clearclip-tiny-pe', os.path.join(ASSETS, 'clearclip-tiny-pe.json'))}


def test_every_backbone_config_builds_with_a_tiny_tower_of_its_kind():
    """Each backbone's ClearCLIP config: open_clip lists its arch/tag, its mean/std are open_clip's,
    and it builds (tiny tower of the same kind swapped in) into the right encoder."""
    import open_clip
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from clearclip_seg import register_all_modules
    from clearclip_seg.models.towers import TOWER_ENCODERS
    from clearclip_seg.protocol.backbones import BACKBONE_TABLE, FAMILIES, backbone_mean_std
    register_all_modules()
    init_default_scope('mmseg')
    listed = set(open_clip.list_pretrained())
    built = {}
    for b in BACKBONE_TABLE:
        cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'clearclip', f'clearclip_{b.slug}_voc21.py'))
        assert (cfg.model.clip.arch, cfg.model.clip.pretrained) in listed
        mean, std = backbone_mean_std(b.slug)
        assert cfg.model.data_preprocessor.mean == pytest.approx([c * 255 for c in mean], abs=1e-3)
        assert cfg.model.data_preprocessor.std == pytest.approx([c * 255 for c in std], abs=1e-3)
        kind = FAMILIES[b.family].tower
        if kind in built:
            continue
        name, path = TINY_BY_KIND[kind]
        cfg.model.clip.update(arch=name, arch_file=path, pretrained=None)
        model = MODELS.build(cfg.model)
        assert type(model.encoder) is TOWER_ENCODERS[kind]
        with torch.no_grad():
            feats = model.extract_feat(_images(n=1))
        assert feats.shape == (1, 4, 4, model.encoder.embed_dim)
        built[kind] = model
    assert set(built) == set(TINY_BY_KIND)


@pytest.mark.parametrize('backbone,kind', [('siglip2-vit-b16', 'timm_vit'), ('pe-vit-b16', 'timm_eva')])
def test_timm_backbone_configs_end_to_end(tmp_path, backbone, kind):
    from clearclip_seg.apis import evaluate
    from clearclip_seg.synthetic import write_benchmark
    from helpers import confusion_miou, tiny_cfg_options
    root = tmp_path / 'VOC2012'
    ids = write_benchmark('voc21', str(root), sizes=((50, 70), (90, 40)), seed=1)
    preds = tmp_path / 'preds'
    name, path = TINY_BY_KIND[kind]
    config = os.path.join(ROOT, 'configs', 'clearclip', f'clearclip_{backbone}_voc21.py')
    rec = evaluate(config, tiny_cfg_options(root, **{'model.clip.arch': name, 'model.clip.arch_file': path,
                                                     'test_evaluator.output_dir': str(preds),
                                                     'model.templates': 'a_photo_of'}),
                   work_dir=str(tmp_path / 'w'))
    pairs = [(os.path.join(preds, i + '.png'), os.path.join(root, 'SegmentationClass', i + '.png')) for i in ids]
    assert rec['metrics']['mIoU'] == pytest.approx(confusion_miou(pairs, 21)[0], abs=1e-6)
    assert rec['dataset']['num_images'] == len(ids)


def test_scoring_softmax_default_and_sigmoid_option():
    import math

    from clearclip_seg.models.scoring import Scorer, classify_scored
    logits = torch.randn(3, 2, 2, generator=torch.Generator().manual_seed(0)) * 0.3
    torch.testing.assert_close(Scorer()(logits), torch.softmax(logits * 50, dim=0))
    torch.testing.assert_close(Scorer('softmax', 50, 7.0)(logits), torch.softmax(logits * 50, dim=0))
    torch.testing.assert_close(Scorer('sigmoid', 10.0, -3.0)(logits), 1 / (1 + torch.exp(-(10 * logits - 3))))
    clip = nn.Module()
    clip.logit_scale = nn.Parameter(torch.tensor(math.log(117.0)))
    clip.logit_bias = nn.Parameter(torch.tensor([-12.5]))
    s = Scorer('sigmoid', 'model', 'model', clip_model=clip)
    assert s.logit_scale == pytest.approx(117.0) and s.logit_bias == -12.5
    clip.logit_bias = None
    assert Scorer('sigmoid', 'model', 'model', clip_model=clip).logit_bias == 0.0
    # synonyms: class probability = max over its queries, then argmax and prob_thd
    q2c = torch.tensor([0, 1, 1])
    probs, labels = classify_scored(logits, s, q2c, 2, prob_thd=0.0)
    p = torch.sigmoid(logits * 117.0 - 12.5)
    torch.testing.assert_close(probs, torch.stack([p[0], torch.maximum(p[1], p[2])]))
    assert torch.equal(labels[0], probs.argmax(0))
    with pytest.raises(ValueError, match='model.scoring'):
        Scorer('tanh')
    with pytest.raises(ValueError, match='model.logit_bias'):
        Scorer('sigmoid', 50, 'auto')


def test_segmentor_fails_at_build_on_a_missing_hub_tokenizer(tmp_path, monkeypatch):
    """A tower whose tokenizer open_clip fetches from the hub: one line at build time, naming the way out."""
    from helpers import tiny_segmentor
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    spec = json.load(open(os.path.join(ASSETS, 'clearclip-tiny-map.json')))
    spec['text_cfg']['hf_tokenizer_name'] = 'timm/clearclip-no-such-tokenizer'
    path = tmp_path / 'clearclip-tiny-map-hubtok.json'
    path.write_text(json.dumps(spec))
    with pytest.raises(RuntimeError) as e:
        tiny_segmentor(clip=dict(arch='clearclip-tiny-map-hubtok', arch_file=str(path), pretrained=None))
    msg = str(e.value)
    assert '\n' not in msg and 'model.clip' in msg
    assert 'pip install transformers' in msg or 'model.clip.tokenizer=' in msg


def test_backbones_suite_lists_every_family():
    from clearclip_seg.protocol.backbones import BACKBONE_INFO, FAMILIES
    from clearclip_seg.protocol.benchmarks import PAPER_ORDER
    from clearclip_seg.suites import suite_runs
    runs = suite_runs('backbones')
    assert {BACKBONE_INFO[r.backbone].family for r in runs} == set(FAMILIES) - {'OpenAI CLIP'}
    assert {r.preset for r in runs} == {'clip', 'clearclip'} and {r.benchmark for r in runs} == set(PAPER_ORDER)
    assert len(runs) == 2 * len(PAPER_ORDER) * len({r.backbone for r in runs})
    assert all(os.path.isfile(os.path.join(ROOT, r.config)) for r in runs)
