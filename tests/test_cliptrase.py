"""CLIPtrase against plain computations written here, its metric and crop, and the official code's predictions.

The references are written from the method card's formulas (loops, the block
weights read directly, a textbook DBSCAN), not through the module's helpers.
``tests/fixtures/cliptrase/*.npz`` are predictions of the authors' standalone
script on the oracle's tiny weights and images (tests/fixtures/PROVENANCE.md).
"""
import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from clearclip_seg.methods import build_method
from clearclip_seg.methods.cliptrase import (cluster_regions, dbscan, patch_affinity, recalibrated_attention,
                                             region_vote, self_correlation)
from clearclip_seg.models.encoder import DenseCLIPEncoder
from clearclip_seg.protocol.benchmarks import BENCHMARKS
from clearclip_seg.protocol.constants import config_path
from clearclip_seg.protocol.methods import METHOD_CARDS, common_setting
from helpers import ROOT, confusion_miou, tiny_cfg_options

ASSETS = os.path.join(ROOT, 'tests', 'assets')
TINY12 = os.path.join(ASSETS, 'tiny12oa.json')
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')


@pytest.fixture(scope='module')
def clip12():
    from clearclip_seg.models.clip_loader import create_clip
    torch.manual_seed(0)
    model, _ = create_clip(None, arch_file=TINY12)
    return model.eval()


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _scene(size=(224, 224), seed=0):
    """Flat 3 x 4 regions plus noise: random weights then give several clusters and labels."""
    g = torch.Generator().manual_seed(seed)
    regions = F.interpolate(torch.randn(1, 3, 3, 4, generator=g) * 2, size=size, mode='nearest')
    return regions + 0.3 * torch.randn(1, 3, *size, generator=g)


# -- recalibration ---------------------------------------------------------------------
def test_self_correlation_and_attention_equal_plain_loops():
    q, k, v = (_randn(2, 3, 7, 5, seed=s) for s in range(3))
    corr = self_correlation(q, k, v)
    attn = recalibrated_attention(q, k, v)
    s = 5 ** -0.5
    for b in range(2):
        for i in range(7):
            for j in range(7):
                want = sum(F.cosine_similarity(t[b, h, i], t[b, h, j], dim=0) for h in range(3) for t in (q, k, v))
                assert corr[b, i, j].item() == pytest.approx(want.item() / 9, abs=1e-6)
        for h in range(3):
            for i in range(7):
                row = sum(torch.softmax(torch.stack([(t[b, h, i] * s) @ t[b, h, j] for j in range(7)]), 0)
                          for t in (q, k, v))
                assert torch.allclose(attn[b, h, i], row, atol=1e-6)
                assert attn[b, h, i].sum().item() == pytest.approx(3.0, abs=1e-5)   # rows sum to 3
    aff = patch_affinity(corr)
    assert aff.shape == (2, 6, 6)
    want = torch.clamp(corr[:, 1:, 1:] - corr[:, 0, 1:][:, None, :], min=0)
    assert torch.equal(aff, want) and bool((aff >= 0).all())


def _plain_tower(model, x):
    """The card's forward from the block weights: blocks 1..L-1 as CLIP's, S of block L-1, block L recalibrated."""
    vis = model.visual
    t = vis.conv1(x).flatten(2).transpose(1, 2)
    t = torch.cat([vis.class_embedding.expand(t.shape[0], 1, -1), t], dim=1) + vis.positional_embedding
    t = vis.ln_pre(t)
    blocks = vis.transformer.resblocks
    for blk in blocks[:-2]:
        t = t + blk.attn(blk.ln_1(t), blk.ln_1(t), blk.ln_1(t), need_weights=False)[0]
        t = t + blk.mlp(blk.ln_2(t))

    def heads(blk, t):
        q, k, v = F.linear(blk.ln_1(t), blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)
        nh = blk.attn.num_heads
        return [u.reshape(u.shape[0], u.shape[1], nh, -1).transpose(1, 2) for u in (q, k, v)]

    q, k, v = heads(blocks[-2], t)
    n = t.shape[1]
    corr = torch.zeros(t.shape[0], n, n)
    for u in (q, k, v):
        for h in range(u.shape[1]):
            corr += F.cosine_similarity(u[:, h, :, None], u[:, h, None, :], dim=-1)
    corr /= 3 * q.shape[1]
    blk = blocks[-2]
    t = t + blk.attn(blk.ln_1(t), blk.ln_1(t), blk.ln_1(t), need_weights=False)[0]
    t = t + blk.mlp(blk.ln_2(t))
    blk = blocks[-1]
    q, k, v = heads(blk, t)
    s = q.shape[-1] ** -0.5
    a = sum(torch.softmax((u * s) @ u.transpose(-2, -1), dim=-1) for u in (q, k, v))
    o = (a @ v).transpose(1, 2).reshape(t.shape)
    t = t + F.linear(o, blk.attn.out_proj.weight, blk.attn.out_proj.bias)
    t = t + blk.mlp(blk.ln_2(t))
    return vis.ln_post(t) @ vis.proj, corr


def test_recalibrated_tower_equals_the_block_weights(clip12):
    enc = DenseCLIPEncoder(clip12.visual)
    method = build_method(dict(type='CLIPtrase'))
    method.bind(enc)
    x = _scene()
    with torch.no_grad():
        out, corr, grid = method.forward_tokens(enc, x)
        want_out, want_corr = _plain_tower(clip12, x)
    assert grid == (14, 14)
    assert torch.allclose(out, want_out, atol=1e-5, rtol=1e-4)
    assert torch.allclose(corr, want_corr, atol=1e-6)


# -- clustering --------------------------------------------------------------------------
def plain_dbscan(x, eps, min_samples):
    """sklearn's DBSCAN as its ``dbscan_inner`` runs it: index order, a stack, float64 distances."""
    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    neigh = [np.nonzero(np.sqrt(((x - x[i]) ** 2).sum(1)) <= eps)[0] for i in range(n)]
    core = [len(nb) >= min_samples for nb in neigh]
    labels, c = [-1] * n, 0
    for i in range(n):
        if labels[i] != -1 or not core[i]:
            continue
        stack = [i]
        while stack:
            j = stack.pop()
            if labels[j] != -1:
                continue
            labels[j] = c
            if core[j]:
                stack.extend(int(v) for v in neigh[j] if labels[v] == -1)
        c += 1
    return np.array(labels)


def test_dbscan_equals_the_plain_algorithm():
    rng = np.random.default_rng(0)
    found = set()
    for _ in range(60):
        n, d = int(rng.integers(3, 60)), int(rng.integers(1, 12))
        x = (rng.random((n, d)) * rng.uniform(0.5, 3)).astype(np.float32)
        eps, ms = float(rng.uniform(0.2, 1.5)), int(rng.integers(1, 7))
        got = dbscan(torch.from_numpy(x), eps, ms).numpy()
        np.testing.assert_array_equal(got, plain_dbscan(x, eps, ms))
        found.add((got.max() + 1 > 1, bool((got == -1).any())))
    assert found == {(True, True), (True, False), (False, True), (False, False)}  # every regime was met
    try:
        from sklearn.cluster import DBSCAN
    except ImportError:
        return
    x = rng.random((50, 6)).astype(np.float32)
    np.testing.assert_array_equal(dbscan(torch.from_numpy(x), 0.6, 3).numpy(), DBSCAN(eps=0.6, min_samples=3)
                                  .fit_predict(x))


def _plain_median(a, size):
    """Median over size x size windows, borders mirrored with the edge repeated (scipy's 'reflect')."""
    r = size // 2
    p = np.pad(a, r, mode='symmetric')
    return np.array([[np.median(p[i:i + size, j:j + size]) for j in range(a.shape[1])] for i in range(a.shape[0])],
                    dtype=a.dtype)


def test_cluster_regions_and_vote_equal_plain_loops():
    g = torch.Generator().manual_seed(1)
    h, w, size = 4, 5, (32, 40)
    aff = torch.rand(h * w, h * w, generator=g)
    labels = torch.tensor([0, 0, 1, -1, 1, 2, 2, 0, 1, -1, 2, 2, 0, 0, 1, 1, -1, 2, 0, 1])
    regions = cluster_regions(aff, labels, (h, w), size, smooth_ratio=4, median_size=7)
    maps = []
    for c in range(3):
        m = aff[labels == c].mean(0).reshape(1, 1, h, w)
        m = F.interpolate(m, size=(4 * h, 4 * w), mode='bilinear', align_corners=False)[0, 0].numpy()
        m = torch.from_numpy(_plain_median(m, 7))[None, None]
        maps.append(F.interpolate(m, size=size, mode='bilinear', align_corners=False)[0, 0])
    want = torch.stack(maps).argmax(0)
    assert torch.equal(regions, want) and len(regions.unique()) > 1
    assert cluster_regions(aff, torch.full((h * w,), -1), (h, w), size) is None
    pred = torch.randint(0, 4, size, generator=g)
    voted = region_vote(pred, regions, 4)
    for r in regions.unique():
        values, counts = np.unique(pred[regions == r].numpy(), return_counts=True)
        assert bool((voted[regions == r] == int(values[counts.argmax()])).all())   # ties: the smallest label
    tie = region_vote(torch.tensor([[2, 1, 1, 2]]), torch.zeros(1, 4, dtype=torch.long), 3)
    assert tie.tolist() == [[1, 1, 1, 1]]


# -- the method end to end -------------------------------------------------------------
def test_method_votes_classes_end_to_end(clip12):
    enc = DenseCLIPEncoder(clip12.visual)
    query_to_class = [0, 0, 0, 1, 2, 3]          # class 0 has three names (CLIPtrase's background)
    method = build_method(dict(type='CLIPtrase', eps=0.3))
    method.bind(enc)
    method.bind_vocabulary(query_to_class)
    x = torch.cat([_scene(seed=0), _scene(seed=5)])
    text = F.normalize(_randn(6, 64, seed=3), dim=-1)
    with torch.no_grad():
        out = method.patch_logits(enc, x, text)
        tokens, corr, _ = method.forward_tokens(enc, x)
    assert out.shape == (2, 6, 224, 224) and torch.equal(out.sum(1), torch.ones(2, 224, 224))
    assert not bool(out[:, [1, 2]].any())         # a class speaks through its first query only
    for b in range(2):
        feats = F.normalize(tokens[b, 1:], dim=-1)
        logits = F.interpolate((feats @ text.t()).t().reshape(1, 6, 14, 14), size=(224, 224), mode='bilinear',
                               align_corners=False)[0]
        pred = torch.tensor(query_to_class)[logits.argmax(0)]
        aff = torch.clamp(corr[b, 1:, 1:] - corr[b, 0, 1:], min=0)
        labels = torch.from_numpy(plain_dbscan(aff.numpy(), 0.3, 3))
        assert labels.max() >= 1
        regions = cluster_regions(aff, labels, (14, 14), (224, 224))
        want = pred.clone()
        for r in regions.unique():
            values, counts = np.unique(pred[regions == r].numpy(), return_counts=True)
            want[regions == r] = int(values[counts.argmax()])
        got = torch.tensor(query_to_class)[out[b].argmax(0)]
        assert torch.equal(got, want) and len(want.unique()) > 1
    with pytest.raises(ValueError, match='text_head is not supported'):
        method.patch_logits(enc, x[:1], text[:5])


def test_method_options_are_checked():
    with pytest.raises(ValueError, match=r'model.method.eps=0'):
        build_method(dict(type='CLIPtrase', eps=0))
    with pytest.raises(ValueError, match=r'model.method.min_samples=2.5'):
        build_method(dict(type='CLIPtrase', min_samples=2.5))


# -- the metric variant ----------------------------------------------------------------
def _score(samples, **options):
    from clearclip_seg.evaluation.iou_metric import ClearCLIPIoUMetric
    metric = ClearCLIPIoUMetric(**options)
    metric.dataset_meta = dict(classes=('a', 'b', 'c'))
    metric.process({}, [dict(pred_sem_seg=dict(data=torch.tensor([p])), gt_sem_seg=dict(data=torch.tensor([g])))
                        for p, g in samples])
    return metric.compute_metrics(metric.results), metric.details


def test_metric_variant_on_hand_built_maps():
    gt = [[0, 0, 1, 1], [255, 255, 1, 0]]
    pred = [[0, 2, 1, 1], [0, 2, 2, 0]]
    all_ignored = ([[1, 1]], [[255, 255]])
    samples = [(pred, gt), all_ignored]
    # valid pixels: class 0 TP 2, label 3, pred 2; class 1 TP 2, label 3, pred 2; class 2 TP 0, label 0, pred 2
    mm, d = _score(samples)                                          # MMSeg: class 2 counts 0
    assert d['mIoU'] == pytest.approx(100 * (2 / 3 + 2 / 3 + 0) / 3) and mm['mIoU'] == 44.44
    assert d['mAcc'] == pytest.approx(100 * 2 / 3) and mm['aAcc'] == 66.67
    ct, d = _score(samples, iou_eps=0.01, mean_over='label')         # CLIPtrase: class 2 dropped, +0.01
    assert d['mIoU'] == pytest.approx(100 * 2 / 3.01) and ct['mIoU'] == 66.45
    assert d['mAcc'] == pytest.approx(100 * (2 / 3.01 + 2 / 3.01 + 0) / 3) and ct['mAcc'] == 44.3
    assert d['IoU'] == {'a': pytest.approx(100 * 2 / 3.01), 'b': pytest.approx(100 * 2 / 3.01), 'c': None}
    # ignore pixels as class 0: (1,0) is a hit, (1,1) predicted 2; the all-ignore image is skipped
    bg, d = _score(samples, iou_eps=0.01, mean_over='label', ignore_as=0)
    assert d['mIoU'] == pytest.approx(100 * (3 / 5.01 + 2 / 3.01) / 2) and bg['mIoU'] == 63.16
    assert d['area_label'] == [5.0, 3.0, 0.0] and d['area_pred'] == [3.0, 2.0, 3.0] and d['num_images'] == 1
    with pytest.raises(ValueError, match='mean_over'):
        _score(samples, mean_over='gt')


# -- the centre crop -----------------------------------------------------------------------
def test_centre_crop_equals_torchvision_on_pil():
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize
    from clearclip_seg.datasets.transforms import ShortSideCentreCrop
    rng = np.random.default_rng(0)
    for h, w in ((375, 500), (500, 333), (150, 200), (300, 1000), (225, 224), (100, 100), (512, 1024)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        seg = rng.integers(0, 21, (h, w), dtype=np.uint8)
        out = ShortSideCentreCrop(224)(dict(img=img, gt_seg_map=seg, ori_shape=(h, w), img_shape=(h, w)))
        want_img = np.array(CenterCrop(224)(Resize(224, InterpolationMode.BICUBIC)(Image.fromarray(img))))
        want_seg = np.array(CenterCrop(224)(Resize(224, InterpolationMode.NEAREST)(Image.fromarray(seg))))
        np.testing.assert_array_equal(out['img'], want_img)
        np.testing.assert_array_equal(out['gt_seg_map'], want_seg)
        assert out['ori_shape'] == out['img_shape'] == (224, 224)
    untouched = dict(img=img, ori_shape=(h, w))
    assert ShortSideCentreCrop(None)(dict(untouched)) == untouched


# -- generated configs: own and common protocol ------------------------------------------------
def _official_scores(preds, gts, n_class):
    """CLIPtrase's configs/metric.py::scores, restated: one confusion matrix, +0.01, classes with labels."""
    hist = np.zeros((n_class, n_class))
    for p, g in zip(preds, gts):
        m = (g >= 0) & (g < n_class)
        hist += np.bincount(n_class * g[m] + p[m], minlength=n_class ** 2).reshape(n_class, n_class)
    iu = np.diag(hist) / (hist.sum(1) + hist.sum(0) - np.diag(hist) + 0.01)
    return np.nanmean(iu[hist.sum(1) > 0]) * 100


TINY12_OPTIONS = {'model.clip.arch_file': TINY12, 'model.clip.arch': 'tiny12oa', 'model.templates': 'a_photo_of',
                  'model.text_cache': False}


def test_own_protocol_config_end_to_end(tmp_path):
    """VOC21 under the card: centre crop, one-hot votes, void boundaries scored as background."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize
    from clearclip_seg.apis import evaluate
    from clearclip_seg.synthetic import write_benchmark
    b = BENCHMARKS['voc21']
    root = tmp_path / 'data'
    ids = write_benchmark('voc21', str(root), sizes=((60, 90), (120, 70)), seed=2)
    preds = tmp_path / 'preds'
    opts = tiny_cfg_options(root, **TINY12_OPTIONS, **{'test_evaluator.output_dir': str(preds)})
    cfg = os.path.join(ROOT, config_path('cliptrase', 'vit-b16', 'voc21'))
    rec = evaluate(cfg, opts, work_dir=str(tmp_path / 'w'))
    assert rec['model']['method']['type'] == 'CLIPtrase'
    ours, gts = [], []
    for i in ids:
        p = np.array(Image.open(preds / f'{i}.png')).astype(np.int64)
        g = Image.open(os.path.join(root, b.ann_dir, i + b.seg_map_suffix))
        g = np.array(CenterCrop(224)(Resize(224, InterpolationMode.NEAREST)(g))).astype(np.int64)
        assert p.shape == g.shape == (224, 224)
        if (g == 255).all():
            continue
        # the authors' layout: classes 0..19, background 20, void 255 -> background
        ours.append(np.where(p == 0, 20, p - 1))
        gts.append(np.where((g == 0) | (g == 255), 20, g - 1))
    assert rec['metrics']['mIoU'] == pytest.approx(_official_scores(ours, gts, 21), abs=1e-6)


def test_common_protocol_over_the_generated_config(tmp_path):
    from clearclip_seg.apis import evaluate
    from clearclip_seg.synthetic import write_benchmark
    b = BENCHMARKS['voc21']
    root = tmp_path / 'data'
    ids = write_benchmark('voc21', str(root), sizes=((60, 90),), seed=3)
    preds = tmp_path / 'preds'
    common = common_setting(METHOD_CARDS['cliptrase'], 'voc21').cfg_options()
    assert common['test_pipeline.3.size'] is None and common['test_evaluator.mean_over'] == 'union'
    # smaller windows than ClearCLIP's 448/224 keep the test fast; the rest is the common protocol
    opts = tiny_cfg_options(root, **{**common, **TINY12_OPTIONS, 'test_evaluator.output_dir': str(preds),
                                     'model.test_cfg.crop_size': (224, 224), 'model.test_cfg.stride': (112, 112)})
    rec = evaluate(os.path.join(ROOT, config_path('cliptrase', 'vit-b16', 'voc21')), opts,
                   work_dir=str(tmp_path / 'w'))
    pairs = [(preds / f'{i}.png', os.path.join(root, b.ann_dir, i + b.seg_map_suffix)) for i in ids]
    assert np.array(Image.open(pairs[0][0])).shape == (60, 90)        # the whole image, at its own size
    assert rec['metrics']['mIoU'] == pytest.approx(confusion_miou(pairs, 21)[0], abs=1e-6)


def test_common_setting_undoes_the_own_protocol_only_for_cliptrase():
    own = METHOD_CARDS['cliptrase'].setting('voc21')
    assert own.centre_crop == 224 and own.metric == dict(iou_eps=0.01, mean_over='label', ignore_as=0)
    assert METHOD_CARDS['cliptrase'].setting('voc20').method['cls_scale'] is True
    with pytest.raises(ValueError, match='own protocol'):
        own.cfg_options()
    for name, card in METHOD_CARDS.items():
        keys = set(common_setting(card, 'voc21').cfg_options())
        assert ('test_evaluator.iou_eps' in keys) == (name == 'cliptrase'), name


# -- the official code's predictions ---------------------------------------------------------------
ORACLE = os.path.join(FIXTURES, 'oracle')


def _oracle_tiny12oa() -> dict:
    """tiny12oa's fp16 state dict from ``oracle/weights.npz``, token rows it does not keep as zeros
    (as tests/test_methods_oracle.py unpacks it; the official script ran on exactly these weights)."""
    packed = np.load(os.path.join(ORACLE, 'weights.npz'))
    state = {}
    for key in map(str, packed['tiny12oa/keys']):
        if key == 'token_embedding.weight':
            table = np.zeros(tuple(packed[f'tiny12oa/{key}/shape']), dtype=np.float16)
            table[packed[f'tiny12oa/{key}/rows']] = packed[f'tiny12oa/{key}/values']
        else:
            table = packed[f'tiny12oa/{key}']
        state[key] = torch.from_numpy(table)
    return state


CASES = [  # fixture, benchmark, n, eps, min_samples
    ('voc20_224_eps0.7', 'voc20', 224, 0.7, 3),      # the card's values
    ('voc20_224_eps0.3', 'voc20', 224, 0.3, 3),      # smaller radii: several clusters on random weights
    ('voc21_224_eps0.3', 'voc21', 224, 0.3, 3),
    ('voc21_336_eps0.4', 'voc21', 336, 0.4, 7),
]


@pytest.mark.slow
@pytest.mark.parametrize('name,key,n,eps,min_samples', CASES)
def test_predictions_equal_the_official_code(tmp_path, name, key, n, eps, min_samples):
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.registry import DATASETS, METRICS

    from clearclip_seg.apis.config import load_config
    from clearclip_seg.apis.inference import init_segmentor
    expected = np.load(os.path.join(FIXTURES, 'cliptrase', f'{name}.npz'))
    official = json.loads(str(expected['metrics']))
    cfg_path = os.path.join(ROOT, config_path('cliptrase', 'vit-b16', key))
    weights = tmp_path / 'tiny12oa_fp16.pt'
    torch.save(_oracle_tiny12oa(), weights)
    data_root = load_config(cfg_path).test_dataloader.dataset.data_root
    options = {'model.clip.arch': 'tiny12oa', 'model.clip.arch_file': TINY12, 'model.clip.pretrained': str(weights),
               'model.clip.precision': 'fp32', 'model.text_cache': False,
               'model.method.eps': eps, 'model.method.min_samples': min_samples,
               'test_dataloader.dataset.pipeline.3.size': n, 'model.test_cfg.crop_size': (n, n),
               'test_dataloader.dataset.data_root': os.path.join(ORACLE, data_root)}
    model = init_segmentor(cfg_path, device='cpu', cfg_options=options)
    init_default_scope('mmseg')
    dataset = DATASETS.build(model.cfg.test_dataloader.dataset)
    metric = METRICS.build(dict(model.cfg.test_evaluator))
    metric.dataset_meta = dataset.metainfo
    same = total = 0
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = pseudo_collate([dataset[i]])
            out = model.test_step(batch)
            metric.process(batch, [o.to_dict() for o in out])
            got = out[0].pred_sem_seg.data[0].numpy().astype(np.int64)
            ref = expected[f'pred/{os.path.basename(out[0].img_path)}'].astype(np.int64)
            if key == 'voc21':   # the authors' background is the last class, ours class 0
                ref = np.where(ref == 20, 0, ref + 1)
            assert got.shape == ref.shape == (n, n)
            same, total = same + int((got == ref).sum()), total + ref.size
    ours = metric.compute_metrics(metric.results)
    print(f'{name}: pixel agreement {same / total:.6%}; mIoU ours {ours["mIoU"]} official {official["mIoU"]}')
    assert same / total >= 0.9999
    assert math.isclose(ours['mIoU'], official['mIoU'], abs_tol=0.01 + 1e-9)
    assert math.isclose(ours['aAcc'], official['pAcc'], abs_tol=0.01 + 1e-9)


# -- class files and published numbers ----------------------------------------------------------------
# benchmark: (authors' label list, background list or None), tests/fixtures/class_names/cliptrase/
CLASS_LISTS = {'voc21': ('voc21_labels', 'voc21_background'), 'voc20': ('voc20_labels', None),
               'context60': ('pc60_labels', 'pc60_background'), 'context59': ('pc59_labels', None),
               'coco_object': ('coco80_labels', 'coco80_background'), 'coco_stuff164k': ('coco171_labels', None),
               'cityscapes': ('citys19_labels', None), 'ade20k': ('ade150_labels', None)}


@pytest.mark.parametrize('key', list(CLASS_LISTS))
def test_class_files_are_the_authors_lists(key):
    """One query per entry, background names on class 0's line (the authors append them last, as class C)."""
    from clearclip_seg.vocab import load_vocabulary

    def read(name):
        with open(os.path.join(FIXTURES, 'class_names', 'cliptrase', f'{name}.txt')) as f:
            return f.read().split('\n')[:-1]
    labels, background = CLASS_LISTS[key]
    voc = load_vocabulary(METHOD_CARDS['cliptrase'].setting(key).vocabulary)
    names, bg = read(labels), read(background) if background else []
    assert list(voc.queries) == [q.strip() for q in bg + names]      # 'bed ' (ADE20K) embeds as 'bed'
    assert list(voc.query_to_class) == [0] * len(bg) + [i + bool(bg) for i in range(len(names))]
    assert voc.num_classes == BENCHMARKS[key].num_classes
    if key == 'voc21':
        assert len(bg) == 33 and 'beachhill' in bg and bg.count('bed') == 2


def test_published_numbers_typed_from_the_readme():
    from clearclip_seg.protocol.published_methods import find_method_entry
    row224 = find_method_entry('cliptrase', 'vit-b16', 'own', False, dict(eps=0.7, min_samples=3))
    row336 = find_method_entry('cliptrase', 'vit-b16', 'own', False, dict(eps=1.1, min_samples=7))
    assert row224.numbers == {'coco_stuff164k': 22.84, 'voc20': 80.95, 'context59': 33.83, 'ade20k': 16.35,
                              'coco_object': 43.56, 'voc21': 50.88, 'context60': 29.87}
    assert row336.numbers['voc21'] == 53.04 and row336.numbers['ade20k'] == 17.04
    assert 'not comparable' in row224.note and 'cityscapes' not in row224.numbers
