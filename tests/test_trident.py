"""Trident: each formula against the card written out plainly here (resize, batch-wide proxy
attention, splice, SAM's last attention, the SAM affinity, the refinement's pieces); SAM's image
encoder and prompt path against segment-anything's own code on the same random weights; end to
end on a tiny CLIP + tiny DINO + tiny SAM; a generated config on synthetic data (own and common
protocol)."""
import functools
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers import ROOT, TINY_ARCH, TINY_NAME, TINY_TRIDENT_SAM

# tiny random DINO-layout ViT (patch 16) and tiny SAM (1024 input, patch 16, global last block)
TINY_DINO = dict(vfm='vit_small_patch16_224.dino', vfm_pretrained=False,
                 vfm_kwargs=dict(img_size=64, embed_dim=32, depth=1, num_heads=2))
TINY_SAM = TINY_TRIDENT_SAM
SAM_KW = TINY_SAM['sam_kwargs']
CONFIG = os.path.join(ROOT, 'configs', 'trident', 'trident_vit-b16_voc21.py')


def _method(**kw):
    from clearclip_seg.methods import build_method
    torch.manual_seed(1)
    m = build_method(dict(type='Trident', **{**TINY_DINO, **TINY_SAM, **kw}))
    m.load()
    return m


@functools.lru_cache(maxsize=None)
def _sam():
    return _method()._sam


# -- formulas -------------------------------------------------------------------------------
def test_clip_resize_shape():
    from clearclip_seg.methods.trident import clip_resize_shape
    assert clip_resize_shape(448, 597, 16, 336) == (464, 608)     # VOC 500x375 after the 448 resize (card)
    assert clip_resize_shape(448, 608, 16, 336) == (448, 608)     # already patch multiples: unchanged
    assert clip_resize_shape(100, 130, 16, 336) == (336, 336)     # raised to the crop
    assert clip_resize_shape(336, 500, 14, 336) == (350, 504)     # H/14: L' = 504, int(336 * 504 / 500) = 338 -> 350
    assert clip_resize_shape(340, 500, 14, 336) == (350, 504)


def test_batch_proxy_attention_uses_one_mean_over_all_windows():
    from clearclip_seg.methods.trident import batch_proxy_attention
    feats = torch.randn(3, 5, 2, 3, generator=torch.Generator().manual_seed(0))
    out = batch_proxy_attention(feats, 1.2, 3.0)
    S = []
    for b in range(3):
        phi = feats[b].reshape(5, 6)
        S.append(torch.stack([torch.stack([phi[:, i] @ phi[:, j] / (phi[:, i].norm() * phi[:, j].norm())
                                           for j in range(6)]) for i in range(6)]))
    m = torch.stack(S).mean()
    for b in range(3):
        hat = (S[b] - m * 1.2) * 3.0
        expected = torch.softmax(hat.masked_fill(hat < 0, float('-inf')), dim=-1)
        torch.testing.assert_close(out[b], expected, rtol=1e-5, atol=1e-6)
    assert (out == 0).any()


def test_splice_averages_overlapping_windows():
    from clearclip_seg.methods.trident import splice
    maps = torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(0))
    cells = [(0, 3, 0, 3), (0, 3, 2, 5), (1, 4, 2, 5), (1, 4, 0, 3)]   # every cell covered 1, 2 or 4 times
    out = splice(maps, cells, (4, 5))
    for c in range(2):
        for y in range(4):
            for x in range(5):
                vals = [maps[k, c, y - y1, x - x1] for k, (y1, y2, x1, x2) in enumerate(cells)
                        if y1 <= y < y2 and x1 <= x < x2]
                assert out[c, y, x] == pytest.approx(float(sum(vals) / len(vals)), abs=1e-6)


def _official_sam_sim(v, attn, cos_fac, refine_neg_cos):
    """get_sam_sim written out with full tensors: v (heads, N, d), attn (heads, N, N) -> (N, N)."""
    v = F.normalize(v, dim=-1)
    sim = torch.einsum('hmc,hnc->hmn', v, v)
    theta = cos_fac * sim.mean(dim=0, keepdim=True).mean(dim=-1, keepdim=True)
    if not refine_neg_cos:
        theta = torch.where(theta < 0.0, torch.tensor(0.6), theta)
    theta = torch.where(theta > 0.9, torch.tensor(0.9), theta)
    refined = torch.where(sim > theta, attn, torch.zeros_like(attn)).mean(dim=0)
    return refined / refined.sum(dim=-1, keepdim=True)


@pytest.mark.parametrize('cos_fac,neg', [(1.2, True), (0.0, True), (3.0, False), (-1.0, False), (50.0, True)])
def test_sam_affinity_equals_get_sam_sim(cos_fac, neg):
    from clearclip_seg.methods.trident_sam import sam_affinity
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 20, 4, generator=g)
    attn = torch.softmax(torch.randn(3, 20, 20, generator=g), dim=-1)[:, :, :20]
    out = sam_affinity(attn, v, cos_fac, neg)
    torch.testing.assert_close(out, _official_sam_sim(v, attn, cos_fac, neg), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.sum(-1), torch.ones(20))


@pytest.mark.slow   # SAM at 1024 x 1024
def test_sam_last_attention_and_features_equal_timm():
    """Per-head attention cut to the valid grid, V, and the encoder output equal timm's SAM forward."""
    from timm.models.vision_transformer_sam import get_decomposed_rel_pos_bias

    from clearclip_seg.methods.trident_sam import sam_encode
    sam = _sam()
    x = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        P, V, grid, feats = sam_encode(sam, x, (300, 1024), need_features=True)
        torch.testing.assert_close(feats, sam.forward_features(x), rtol=1e-4, atol=1e-4)
        t = sam.patch_embed(x) + sam.pos_embed
        t = sam.blocks[0](t)
        last = sam.blocks[1]
        y = last.norm1(t).reshape(1, 4096, -1)
        a = last.attn
        qkv = a.qkv(y).reshape(1, 4096, 3, 2, -1).permute(2, 0, 3, 1, 4).reshape(3, 2, 4096, -1)
        q, k, v = qkv.unbind(0)
        bias = get_decomposed_rel_pos_bias(q, a.rel_pos_h, a.rel_pos_w, (64, 64), (64, 64))
        full = torch.softmax((q * a.scale) @ k.transpose(-2, -1) + bias, dim=-1)
    assert grid == (18, 64)
    exp = full.view(2, 64, 64, 64, 64)[:, :18, :64, :18, :64].reshape(2, 18 * 64, 18 * 64)
    torch.testing.assert_close(P, exp, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(V, v.view(2, 64, 64, -1)[:, :18].reshape(2, 18 * 64, -1))


def test_sam_image_geometry():
    from clearclip_seg.methods.trident_sam import longest_side_shape, sam_input, sam_source_image
    img = np.random.default_rng(0).integers(0, 256, (375, 500, 3), dtype=np.uint8)
    src = sam_source_image(img, 16)
    assert src.shape == (384, 512, 3)
    assert longest_side_shape(384, 512, 1024) == (768, 1024) and longest_side_shape(375, 500, 256) == (192, 256)
    x, size = sam_input(src, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
    assert size == (768, 1024) and x.shape == (1, 3, 1024, 1024)
    assert (x[..., 768:, :] == 0).all()
    from PIL import Image
    ref = np.asarray(Image.fromarray(src).resize((1024, 768), Image.BILINEAR)).astype(np.float32)
    torch.testing.assert_close(x[0, 0, :768], torch.from_numpy((ref[..., 0] - 123.675) / 58.395))


def test_refinement_pieces():
    from scipy import ndimage

    from clearclip_seg.methods.trident_refine import mask_prompt, postprocess_masks, regions, scale_coords
    rng = np.random.default_rng(0)
    mask = rng.random((30, 40)) > 0.55
    prob = torch.from_numpy(rng.random((30, 40)).astype(np.float32))
    masks, boxes, points = regions(mask, prob, 4)
    ref, n = ndimage.label(mask, structure=np.ones((3, 3)))
    expected = [ref == k for k in range(1, n + 1) if (ref == k).sum() >= 4]
    assert len(masks) == len(expected) > 1
    order = sorted(range(len(masks)), key=lambda i: masks[i].argmax())
    for i, e in zip(order, sorted(expected, key=lambda e: e.argmax())):
        assert (masks[i] == e).all()
        ys, xs = np.nonzero(e)
        assert boxes[i].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
        flat = int(np.argmax(np.where(e, prob.numpy(), 0)))
        assert points[i].tolist() == [flat % 40, flat // 40]
    # coordinates scaled by get_preprocess_shape(dh, dw, 1024) / (dh, dw): 30 x 40 -> 768 x 1024
    torch.testing.assert_close(scale_coords(torch.tensor([[10.0, 3.0]]), (30, 40)),
                               torch.tensor([[10.0 * 1024 / 40, 3.0 * 768 / 30]]))
    p = mask_prompt(prob, (375, 500), 0.5, 0.005)
    r = F.interpolate(prob[None, None], size=(192, 256), mode='bilinear', align_corners=False)[0]
    assert p.shape == (1, 256, 256) and (p[:, 192:] == 0).all()
    torch.testing.assert_close(p[:, :192], torch.where(r > 0.5, 0.005 * r, torch.zeros(())))
    low = torch.randn(2, 1, 256, 256, generator=torch.Generator().manual_seed(0))
    up = F.interpolate(low, (1024, 1024), mode='bilinear', align_corners=False)[..., :768, :1024]
    torch.testing.assert_close(postprocess_masks(low, (768, 1024), (384, 512)),
                               F.interpolate(up, (384, 512), mode='bilinear', align_corners=False))


# -- against segment-anything's own code (same random weights) -------------------------------
def _official_sam(sam, decoder):
    """segment-anything's Sam with the tiny timm SAM's image-encoder weights and our prompt/mask decoder."""
    sa = pytest.importorskip('segment_anything')
    from functools import partial

    from segment_anything.modeling import ImageEncoderViT, Sam
    enc = ImageEncoderViT(depth=2, embed_dim=64, img_size=1024, mlp_ratio=4,
                          norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=16,
                          qkv_bias=True, use_rel_pos=True, global_attn_indexes=[1], window_size=14, out_chans=256)
    state = {k.replace('mlp.fc', 'mlp.lin'): v for k, v in sam.state_dict().items() if not k.startswith('head')}
    enc.load_state_dict(state, strict=True)
    model = Sam(enc, decoder['prompt_encoder'], decoder['mask_decoder']).eval()
    return sa.SamPredictor(model)


@pytest.mark.slow   # SAM at 1024 x 1024
def test_image_encoder_and_refinement_equal_segment_anything():
    """Features = SamPredictor.set_image's; refined labels = the card's steps run on SamPredictor.predict_torch."""
    from scipy import ndimage

    from clearclip_seg.methods.trident_refine import build_decoder, refine
    from clearclip_seg.methods.trident_sam import sam_encode, sam_input, sam_norm, sam_source_image
    sam = _sam()
    decoder = build_decoder(seed=0)
    predictor = _official_sam(sam, decoder)
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    src = sam_source_image(img, 16)                   # 64 x 80
    with torch.no_grad():
        predictor.set_image(src)
        x, size = sam_input(src, *sam_norm(sam))
        _, _, _, feats = sam_encode(sam, x, size, need_features=True)
    assert size == tuple(predictor.input_size)
    torch.testing.assert_close(feats, predictor.features, rtol=1e-4, atol=1e-4)

    C, H, W = 3, 50, 70
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(C, H, W)).astype(np.float32)) * 3, dim=0)
    probs = F.avg_pool2d(probs[None], 9, 1, 4, count_include_pad=False)[0]   # smooth: sizeable regions
    labels = probs.argmax(0, keepdim=True)
    thr, area, coff, iou_thr = 0.3, 6, 0.005, -100.0
    with torch.no_grad():
        out = refine(labels, probs, decoder, feats, size, src.shape[:2], (H, W), thr, area, coff, iou_thr)
        # the card's steps, prompting through segment-anything's predictor
        dh, dw = H // 2, W // 2
        lab_d = F.interpolate(labels[None].float(), (dh, dw), mode='nearest')[0].long()
        p_d = F.interpolate(probs[None], (dh, dw), mode='bilinear', align_corners=False)[0]
        lab_d[p_d.max(0, keepdim=True)[0] < thr] = C
        value = torch.zeros(C, H, W)
        used = 0
        for c in range(C):
            if p_d[c].max() < thr:
                continue
            ref, n = ndimage.label((lab_d[0] == c).numpy(), structure=np.ones((3, 3)))
            comps = [ref == k for k in range(1, n + 1) if (ref == k).sum() >= area]
            if not comps:
                continue
            pts, bxs = [], []
            for e in comps:
                flat = int(torch.argmax(p_d[c] * torch.from_numpy(e).float()))
                pts.append([flat % dw, flat // dw])
                ys, xs = np.nonzero(e)
                bxs.append([xs.min(), ys.min(), xs.max(), ys.max()])
            t = predictor.transform
            pts = t.apply_coords_torch(torch.tensor(pts), [dh, dw]).unsqueeze(1)
            bxs = t.apply_boxes_torch(torch.tensor(bxs), [dh, dw]).float()
            nh, nw = t.get_preprocess_shape(H, W, 256)
            r = F.interpolate(p_d[c][None, None], [nh, nw], mode='bilinear', align_corners=False)[0]
            r = F.pad(r, (0, 256 - nw, 0, 256 - nh))
            r = torch.where(r > thr, coff * r, torch.zeros(()))
            masks, iou, low = predictor.predict_torch(pts.float(), torch.ones(len(comps), 1), boxes=bxs,
                                                      mask_input=r, multimask_output=False)
            logits = predictor.model.postprocess_masks(low, predictor.input_size, predictor.original_size)
            logits = F.interpolate(logits, (H, W), mode='bilinear', align_corners=False)
            value[c] = ((logits[:, 0].sigmoid() * probs[c]).max(0)[0] * (logits[:, 0] > 0).any(0))
            used += 1
        expected = torch.where(value.sum(0, keepdim=True) == 0, labels, value.argmax(0, keepdim=True))
    assert used >= 2
    assert torch.equal(out, expected)
    assert not torch.equal(out, labels)   # the refinement changed something


# -- end to end ---------------------------------------------------------------------------------
def _segmentor(**method):
    from helpers import tiny_segmentor
    return tiny_segmentor(method=dict(type='Trident', **{**TINY_DINO, **TINY_SAM, **method}), logit_scale=40.0,
                          test_cfg=dict(crop_size=(64, 64), stride=(48, 48)))


def _reference_logits(seg, image, img, cos_fac, refine_neg_cos, ori):
    """The card's pipeline written out with full tensors (official get_sam_sim), CLIP/DINO through the stages."""
    from timm.models.vision_transformer_sam import get_decomposed_rel_pos_bias

    from clearclip_seg.methods.proxyclip import resize_values
    from clearclip_seg.methods.trident_sam import sam_input, sam_norm, sam_source_image
    m, enc = seg.method, seg.encoder
    sam = m._sam
    # SAM on the image rounded up to 16, long side 1024
    x, (ih, iw) = sam_input(sam_source_image(img, 16), *sam_norm(sam))
    t = sam.blocks[0](sam.patch_embed(x) + sam.pos_embed)
    a = sam.blocks[1].attn
    y = sam.blocks[1].norm1(t).reshape(1, 4096, -1)
    q, k, v = a.qkv(y).reshape(1, 4096, 3, 2, -1).permute(2, 0, 3, 1, 4).reshape(3, 2, 4096, -1).unbind(0)
    bias = get_decomposed_rel_pos_bias(q, a.rel_pos_h, a.rel_pos_w, (64, 64), (64, 64))
    P = torch.softmax((q * a.scale) @ k.transpose(-2, -1) + bias, dim=-1)
    hs, ws = ih // 16, iw // 16
    P = P.view(2, 64, 64, 64, 64)[:, :hs, :ws, :hs, :ws].reshape(2, hs * ws, hs * ws)
    V = v.view(2, 64, 64, -1)[:, :hs, :ws].reshape(2, hs * ws, -1)
    Wt = _official_sam_sim(V, P, cos_fac, refine_neg_cos)
    # CLIP windows (the image is 96 x 128: patch multiples, unchanged), DINO, proxy attention, splice
    X = image[None]
    boxes = [(y1, y1 + 64, x1, x1 + 64) for y1 in (0, 32) for x1 in (0, 48, 64)]
    crops = torch.cat([X[..., a_:b, c:d] for a_, b, c, d in boxes])
    vf = m.load()
    tok = vf.forward_features(m.proxy_input(crops, vf))[:, 1:]
    phi = F.normalize(tok.transpose(1, 2), dim=1)          # (B, C, 16)
    S = phi.transpose(1, 2) @ phi
    hat = (S - S.mean() * 1.2) * 3.0
    A = torch.softmax(hat.masked_fill(hat < 0, float('-inf')), dim=-1)
    tokens, grid = enc.last_block_input(crops)
    vv = resize_values(enc.qkv(tokens, ('v',))['v'][:, :, 1:], grid, (4, 4))
    out = enc.project_heads(A[:, None] @ vv).transpose(1, 2).reshape(len(boxes), -1, 4, 4)
    acc, cnt = torch.zeros(out.shape[1], 6, 8), torch.zeros(1, 6, 8)
    for o, (y1, y2, x1, x2) in zip(out, boxes):
        acc[:, y1 // 16:y2 // 16, x1 // 16:x2 // 16] += o
        cnt[:, y1 // 16:y2 // 16, x1 // 16:x2 // 16] += 1
    D = F.interpolate((acc / cnt)[None], size=(hs, ws), mode='bilinear', align_corners=False)[0]
    Y = Wt @ D.flatten(1).T
    f = F.normalize(enc.head(Y[None])[0], dim=-1)
    logits = (f @ seg.build_text_classifier().T).T.reshape(-1, hs, ws)
    return F.interpolate(logits[None], size=ori, mode='bilinear', align_corners=False)[0]


@pytest.mark.slow
@pytest.mark.parametrize('cos_fac,neg', [(1.2, True), (0.0, True)])   # (3.0, False): test_sam_affinity_*
def test_image_logits_equal_the_card_pipeline(tmp_path, cos_fac, neg):
    import cv2
    seg = _segmentor(cos_fac=cos_fac, refine_neg_cos=neg, sam_refine=False)
    img = np.random.default_rng(2).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    path = str(tmp_path / 'a.png')
    cv2.imwrite(path, img[..., ::-1])
    image = torch.randn(3, 96, 128, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = seg._image_logits(image, dict(img_path=path, ori_shape=(40, 56)))   # on SAM's grid (48 x 64)
        assert got.shape[-2:] == (48, 64)
        got = F.interpolate(got[None], size=(40, 56), mode='bilinear', align_corners=False)[0]
        exp = _reference_logits(seg, image, img, cos_fac, neg, (40, 56))
    torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-5)


def test_options_and_errors(tmp_path):
    from clearclip_seg.methods import build_method
    m = build_method(dict(type='Trident'))
    assert (m.vfm_model, m.pos_embed_resize, m.sam, m.sam_refine, m.sam_iou_thresh, m.coarse_thresh,
            m.minimal_area, m.sam_mask_coff, m.cos_fac, m.image_level) == (
        'vit_base_patch16_224.dino', 'dino_hub', 'samvit_base_patch16', True, 0.8, 0.2, 225, 0.005, 1.2, True)
    missing = r"no.pth' \(model.method.sam_checkpoint\) not found: download sam_vit_b_01ec64.pth"
    with pytest.raises(FileNotFoundError, match=missing):
        build_method(dict(type='Trident', **TINY_DINO, sam_checkpoint=str(tmp_path / 'no.pth'))).load()
    with pytest.raises(FileNotFoundError, match='sam_checkpoint'):
        from clearclip_seg.methods.trident_refine import load_decoder
        load_decoder(None, True)
    with pytest.raises(TypeError, match='whole images'):
        m.patch_logits(None, None, None)


def test_sam_checkpoint_file_loads_both_halves(tmp_path):
    """One SAM-format checkpoint (image_encoder.*, prompt_encoder.*, mask_decoder.*) feeds timm and the decoder."""
    from clearclip_seg.methods.trident_refine import build_decoder, load_decoder
    sam, dec = _sam(), build_decoder(seed=0)
    state = {'image_encoder.' + k.replace('mlp.fc', 'mlp.lin'): v for k, v in sam.state_dict().items()
             if not k.startswith('head')}
    state.update(dec.state_dict())
    path = tmp_path / 'sam_tiny.pth'
    torch.save(state, path)
    m = _method(sam_pretrained=True, sam_checkpoint=str(path))
    for k, v in sam.state_dict().items():
        if not k.startswith('head'):
            torch.testing.assert_close(m._sam.state_dict()[k], v, msg=k)
    loaded = load_decoder(str(path), True)
    for k, v in dec.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, msg=k)


def _tiny_overrides(**extra):
    return {'model.clip.arch_file': TINY_ARCH, 'model.clip.arch': TINY_NAME, 'model.clip.pretrained': None,
            'model.method.vfm': TINY_DINO['vfm'], 'model.method.vfm_pretrained': False,
            'model.method.vfm_kwargs': TINY_DINO['vfm_kwargs'], 'model.method.sam_pretrained': False,
            'model.method.sam_kwargs': SAM_KW, 'model.templates': 'a_photo_of',
            'model.method.minimal_area': 4, **extra}


@pytest.mark.slow
@pytest.mark.parametrize('protocol', ['own', 'common'])
def test_trident_config_end_to_end(tmp_path, protocol):
    from clearclip_seg.apis import evaluate
    from clearclip_seg.protocol.methods import METHOD_CARDS, common_setting
    from clearclip_seg.synthetic import write_benchmark
    from helpers import confusion_miou, tiny_cfg_options
    root = tmp_path / 'VOC2012'
    ids = write_benchmark('voc21', str(root), sizes=((50, 70), (40, 60)), seed=1)
    preds = tmp_path / 'preds'
    extra = {} if protocol == 'own' else common_setting(METHOD_CARDS['trident'], 'voc21').cfg_options()
    extra = {k: v for k, v in extra.items() if k not in ('model.method', 'model.last_block')}
    opts = tiny_cfg_options(root, **_tiny_overrides(**extra), **{'test_evaluator.output_dir': str(preds)})
    rec = evaluate(CONFIG, opts, work_dir=str(tmp_path / 'w'))
    pairs = [(os.path.join(preds, i + '.png'), os.path.join(root, 'SegmentationClass', i + '.png')) for i in ids]
    assert rec['metrics']['mIoU'] == pytest.approx(confusion_miou(pairs, 21)[0], abs=1e-6)
    assert rec['dataset']['num_images'] == len(ids)
    from clearclip_seg.protocol.benchmarks import BENCHMARKS
    assert rec['model']['prob_thd'] == (0.2 if protocol == 'own' else BENCHMARKS['voc21'].prob_thd)


# -- the official code's outputs (tests/fixtures/trident, PROVENANCE.md) -------------------------
OFFICIAL = os.path.join(ROOT, 'tests', 'fixtures', 'trident', 'official.npz')


@pytest.mark.slow   # SAM at 1024 x 1024
def test_affinity_and_refinement_match_the_official_code():
    """SAM affinity W (official get_sam_sim on the vendored encoder's last_attn / last_v) and refined
    labels (official sam_refinement through the vendored SamPredictor), same tiny random SAM."""
    from clearclip_seg.methods.trident_refine import build_decoder, refine
    from clearclip_seg.methods.trident_sam import sam_affinity, sam_encode, sam_input, sam_norm, sam_source_image
    ref = np.load(OFFICIAL)
    sam = _sam()
    img = np.random.default_rng(7).integers(0, 256, (8, 200, 3), dtype=np.uint8)
    with torch.no_grad():
        x, size = sam_input(sam_source_image(img, 16), *sam_norm(sam))
        P, V, grid, _ = sam_encode(sam, x, size)
    assert grid == tuple(ref['W_grid'])
    for cos_fac, neg in [(1.2, True), (3.0, False)]:
        W = sam_affinity(P, V, cos_fac, neg).numpy()
        torch.testing.assert_close(torch.from_numpy(W), torch.from_numpy(ref[f'W_{cos_fac}_{int(neg)}']),
                                   rtol=1e-4, atol=1e-6)
    img = np.random.default_rng(1).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    rng = np.random.default_rng(1)
    rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(3, 50, 70)).astype(np.float32)) * 3, dim=0)
    probs = F.avg_pool2d(probs[None], 9, 1, 4, count_include_pad=False)[0]
    labels = probs.argmax(0, keepdim=True)
    assert (labels.numpy() == ref['pred']).all()
    src = sam_source_image(img, 16)
    with torch.no_grad():
        x, size = sam_input(src, *sam_norm(sam))
        feats = sam_encode(sam, x, size, need_features=True)[3]
        decoder = build_decoder(seed=0)
        for thr, area, iou in [(0.3, 6, -100.0), (0.3, 6, 0.0), (0.0, 6, -100.0)]:
            out = refine(labels, probs, decoder, feats, size, src.shape[:2], (50, 70), thr, area, 0.005, iou)
            expected = ref[f'refined_{thr}_{area}_{iou}']
            assert (out.numpy() == expected).mean() >= 0.9999
            assert (expected != ref['pred']).sum() > 500     # the refinement changed many labels


@pytest.mark.slow   # SAM at 1024 x 1024, twice
def test_cityscapes_halves():
    """sam_split_halves: SAM on the left/right halves of the rounded image, the spliced map cut at its
    middle column, each half aggregated on its own SAM grid (official get_sam_sim), concatenated."""
    import cv2

    from clearclip_seg.methods.trident import aggregate
    from clearclip_seg.methods.trident_sam import sam_encode, sam_input, sam_norm, sam_source_image
    seg = _segmentor(cos_fac=3.0, refine_neg_cos=False, sam_split_halves=True, sam_refine=False)
    m = seg.method
    img = np.random.default_rng(4).integers(0, 256, (30, 100, 3), dtype=np.uint8)   # rounded: 32 x 112
    image = torch.randn(3, 64, 208, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        got = seg._image_logits(image, dict(ori_shape=(30, 100), img_path=_write(img)))
        src = cv2.resize(img, (112, 32))
        D = m.spliced_features(seg.encoder, image, (64, 64), (48, 48))
        assert D.shape[-2:] == (4, 13)
        halves = []
        for part, d in ((src[:, :56], D[..., :6]), (src[:, 56:], D[..., 6:])):
            x, size = sam_input(np.ascontiguousarray(part), *sam_norm(m._sam))
            P, V, grid, _ = sam_encode(m._sam, x, size)
            halves.append(aggregate(_official_sam_sim(V, P, 3.0, False), d, grid))
        y = torch.cat(halves, dim=1)
        f = F.normalize(seg.encoder.head(y.reshape(1, -1, y.shape[-1]))[0], dim=-1)
        exp = (f @ seg.build_text_classifier().T).T.reshape(-1, y.shape[0], y.shape[1])
    assert sam_source_image(img, 16).shape[:2] == (32, 112) and got.shape[-2:] == (36, 128)
    torch.testing.assert_close(got, exp, rtol=1e-4, atol=1e-5)


def _write(img):
    import tempfile

    import cv2
    path = os.path.join(tempfile.mkdtemp(), 'img.png')
    cv2.imwrite(path, img[..., ::-1])
    return path


@pytest.mark.parametrize('halves', [False, True])
def test_splice_and_aggregation_match_the_official_guidance_attn(halves):
    """Official guidance_attn (fixture) on seeded random window outputs: 2 x 3 windows of 3 x 3 tokens
    on a 5 x 7 grid, SAM grid 4 x 6 (or two 4 x 3 halves, the spliced map cut at column 3)."""
    from clearclip_seg.methods.trident import aggregate, splice
    from clearclip_seg.methods.trident_sam import sam_affinity
    shapes = [(4, 3), (4, 3)] if halves else [(4, 6)]
    g = torch.Generator().manual_seed(12 if halves else 11)
    x = torch.randn(9, 6, 8, generator=g)
    attn = [torch.rand(1, 2, h * w, h * w, generator=g) for h, w in shapes]
    vals = [torch.randn(1, 2, h, w, 3, generator=g) for h, w in shapes]
    maps = x.permute(1, 2, 0).reshape(6, 8, 3, 3)
    cells = [(y, y + 3, c, c + 3) for y in (0, 2) for c in (0, 2, 4)]
    spliced = splice(maps, cells, (5, 7))
    pieces = [spliced[..., :3], spliced[..., 3:]] if halves else [spliced]
    y = torch.cat([aggregate(sam_affinity(a[0], v[0].flatten(1, 2), 1.2, True), d, s)
                   for a, v, d, s in zip(attn, vals, pieces, shapes)], dim=1)
    ref = np.load(OFFICIAL)['splice_halves' if halves else 'splice']
    torch.testing.assert_close(y.reshape(24, 8), torch.from_numpy(ref), rtol=1e-5, atol=1e-6)


def test_clip_resize_matches_the_official_preprocess_image():
    from clearclip_seg.methods.trident import clip_resize_shape
    ref = np.load(OFFICIAL)
    for (h, w), out in zip(ref['resize_in'], ref['resize_out']):
        assert clip_resize_shape(int(h), int(w), 16, 336) == tuple(int(v) for v in out)
