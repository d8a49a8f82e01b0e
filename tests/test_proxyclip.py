"""ProxyCLIP: the proxy attention, the value resize and the whole last block against
the card's formulas written out here; its class-name files; end to end on synthetic data."""
import functools
import os

import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, TINY_PROXY_VFM, reference_class_file

# a tiny proxy ViT: DINO's layout and normalisation (patch 8), random weights, any window size
TINY_VFM = TINY_PROXY_VFM


@functools.lru_cache(maxsize=None)
def _clip():
    from clearclip_seg.models.clip_loader import create_clip
    from helpers import TINY_ARCH
    torch.manual_seed(0)
    return create_clip(None, arch_file=TINY_ARCH)[0]


def _method(**kw):
    from clearclip_seg.methods import build_method
    torch.manual_seed(1)
    m = build_method(dict(type='ProxyCLIP', **{**TINY_VFM, **kw}))
    m.load()
    return m


def test_proxy_attention_equals_the_card_formula():
    from clearclip_seg.methods.proxyclip import proxy_attention
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 5, 3, 4, generator=g)
    for beta, gamma in [(1.2, 3.0), (0.5, 2.0)]:
        out = proxy_attention(feats, beta, gamma)
        for b in range(2):
            phi = feats[b].reshape(5, 12)
            n = 12
            S = torch.empty(n, n)
            for i in range(n):
                for j in range(n):
                    S[i, j] = phi[:, i] @ phi[:, j] / (phi[:, i].norm() * phi[:, j].norm())
            hat = gamma * (S - beta * S.mean())
            masked = hat.clone()
            masked[hat < 0] = float('-inf')
            expected = torch.softmax(masked, dim=-1)
            torch.testing.assert_close(out[b], expected, rtol=1e-5, atol=1e-6)
            if beta == 1.2:
                assert (hat < 0).any() and (out[b][hat < 0] == 0).all()  # the mask is exercised


def test_proxy_attention_in_place_is_bit_identical_to_the_plain_expression():
    from clearclip_seg.methods.proxyclip import proxy_attention
    feats = torch.randn(2, 6, 7, 5, generator=torch.Generator().manual_seed(3))
    phi = F.normalize(feats.flatten(2), dim=1)
    sim = phi.transpose(1, 2) @ phi
    logits = 3.0 * (sim - 1.2 * sim.mean(dim=(1, 2), keepdim=True))
    plain = torch.softmax(logits.masked_fill(logits < 0, float('-inf')), dim=-1)
    assert torch.equal(proxy_attention(feats, 1.2, 3.0), plain)


def test_resized_positions_are_cached_per_grid_and_follow_the_weights():
    from clearclip_seg.methods.proxyclip import load_vfm
    from clearclip_seg.models.vfm_pos_embed import resize_patch_pos_embed
    kw = dict(TINY_VFM['vfm_kwargs'])
    torch.manual_seed(0)
    vfm = load_vfm(TINY_VFM['vfm'], pretrained=False, kwargs=kw, pos_embed_resize='dino_hub')
    tokens = torch.randn(1, 6, 5, kw['embed_dim'])

    def plain(model):   # the rule's resize computed afresh, prefix position kept
        pe = model.pos_embed
        return torch.cat([pe[:, :1], resize_patch_pos_embed(pe[:, 1:], (6, 5), 'dino_hub')], dim=1)

    with torch.no_grad():
        first = vfm._pos_embed(tokens)
        assert torch.equal(vfm._pos_embed(tokens), first)   # the cached grid
        assert torch.equal(first[:, 1:], tokens.reshape(1, 30, -1) + plain(vfm)[:, 1:])
        vfm.pos_embed.mul_(2)   # new weights in place: not the stale cache
        second = vfm._pos_embed(tokens)
    assert torch.equal(second[:, 1:], tokens.reshape(1, 30, -1) + plain(vfm)[:, 1:])
    assert not torch.equal(second, first)


def test_values_resized_to_the_proxy_grid_per_head():
    from clearclip_seg.methods.proxyclip import resize_values
    v = torch.randn(1, 3, 6, 4, generator=torch.Generator().manual_seed(0))  # 2x3 grid, 3 heads, d=4
    out = resize_values(v, (2, 3), (4, 5))
    for h in range(3):
        grid = v[0, h].T.reshape(4, 2, 3)   # channels x rows x columns
        exp = F.interpolate(grid[None], size=(4, 5), mode='bilinear', align_corners=False)[0]
        torch.testing.assert_close(out[0, h], exp.reshape(4, 20).T)


def test_proxy_input_undoes_clip_normalisation():
    m = _method()
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    clip_mean = torch.tensor([122.771, 116.746, 104.094]).view(3, 1, 1)
    clip_std = torch.tensor([68.501, 66.632, 70.323]).view(3, 1, 1)
    rgb = (x[0] * clip_std + clip_mean) / 255
    expected = (rgb - torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(3, 1, 1)
    torch.testing.assert_close(m.proxy_input(x, m.load())[0], expected)


@pytest.mark.parametrize('h,w', [(64, 64), (56, 112)])
def test_last_block_equals_the_card_formula(h, w):
    """Features = ln_post(out_proj(A Ṽ)) proj on the proxy grid, written from the CLIP's weights."""
    from clearclip_seg.models.encoder import interpolate_pos_embed
    from clearclip_seg.models.towers import wrap_visual
    clip = _clip()
    visual = clip.visual
    enc = wrap_visual(visual)
    m = _method()
    x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        feats = m.features(enc, x)
        # proxy features: the tiny ViT's normed last-block patch tokens on its 8-pixel grid
        vfm = m.load()
        tokens = vfm.forward_features(m.proxy_input(x, vfm))[:, 1:]
        I, J = h // 8, w // 8
        phi = tokens[0].T.reshape(-1, I, J)
        phi_n = F.normalize(phi.reshape(phi.shape[0], -1), dim=0)
        S = phi_n.T @ phi_n
        hat = 3.0 * (S - 1.2 * S.mean())
        A = torch.softmax(hat.masked_fill(hat < 0, float('-inf')), dim=-1)
        # CLIP: blocks 1..L-1 on the window cut to 16-pixel patches, then v of ln_1 in the last block
        cx = x[..., :h // 16 * 16, :w // 16 * 16]
        z = visual.conv1(cx).flatten(2).transpose(1, 2)
        gh, gw = h // 16, w // 16
        pos = interpolate_pos_embed(visual.positional_embedding, (4, 4), (gh, gw))  # tested in test_encoder
        z = torch.cat([visual.class_embedding.view(1, 1, -1), z], dim=1) + pos
        z = visual.ln_pre(z)
        for blk in visual.transformer.resblocks[:-1]:
            z = blk(z)
        last = visual.transformer.resblocks[-1]
        C = z.shape[-1]
        heads = last.attn.num_heads
        v = F.linear(last.ln_1(z), last.attn.in_proj_weight[2 * C:], last.attn.in_proj_bias[2 * C:])[0, 1:]
        v = v.T.reshape(C, gh, gw)
        v = F.interpolate(v[None], size=(I, J), mode='bilinear', align_corners=False)[0].reshape(C, -1).T
        o = torch.cat([A @ v[:, k * C // heads:(k + 1) * C // heads] for k in range(heads)], dim=-1)
        expected = (visual.ln_post(last.attn.out_proj(o)) @ visual.proj).reshape(I, J, -1)
    assert (h, w) != (64, 64) or (gh, gw) == (4, 4)
    torch.testing.assert_close(feats[0], expected, rtol=1e-4, atol=1e-5)


def test_options_and_errors():
    from clearclip_seg.methods import build_method
    from clearclip_seg.methods.proxyclip import VFM_PRESETS
    m = build_method(dict(type='ProxyCLIP'))
    assert (m.vfm_model, m.beta, m.gamma, m.window_multiple) == ('vit_base_patch8_224.dino', 1.2, 3.0, 56)
    assert build_method(dict(type='ProxyCLIP', vfm='sam')).vfm_input_size == 1024
    assert set(VFM_PRESETS) == {'dino', 'dinov2', 'sam', 'mae'}
    with pytest.raises(ValueError, match='model.method.gamma'):
        build_method(dict(type='ProxyCLIP', gamma=0))
    with pytest.raises(ValueError, match='not a timm model'):
        build_method(dict(type='ProxyCLIP', vfm='no_such_net')).load()
    with pytest.raises(FileNotFoundError, match='model.method.vfm_checkpoint'):
        build_method(dict(type='ProxyCLIP', vfm_checkpoint='/nonexistent/dino.pth')).load()


def test_checkpoint_file_loads_offline(tmp_path):
    m = _method()
    path = tmp_path / 'proxy.pth'
    torch.save(m.load().state_dict(), path)
    other = _method(vfm_pretrained=True, vfm_checkpoint=str(path))
    for (k, a), (_, b) in zip(m.load().state_dict().items(), other.load().state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


@pytest.mark.parametrize('key', ['voc21', 'voc20', 'context60', 'context59', 'coco_object', 'coco_stuff164k',
                                 'cityscapes', 'ade20k'])
def test_class_name_files_split_on_semicolons(key):
    from clearclip_seg.protocol.benchmarks import BENCHMARKS
    from clearclip_seg.vocab import load_vocabulary
    voc = load_vocabulary(f'proxyclip/{key}.semicolon')
    assert voc.num_classes == BENCHMARKS[key].num_classes
    if key == 'voc21':
        assert voc.query_to_class.count(0) == 26 and voc.classes[:2] == ('sky', 'aeroplane')
    if key == 'coco_object':  # 17 background names; 'bed' is also a class, kept as the official file has it
        assert voc.query_to_class.count(0) == 17 and voc.queries.count('bed') == 2
    with open(reference_class_file('proxyclip', key)) as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    assert list(voc.queries) == [s.strip() for ln in lines for s in ln.split('; ')]


CONFIG = os.path.join(ROOT, 'configs', 'proxyclip', 'proxyclip_vit-b16_voc21.py')


def _tiny_overrides():
    from helpers import TINY_ARCH, TINY_NAME
    return {'model.clip.arch_file': TINY_ARCH, 'model.clip.arch': TINY_NAME, 'model.clip.pretrained': None,
            'model.method.vfm': TINY_VFM['vfm'], 'model.method.vfm_pretrained': False,
            'model.method.vfm_kwargs': TINY_VFM['vfm_kwargs'], 'model.templates': 'a_photo_of'}


def test_windows_are_padded_to_multiples_of_56():
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    from clearclip_seg import register_all_modules
    register_all_modules()
    init_default_scope('mmseg')
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(_tiny_overrides())
    cfg.model.text_cache = False
    model = MODELS.build(cfg.model).eval()
    seen = []
    inner = model.method.patch_logits

    def spy(encoder, x, text):
        seen.append(tuple(x.shape[-2:]))
        out = inner(encoder, x, text)
        seen.append(tuple(out.shape[-2:]))
        return out
    model.method.patch_logits = spy
    with torch.no_grad():
        logits = model.query_logits([torch.randn(3, 100, 130, generator=torch.Generator().manual_seed(0))])
    assert seen == [(112, 168), (14, 21)]           # padded to 56-multiples; logits on the 8-pixel proxy grid
    assert logits[0].shape == (len(model.vocabulary.queries), 100, 130)


def test_proxyclip_config_end_to_end(tmp_path):
    from clearclip_seg.apis import evaluate
    from clearclip_seg.synthetic import write_benchmark
    from helpers import confusion_miou, tiny_cfg_options
    root = tmp_path / 'VOC2012'
    ids = write_benchmark('voc21', str(root), sizes=((50, 70), (40, 60)), seed=1)
    preds = tmp_path / 'preds'
    rec = evaluate(CONFIG, tiny_cfg_options(root, **_tiny_overrides(), **{'test_evaluator.output_dir': str(preds)}),
                   work_dir=str(tmp_path / 'w'))
    pairs = [(os.path.join(preds, i + '.png'), os.path.join(root, 'SegmentationClass', i + '.png')) for i in ids]
    assert rec['metrics']['mIoU'] == pytest.approx(confusion_miou(pairs, 21)[0], abs=1e-6)
    assert rec['model']['prob_thd'] == 0.2 and rec['dataset']['num_images'] == len(ids)
