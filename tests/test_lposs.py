"""LPOSS / LPOSS+ (methods/lposs.py, models/label_propagation.py, models/image_slide.py).

Formula tests against plain dense references, and a fixture of the authors'
``LPOSS_Infrencer.slide_inference`` run on CPU (tests/fixtures/PROVENANCE.md).
"""
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clearclip_seg.methods import build_method
from clearclip_seg.models.label_propagation import (PixelGraph, conjugate_gradient, knn_inner_product,
                                                    normalized_operator, patch_graph, patch_positions,
                                                    propagate_patches, rgb_to_lab)
from clearclip_seg.protocol import constants
from helpers import ROOT, TINY_LPOSS_VFM, lposs_fixture_setup, tiny_segmentor

FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')


def _dense(op: torch.Tensor) -> np.ndarray:
    return op.to_dense().numpy()


# -- patch graph ---------------------------------------------------------------------
def test_knn_graph_and_operator_equal_a_dense_reference():
    g = torch.Generator().manual_seed(0)
    feats = F.normalize(torch.randn(30, 6, generator=g), dim=1)
    pos = patch_positions(torch.tensor([[0.0, 0.0], [0.0, 32.0], [16.0, 16.0]]), (2, 5), (16, 16))
    k, gamma, sigma, power, alpha = 7, 3.0, 0.01, 1.0, 0.95
    rows, cols, vals = patch_graph(feats, pos, k, gamma, sigma, power)
    got = _dense(normalized_operator(rows, cols, vals, 30, alpha))

    x = feats.double().numpy()
    p = pos.double().numpy()
    s = x @ x.T
    w = np.zeros((30, 30))
    for i in range(30):
        for j in np.argsort(-s[i])[:k]:  # k nearest by inner product, itself included
            d = math.dist(p[i], p[j])
            w[i, j] = max(s[i, j], 0) ** gamma * math.exp(-sigma * d ** power)
    w = w + w.T
    np.fill_diagonal(w, 0)
    deg = w.sum(1)
    deg[deg == 0] = 1
    ref = alpha * w / np.sqrt(deg)[:, None] / np.sqrt(deg)[None, :]
    assert np.abs(got - ref).max() < 1e-6 * np.abs(ref).max()
    assert (got != 0).sum() == (ref != 0).sum()  # same edges: mutual pairs merged, diagonal gone
    # positions: window corner + 8 + 16 * (row, column), window-major then row-major
    assert pos[5].tolist() == [24.0, 8.0] and pos[10].tolist() == [8.0, 40.0]


def test_knn_fallback_matches_faiss_and_caps_k():
    faiss = pytest.importorskip('faiss')
    x = F.normalize(torch.randn(50, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    s_f, i_f = knn_inner_product(x, 10)
    sims = x @ x.T
    vals, order = torch.sort(sims, dim=1, descending=True, stable=True)
    assert torch.equal(i_f, order[:, :10])
    assert torch.allclose(s_f, vals[:, :10], atol=1e-6)
    assert knn_inner_product(x[:5], 400)[1].shape == (5, 5)  # k capped at the number of patches
    del faiss


# -- conjugate gradient ----------------------------------------------------------------
def _plain_cg(A: np.ndarray, b: np.ndarray, iters: int, tol: float) -> np.ndarray:
    """Textbook CG from zero, stopping after ``iters`` steps or when ||r|| <= tol ||b|| (cupyx's loop)."""
    x = np.zeros_like(b)
    if np.linalg.norm(b) == 0:
        return x
    r = b.copy()
    p = None
    rho_prev = None
    for _ in range(iters):
        rho = r @ r
        p = r.copy() if p is None else r + rho / rho_prev * p
        q = A @ p
        a = rho / (p @ q)
        x = x + a * p
        r = r - a * q
        rho_prev = rho
        if np.linalg.norm(r) <= tol * np.linalg.norm(b):
            break
    return x


def test_cg_equals_a_plain_reference_column_by_column():
    g = torch.Generator().manual_seed(2)
    feats = F.normalize(torch.randn(60, 5, generator=g), dim=1)
    pos = patch_positions(torch.zeros(1, 2), (6, 10), (16, 16))
    op = normalized_operator(*patch_graph(feats, pos, 12, 3.0, 0.01, 1.0), 60, 0.95)
    L = np.eye(60) - _dense(op)
    y = torch.randn(60, 4, generator=g)
    y[:, 2] = 0  # a zero column stays zero
    got = propagate_patches(y, op, iters=10, tol=1e-6).numpy()
    ref = np.stack([_plain_cg(L, y[:, q].double().numpy(), 10, 1e-6) for q in range(4)], 1)
    assert np.abs(got - ref).max() < 1e-12
    assert not np.allclose(got, np.linalg.solve(L, y.double().numpy()), atol=1e-4)  # truncated, not closed form
    # scipy's cg follows the same iterates (the authors' cupyx.scipy cg)
    scipy_linalg = pytest.importorskip('scipy.sparse.linalg')
    sp = np.stack([scipy_linalg.cg(L, y[:, q].double().numpy(), rtol=1e-6, maxiter=10)[0] for q in range(4)], 1)
    assert np.abs(got - sp).max() < 1e-10


def test_cg_columns_stop_on_their_own_tolerance():
    b = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]], dtype=torch.float64)  # two columns (dim 0)
    calls = []

    def identity(p):
        calls.append(p.clone())
        return p
    x = conjugate_gradient(identity, b, iters=10, tol=1e-6)
    assert torch.equal(x, b) and len(calls) == 1  # L = I: exact after one step, both columns stop


# -- pixel graph -----------------------------------------------------------------------
def _lab_reference(rgb):
    """kornia 0.7's rgb_to_lab for one pixel, in plain Python floats."""
    lin = [((c + 0.055) / 1.055) ** 2.4 if c > 0.04045 else c / 12.92 for c in rgb]
    m = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
    xyz = [sum(a * c for a, c in zip(row, lin)) / w for row, w in zip(m, (0.95047, 1.0, 1.08883))]
    f = [t ** (1 / 3) if t > 0.008856 else 7.787 * t + 4 / 29 for t in xyz]
    return (116 * f[1] - 16) / 100, 500 * (f[0] - f[1]) / 128, 200 * (f[1] - f[2]) / 128


def test_pixel_graph_equals_a_dense_reference():
    g = torch.Generator().manual_seed(3)
    H, W, neigh, tau, alpha = 7, 9, 2, 0.3, 0.95
    rgb = torch.rand(3, H, W, generator=g)
    rgb[:, :2, :3] = 0.01  # a dark patch (the linear branches of the Lab formula)
    lab = np.array([[_lab_reference(rgb[:, y, x].double().tolist()) for x in range(W)] for y in range(H)])
    assert np.abs(rgb_to_lab(rgb).permute(1, 2, 0).numpy() / [100, 128, 128] - lab).max() < 1e-5
    n = H * W
    w = np.zeros((n, n))
    for y in range(H):
        for x in range(W):
            for yy in range(max(0, y - neigh), min(H, y + neigh + 1)):
                for xx in range(max(0, x - neigh), min(W, x + neigh + 1)):
                    if (yy, xx) != (y, x):
                        w[y * W + x, yy * W + xx] = math.exp(-np.linalg.norm(lab[y, x] - lab[yy, xx]) / tau)
    deg = w.sum(1)
    L = np.eye(n) - alpha * w / np.sqrt(deg)[:, None] / np.sqrt(deg)[None, :]
    graph = PixelGraph(rgb, neigh, tau, alpha)
    assert len(graph.offsets) == (2 * neigh + 1) ** 2 - 1
    p = torch.randn(3, H, W, generator=g, dtype=torch.float64)
    got = graph.matvec(p).reshape(3, n).numpy()
    assert np.abs(got - (L @ p.reshape(3, n).numpy().T).T).max() < 1e-5
    z = graph.propagate(p, iters=10).reshape(3, n).numpy()
    ref = np.stack([_plain_cg(L, p.reshape(3, n)[q].numpy(), 10, 1e-6) for q in range(3)])
    assert np.abs(z - ref).max() < 1e-4 * np.abs(ref).max()


def test_pixel_propagation_in_query_chunks_equals_all_at_once():
    g = torch.Generator().manual_seed(4)
    graph = PixelGraph(torch.rand(3, 20, 24, generator=g), 6, 0.01, 0.95)
    y = torch.randn(5, 20, 24, generator=g)
    whole = graph.propagate(y, chunk=None)
    for chunk in (1, 2, 3):
        assert torch.equal(graph.propagate(y, chunk=chunk), whole)


# -- the method ------------------------------------------------------------------------
def _normalised(rgb):
    mean = torch.tensor(constants.CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(constants.CLIP_STD).view(3, 1, 1)
    return (rgb * 255 - mean) / std


def test_features_equal_the_authors_hooks():
    seg, rgb, _ = lposs_fixture_setup(False)
    m, enc = seg.method, seg.encoder
    x = _normalised(rgb)[None, :, :64, :64]
    vfm = m.load()
    hooked = {}
    handle = vfm.blocks[-1].attn.qkv.register_forward_hook(lambda mod, i, o: hooked.setdefault('qkv', o))
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    with torch.no_grad():
        vfm.forward_features((rgb[None, :, :64, :64] - mean) / std)
        got = m.window_features(enc, x, seg.build_text_classifier())
        lb = build_method(dict(type='LastBlock', attn='identity', residual=True, ffn=True)).features(enc, x)
    handle.remove()
    qkv = hooked['qkv']
    B, N, C3 = qkv.shape
    v = qkv.reshape(B, N, 3, 2, C3 // 6).permute(2, 0, 3, 1, 4)[2].transpose(1, 2)[:, 1:].flatten(-2)
    ref = F.normalize(v, dim=-1).reshape(1, 4, 4, -1)
    assert torch.allclose(got['vfm'], ref, atol=1e-5)
    assert torch.allclose(got['clip'], F.normalize(lb.float(), dim=-1), atol=1e-6)


def test_merges_synonyms_by_max_before_the_resize():
    seg = tiny_segmentor(method=dict(type='LPOSS', k=20, **TINY_LPOSS_VFM), last_block=None,
                         vocabulary=['sky, cat', 'dog', 'person'])
    with torch.no_grad():
        out = seg.query_logits([torch.randn(3, 70, 90, generator=torch.Generator().manual_seed(5))])[0]
    assert out.shape == (4, 70, 90) and torch.equal(out[0], out[1])
    assert torch.equal(out[0], torch.maximum(out[0], out[1]))


@pytest.mark.parametrize('plus,key', [(False, 'lposs'), (True, 'plus')])
def test_official_code_fixture(plus, key):
    """The authors' slide_inference (+ LPOSS+) on the same tiny models: labels and scores."""
    from mmseg.structures import SegDataSample
    ref = np.load(os.path.join(FIXTURES, 'lposs_official.npz'))
    seg, rgb, ori = lposs_fixture_setup(plus)
    assert int((rgb * 255).round().sum()) == int(ref['image_sum'])
    with torch.no_grad():
        logits = seg.query_logits([_normalised(rgb)])[0]
        labels = seg.postprocess_result([logits], [SegDataSample(metainfo=dict(ori_shape=ori))])[0]
    labels = labels.pred_sem_seg.data[0].numpy()
    assert (labels == ref[f'{key}_labels']).mean() >= 0.9999
    assert 0.05 < (labels == 0).mean() < 0.95  # both classes present: the check can fail
    scores = F.interpolate(logits[None].double(), size=ori, mode='bilinear', align_corners=False)[0]
    scores = scores[[0, 2, 3], ::3, ::3].numpy()  # class 0 = max of its two queries
    assert np.abs(scores - ref[f'{key}_scores']).max() <= 2e-5 * np.abs(ref[f'{key}_scores']).max()


def test_options_and_errors(tmp_path):
    m = build_method(dict(type='LPOSS'))
    assert (m.vfm_model, m.pos_embed_resize, m.k, m.alpha, m.gamma, m.sigma, m.pix_dist_pow, m.cg_iters,
            m.cg_tol, m.pixel_refine, m.tau, m.r) == ('vit_base_patch16_224.dino', 'dino_hub', 400, 0.95, 3.0,
                                                        0.01, 1.0, 10, 1e-6, False, 0.01, 13)
    with pytest.raises(FileNotFoundError, match='model.method.vfm_checkpoint=.*huggingface.co/timm'):
        build_method(dict(type='LPOSS', vfm_checkpoint=str(tmp_path / 'dino.safetensors'))).load()
    with pytest.raises(ValueError, match='model.method.alpha'):
        build_method(dict(type='LPOSS', alpha=1.0))
    with pytest.raises(TypeError, match='all windows of an image'):
        m.patch_logits(None, None, None)
    from clearclip_seg.models.text_heads import TextHead, list_text_heads, register_text_head
    if 'LpossTestHead' not in list_text_heads():
        register_text_head('LpossTestHead')(type('LpossTestHead', (TextHead,), {'__init__': lambda self, key: None}))
    with pytest.raises(ValueError, match='text_head'):
        tiny_segmentor(method=dict(type='LPOSS', **TINY_LPOSS_VFM), last_block=None,
                       text_head=dict(type='LpossTestHead'))
    for name in ('LastBlock', 'SCLIP', 'NACLIP', 'ProxyCLIP'):  # every other method keeps the per-window path
        assert build_method(dict(type=name)).image_level is False


# -- generated configs -----------------------------------------------------------------
def _tiny(card):
    from helpers import TINY_ARCH, TINY_NAME
    return {'model.clip.arch_file': TINY_ARCH, 'model.clip.arch': TINY_NAME, 'model.clip.pretrained': None,
            'model.method.vfm_pretrained': False, 'model.method.vfm_kwargs': TINY_LPOSS_VFM['vfm_kwargs'],
            'model.templates': 'a_photo_of'}


@pytest.mark.slow
@pytest.mark.parametrize('protocol', ['own', 'common'])
def test_generated_config_on_synthetic_data(tmp_path, protocol):
    from clearclip_seg.apis import evaluate
    from clearclip_seg.protocol.constants import config_path
    from clearclip_seg.protocol.methods import METHOD_CARDS, common_setting
    from clearclip_seg.synthetic import write_benchmark
    from helpers import confusion_miou, tiny_cfg_options
    card = 'lposs' if protocol == 'own' else 'lposs-plus'
    config = os.path.join(ROOT, config_path(card, 'openclip-vit-b16', 'voc21'))
    root = tmp_path / 'VOC2012'
    ids = write_benchmark('voc21', str(root), sizes=((50, 70), (40, 60)), seed=1)
    preds = tmp_path / 'preds'
    extra = {'test_evaluator.output_dir': str(preds)}
    if protocol == 'common':  # ClearCLIP's protocol; a small resize keeps LPOSS+'s pixel graph quick here
        extra.update(common_setting(METHOD_CARDS[card], 'voc21').cfg_options())
        extra['model.method'] = {**extra['model.method'], **TINY_LPOSS_VFM}
        extra.update({'test_pipeline.1.scale': (2048, 96), 'test_dataloader.dataset.pipeline.1.scale': (2048, 96)})
    rec = evaluate(config, tiny_cfg_options(root, **{**_tiny(card), **extra}), work_dir=str(tmp_path / 'w'))
    pairs = [(os.path.join(preds, i + '.png'), os.path.join(root, 'SegmentationClass', i + '.png')) for i in ids]
    assert rec['metrics']['mIoU'] == pytest.approx(confusion_miou(pairs, 21)[0], abs=1e-6)
    assert rec['dataset']['num_images'] == len(ids)
    if protocol == 'own':
        assert rec['model']['vocabulary']['name'] == 'lposs/voc21.lposs' and rec['model']['logit_scale'] == 1.0
        assert rec['model']['vocabulary']['num_queries'] == 46  # 26 background names + 20 classes
    else:
        assert rec['model']['vocabulary']['name'] == 'voc21' and rec['model']['logit_scale'] == 50.0


@pytest.mark.parametrize('key', ['voc21', 'voc20', 'context60', 'context59', 'coco_object', 'coco_stuff164k',
                                 'cityscapes', 'ade20k'])
def test_class_files_are_the_authors_split_on_semicolons(key):
    from clearclip_seg.protocol.benchmarks import BENCHMARKS
    from clearclip_seg.vocab import load_vocabulary
    from helpers import reference_class_file
    with open(reference_class_file('lposs', key), 'rb') as f:
        official = f.read()
    with open(os.path.join(ROOT, 'clearclip_seg', 'vocabularies', 'lposs', f'{key}.lposs.txt'), 'rb') as f:
        assert f.read() == official
    voc = load_vocabulary(BENCHMARKS[key].vocabulary_for('lposs'))
    lines = [ln for ln in official.decode().splitlines() if ln.strip()]
    assert list(voc.queries) == [s.strip() for ln in lines for s in ln.split(';')]
    assert voc.num_classes == BENCHMARKS[key].num_classes
    assert voc.query_to_class.count(0) == {'voc21': 26, 'coco_object': 17}.get(key, 1)
