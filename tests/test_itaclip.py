"""ITACLIP: each formula against a plain computation, the card, and runs on the tiny 12-block CLIP.

The method card is ``itaclip_trident_cliptrase.md`` (sections 1.2-1.6); the official
predictions in ``tests/fixtures/itaclip/`` come from m-arda-aydn/ITACLIP's own segmentor
(``tests/fixtures/PROVENANCE.md``).
"""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clearclip_seg.methods import build_method
from clearclip_seg.methods.itaclip import fuse_views, gaussian_blur, grayscale
from clearclip_seg.methods.itaclip_text import ITACLIPText, mix_embeddings, read_auxiliary_texts, resolve_auxiliary_text
from clearclip_seg.models.label_postprocess import build_label_postprocessor, close_labels
from clearclip_seg.protocol.benchmarks import BENCHMARKS
from clearclip_seg.protocol.constants import config_path
from clearclip_seg.protocol.methods import METHOD_CARDS, common_setting
from clearclip_seg.vocab import load_vocabulary
from helpers import ROOT, tiny_cfg_options, tiny_segmentor

TINY12 = os.path.join(ROOT, 'tests', 'assets', 'tiny12oa.json')
TINY12_CLIP = dict(arch='tiny12oa', arch_file=TINY12, pretrained=None)
FIXTURES = os.path.join(ROOT, 'tests', 'fixtures')
OFFICIAL = os.path.join(FIXTURES, 'itaclip')


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope='module')
def seg():
    return tiny_segmentor(clip=TINY12_CLIP, last_block=None, method=dict(type='ITACLIP'))


# -- the last block -----------------------------------------------------------------------------
def _plain_tokens(visual, x, layers=(6, 7, 9), attn_self=True):
    """The card's section 1.2 written out on open_clip's own modules (224 x 224: native positions)."""
    t = visual.conv1(x).flatten(2).transpose(1, 2)
    cls = visual.class_embedding.expand(t.shape[0], 1, -1)
    t = visual.ln_pre(torch.cat([cls, t], dim=1) + visual.positional_embedding)
    blocks = visual.transformer.resblocks

    def heads(block, z):
        a = block.attn
        q, k, v = F.linear(block.ln_1(z), a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)
        split = lambda u: u.reshape(u.shape[0], u.shape[1], a.num_heads, -1).transpose(1, 2)  # noqa: E731
        return split(q), split(k), split(v), a

    def attn_map(q, k):
        s = q.shape[-1] ** -0.5
        if attn_self:
            return torch.softmax(q @ q.transpose(-1, -2) * s, -1) + torch.softmax(k @ k.transpose(-1, -2) * s, -1)
        return torch.softmax(q @ k.transpose(-1, -2) * s, -1)

    maps = []
    for i, block in enumerate(blocks[:-1]):
        if i in layers:
            q, k, _, _ = heads(block, t)
            maps.append(attn_map(q, k))
        t = block(t)
    q, k, v, a = heads(blocks[-1], t)
    mixed = 0.5 * attn_map(q, k) + 0.5 * sum(maps) / len(maps)
    o = (mixed @ v).transpose(1, 2).reshape(t.shape)
    y = t + a.out_proj(o)                    # residual kept, no FFN
    return F.normalize(visual.ln_post(y) @ visual.proj, dim=-1)


@pytest.mark.parametrize('attn_self', [True, False])
def test_last_block_equals_the_plain_formula(seg, attn_self):
    method = build_method(dict(type='ITACLIP', attn_self=attn_self))
    x = torch.randn(2, 3, 224, 224, generator=_gen(1))
    with torch.no_grad():
        ours, grid = method.tokens(seg.encoder, x)
        ref = _plain_tokens(seg.encoder.visual, x, attn_self=attn_self)
    assert grid == (14, 14)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # the mix really enters: a different layer set changes the features
    with torch.no_grad():
        other, _ = build_method(dict(type='ITACLIP', intermediate_layers=(0,))).tokens(seg.encoder, x)
    assert (other - ours).abs().max() > 1e-3


def test_too_shallow_towers_and_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match=r'intermediate_layers=\[6, 7, 9\].*3 blocks'):
        tiny_segmentor(last_block=None, method=dict(type='ITACLIP'))
    with pytest.raises(ValueError, match='non-empty'):
        build_method(dict(type='ITACLIP', intermediate_layers=()))
    with pytest.raises(ValueError, match='img_eng_coefficient'):
        build_method(dict(type='ITACLIP', img_eng_coefficient=1.5))


# -- image engineering -----------------------------------------------------------------------------
def test_views_equal_torchvisions_transforms():
    T = pytest.importorskip('torchvision.transforms')
    x = torch.randn(1, 3, 40, 52, generator=_gen(2))
    torch.testing.assert_close(grayscale(x), T.Grayscale()(x[0]).unsqueeze(0).expand(1, 3, -1, -1),
                               rtol=0, atol=1e-6)
    torch.testing.assert_close(gaussian_blur(x), T.GaussianBlur(kernel_size=11, sigma=5)(x[0])[None],
                               rtol=0, atol=1e-6)
    # the 1-D kernel the card prints
    t = torch.arange(-5, 6, dtype=torch.float64)
    g = torch.exp(-t ** 2 / 50)
    assert torch.allclose((g / g.sum())[:6].float(),
                          torch.tensor([0.06634, 0.07943, 0.09136, 0.10097, 0.10721, 0.10938]), atol=1e-5)


def test_fusion_on_the_grid_equals_the_official_order():
    """alpha U(base) + (1 - alpha) mean(vflip U(L_v), hflip U(L_h)) == U(fused on the grid)."""
    base, lv, lh = (torch.randn(2, 5, 14, 14, generator=_gen(s)) for s in (3, 4, 5))
    up = lambda z: F.interpolate(z, size=(224, 224), mode='bilinear', align_corners=False)  # noqa: E731
    official = 0.7 * up(base) + 0.3 * torch.stack([up(lv).flip(-2), up(lh).flip(-1)]).mean(0)
    torch.testing.assert_close(up(fuse_views(base, lv, lh, 0.7)), official, rtol=0, atol=1e-5)


def test_five_views_fused_as_the_card_says(seg):
    x = torch.randn(1, 3, 224, 224, generator=_gen(6))
    text = F.normalize(torch.randn(4, seg.encoder.embed_dim, generator=_gen(7)), dim=-1)
    method = build_method(dict(type='ITACLIP', img_eng_coefficient=0.75))
    with torch.no_grad():
        ours = method.patch_logits(seg.encoder, x, text)

        def feats(v):
            return _plain_tokens(seg.encoder.visual, v)

        f = [feats(v) for v in (x, grayscale(x), gaussian_blur(x), x.flip(-2), x.flip(-1))]
        grid = lambda z: (z[:, 1:] @ text.t()).transpose(1, 2).reshape(1, 4, 14, 14)  # noqa: E731
        base = grid((f[0] + f[1] + f[2]) / 3)                     # averaged, not renormalised
        ref = 0.75 * base + 0.25 * (grid(f[3]).flip(-2) + grid(f[4]).flip(-1)) / 2
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    # weights per view: 0.25 x 3, 0.125 x 2
    assert 0.75 / 3 == 0.25 and 0.25 / 2 == 0.125
    with torch.no_grad():
        single = build_method(dict(type='ITACLIP', img_engineering=False)).patch_logits(seg.encoder, x, text)
    torch.testing.assert_close(single, grid(f[0]), rtol=1e-5, atol=1e-5)


# -- text side -------------------------------------------------------------------------------------
def test_mixing_equals_a_plain_loop():
    names = torch.randn(6, 8, generator=_gen(8))
    aux = torch.randn(2, 8, generator=_gen(9))
    q2c = (0, 0, 1, 1, 2, 2)
    got = mix_embeddings(names, aux, q2c, offset=1, weight=0.05)
    for q, c in enumerate(q2c):
        want = names[q] if c == 0 else 0.95 * names[q] + 0.05 * aux[c - 1]
        assert torch.equal(got[q], want)
    aux3 = torch.randn(3, 8, generator=_gen(10))
    got = mix_embeddings(names, aux3, q2c, offset=0, weight=0.2)
    assert torch.equal(got, 0.8 * names + 0.2 * aux3[list(q2c)])   # every class mixed, not renormalised


def _fake_embed(queries, templates):
    """Deterministic per-string 'embeddings' (normalised) for the head's classifier."""
    rows = [torch.randn(8, generator=_gen(sum(map(ord, q)) * 7 + len(q))) for q in queries]
    return F.normalize(torch.stack(rows), dim=-1)


def test_head_reads_the_file_and_mixes_per_class(tmp_path):
    voc = load_vocabulary('itaclip/voc21.comma')
    assert (voc.num_classes, len(voc.queries), voc.queries[0], voc.queries[43]) == (21, 80, 'sky', 'sea')
    head = ITACLIPText(auxiliary_text='voc21_definitions', def_coefficient=0.05)
    head.bind(voc, ['{}'])
    texts = read_auxiliary_texts(resolve_auxiliary_text('voc21_definitions', 'k'))
    assert len(texts) == 20 and texts[14] == 'a human being, either male or female.'   # after '>=', not stripped
    rows = head.classifier(_fake_embed, voc, ['{}'])
    names, aux = _fake_embed(voc.queries, None), _fake_embed(texts, None)
    for q, c in enumerate(voc.query_to_class):
        want = names[q] if c == 0 else 0.95 * names[q] + 0.05 * aux[c - 1]
        assert torch.equal(rows[q], want), voc.queries[q]
    # no background: every class has a line (Cityscapes, 19 synonyms)
    city = load_vocabulary('itaclip/cityscapes.comma')
    head = ITACLIPText(auxiliary_text='cityscapes_synonyms', def_coefficient=0.05)
    rows = head.classifier(_fake_embed, city, ['{}'])
    aux = _fake_embed(read_auxiliary_texts(resolve_auxiliary_text('cityscapes_synonyms', 'k')), None)
    assert torch.equal(rows, 0.95 * _fake_embed(city.queries, None) + 0.05 * aux[list(city.query_to_class)])
    with pytest.raises(ValueError, match=r"has 20 lines; the vocabulary 'itaclip/cityscapes.comma' has 19"):
        ITACLIPText(auxiliary_text='voc21_definitions').bind(city, ['{}'])
    with pytest.raises(ValueError, match='auxiliary_text is required'):
        ITACLIPText()
    bad = tmp_path / 'aux.txt'
    bad.write_text('road highway\n')
    with pytest.raises(ValueError, match="line 1 has no '>='"):
        ITACLIPText(auxiliary_text=str(bad))


def test_class_files_parse_as_the_official_code_does():
    counts = dict(voc21=(21, 80), context60=(60, 75), coco_object=(81, 119), coco_stuff164k=(171, 183),
                  cityscapes=(19, 26))
    for key, (classes, queries) in counts.items():
        name = BENCHMARKS[key].vocabulary_for('itaclip')
        voc = load_vocabulary(name)
        assert (voc.num_classes, len(voc.queries)) == (classes, queries), key
        with open(os.path.join(ROOT, 'clearclip_seg', 'vocabularies', f'{name}.txt'), encoding='utf-8') as f:
            lines = f.read().split('\n')
        official = [q for line in lines for q in line.split(', ')]
        assert list(voc.queries) == [q.strip() for q in official]   # only context60's 'wood ' is stripped


# -- closing of the label map ----------------------------------------------------------------------
def _plain_close(a):
    """Max then min over each pixel's in-image 3 x 3 neighbourhood (numpy loops)."""
    def sweep(m, f):
        out = np.empty_like(m)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                out[i, j] = f(m[max(0, i - 1):i + 2, max(0, j - 1):j + 2])
        return out
    return sweep(sweep(a, np.max), np.min)


@pytest.mark.parametrize('shape', [(1, 1), (3, 7), (17, 11)])
def test_closing_equals_max_then_min(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.integers(0, 6, size=shape)
    got = close_labels(torch.from_numpy(a)[None])[0].numpy()
    assert np.array_equal(got, _plain_close(a))
    # bands of two rows (halo 2) give the whole map's closing
    assert np.array_equal(close_labels(torch.from_numpy(a)[None], band_rows=2)[0].numpy(), got)
    cv2 = pytest.importorskip('cv2')
    ref = cv2.morphologyEx(a.astype(np.uint8), cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_RECT, (3, 3)))
    assert np.array_equal(got, ref)


def test_segmentor_closes_labels_only_when_configured():
    img = torch.randn(3, 70, 100, generator=_gen(11))
    plain = tiny_segmentor(test_cfg=dict(crop_size=(64, 64), stride=(32, 32), keep_probs=True))
    closed = tiny_segmentor(test_cfg=dict(crop_size=(64, 64), stride=(32, 32), keep_probs=True),
                            label_postprocess=dict(type='MorphClose'))
    a, b = plain.predict(img[None])[0], closed.predict(img[None])[0]
    assert torch.equal(b.pred_sem_seg.data, close_labels(a.pred_sem_seg.data))
    assert torch.equal(b.seg_logits.data, a.seg_logits.data)    # the probabilities are not changed
    labels_only = tiny_segmentor(test_cfg=dict(crop_size=(64, 64), stride=(32, 32), keep_probs=False),
                                 label_postprocess=dict(type='MorphClose'))
    assert torch.equal(labels_only.predict(img[None])[0].pred_sem_seg.data, b.pred_sem_seg.data)
    assert build_label_postprocessor(None) is None and build_label_postprocessor({}) is None
    with pytest.raises(ValueError, match='odd'):
        build_label_postprocessor(dict(type='MorphClose', kernel_size=4))
    with pytest.raises(ValueError, match=r'model.label_postprocess.type'):
        build_label_postprocessor(dict(type='NoSuchStep'))


# -- the card ---------------------------------------------------------------------------------------
def test_card_holds_the_official_settings():
    card = METHOD_CARDS['itaclip']
    assert 'itaclip' in METHOD_CARDS and card.backbones == ('vit-b16',)
    want = {  # benchmark: (resize, logit, prob_thd, area_thd, aux file, w, alpha)
        'voc21': (336, 60.0, 0.1, 0.1, 'voc21_definitions', 0.05, 0.7),
        'context60': (336, 55.0, 0.1, None, 'context60_definitions', 0.15, 0.75),
        'coco_object': (336, 50.0, 0.1, None, 'coco_object_synonyms', 0.1, 0.75),
        'coco_stuff164k': (448, 40.0, 0.0, None, 'coco_stuff_definitions', 0.2, 0.75),
        'cityscapes': (560, 40.0, 0.0, None, 'cityscapes_synonyms', 0.05, 0.7),
    }
    for key in BENCHMARKS:
        s = card.setting(key)
        assert (s.mode, s.crop, s.stride, s.patch_fit) == ('slide', 224, 28, 'truncate')
        assert s.postprocess == dict(type='PAMR', num_iter=10, dilations=(8, 16))
        assert s.label_postprocess == dict(type='MorphClose', kernel_size=3)
        assert s.method['intermediate_layers'] == (6, 7, 9) and s.method['img_engineering'] is True
        if key in want:
            r, logit, thd, area, aux, w, alpha = want[key]
            assert (s.resize, s.logit_scale, s.prob_thd, s.area_thd) == (r, logit, thd, area), key
            assert s.text_head == dict(type='ITACLIPText', auxiliary_text=aux, def_coefficient=w), key
            assert s.method['img_eng_coefficient'] == alpha and s.vocabulary == f'itaclip/{key}.comma'
        else:   # no official config: class defaults, no LLM texts, the SCLIP family's class files
            assert (s.resize, s.logit_scale, s.prob_thd, s.area_thd, s.text_head) == (336, 40.0, 0.0, None, None)
            assert s.vocabulary == BENCHMARKS[key].vocabulary_for('sclip')
    # common protocol: the text head stays (the method's), the closing is switched off explicitly
    c = common_setting(card, 'voc21')
    assert c.text_head == card.setting('voc21').text_head and c.label_postprocess is False
    opts = c.cfg_options()
    assert opts['model.label_postprocess'] is None and opts['model.text_head']['auxiliary_text'] == 'voc21_definitions'
    # other cards' overrides have neither key
    for name in ('sclip', 'naclip', 'proxyclip'):
        o = common_setting(METHOD_CARDS[name], 'voc21').cfg_options()
        assert 'model.text_head' not in o and 'model.label_postprocess' not in o


# -- configs on synthetic data ----------------------------------------------------------------------
# VOC21 (stride 28 over 44 background names) is the slow pair; Cityscapes and ADE20K stay in the quick subset
@pytest.mark.parametrize('key,protocol', [pytest.param('voc21', 'own', marks=pytest.mark.slow), ('cityscapes', 'own'),
                                          pytest.param('voc21', 'common', marks=pytest.mark.slow), ('ade20k', 'own')])
def test_generated_config_runs(tmp_path, key, protocol):
    from clearclip_seg.apis import evaluate
    from clearclip_seg.synthetic import write_benchmark
    root = tmp_path / 'data'
    ids = write_benchmark(key, str(root), sizes=((40, 60),), seed=3)
    opts = tiny_cfg_options(root, **{'model.clip.arch': 'tiny12oa', 'model.clip.arch_file': TINY12,
                                     'model.templates': 'a_photo_of', 'model.text_cache': False,
                                     'test_dataloader.dataset.pipeline.1.scale': (2048, 150)})
    if protocol == 'common':
        s = common_setting(METHOD_CARDS['itaclip'], key)
        opts.update({k: v for k, v in s.cfg_options().items() if k not in ('model.method', 'model.last_block')})
        opts.update({'model.test_cfg.crop_size': (64, 64), 'model.test_cfg.stride': (48, 48),
                     'test_dataloader.dataset.pipeline.1.scale': (2048, 100)})
    rec = evaluate(os.path.join(ROOT, config_path('itaclip', 'vit-b16', key)), opts, work_dir=str(tmp_path / 'w'))
    model = rec['model']
    assert model['method']['type'] == 'ITACLIP' and rec['dataset']['num_images'] == len(ids)
    if protocol == 'own':
        assert model['label_postprocess'] == dict(type='MorphClose', kernel_size=3)
        assert model['postprocess']['type'] == 'PAMR'
    else:
        assert 'label_postprocess' not in model and model['postprocess'] is None
    has_text = key in ('voc21', 'cityscapes')
    assert ('text_head' in model) == has_text
    if has_text:
        assert model['text_head']['type'] == 'ITACLIPText'
    assert 0 <= rec['metrics']['mIoU'] <= 100


# -- the official code's predictions ------------------------------------------------------------------
@pytest.mark.slow
def test_predictions_equal_the_official_code(tmp_path):
    """cfg_voc21 of the official repository on tiny12oa and three synthetic VOC images (PROVENANCE.md)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmseg.evaluation.metrics import IoUMetric
    from mmseg.registry import DATASETS

    from clearclip_seg.apis.inference import init_segmentor
    from test_methods_oracle import ORACLE, oracle_state_dict
    expected = np.load(os.path.join(OFFICIAL, 'itaclip_voc21.npz'))
    weights = tmp_path / 'tiny12oa_fp16.pt'
    torch.save(oracle_state_dict('tiny12oa'), weights)
    options = {'model.clip.arch': 'tiny12oa', 'model.clip.arch_file': TINY12, 'model.clip.pretrained': str(weights),
               'model.clip.precision': 'fp32', 'model.text_cache': False, 'model.test_cfg.max_windows': 1,
               'test_dataloader.dataset.data_root': os.path.join(ORACLE, 'data', 'VOCdevkit', 'VOC2012'),
               'test_dataloader.dataset.ann_file': os.path.join(OFFICIAL, 'val.txt')}
    model = init_segmentor(os.path.join(ROOT, config_path('itaclip', 'vit-b16', 'voc21')), device='cpu',
                           cfg_options=options)
    init_default_scope('mmseg')
    dataset = DATASETS.build(model.cfg.test_dataloader.dataset)
    metric = IoUMetric(iou_metrics=['mIoU'])
    metric.dataset_meta = dataset.metainfo
    same = total = 0
    with torch.no_grad():
        for i in range(len(dataset)):
            batch = pseudo_collate([dataset[i]])
            out = model.test_step(batch)
            metric.process(batch, [o.to_dict() for o in out])
            ours = out[0].pred_sem_seg.data[0].numpy()
            theirs = expected[f'pred/{os.path.basename(out[0].img_path)}']
            assert ours.shape == theirs.shape
            same += int((ours == theirs).sum())
            total += ours.size
    assert total and same / total >= 0.9999, f'pixel agreement {same / total:.6f}'
    want = json.loads(str(expected['metrics']))
    assert metric.compute_metrics(metric.results)['mIoU'] == pytest.approx(want['mIoU'], abs=0.01)


def test_config_keys_of_the_new_sections_are_checked():
    from clearclip_seg.config import load_config
    path = os.path.join(ROOT, config_path('itaclip', 'vit-b16', 'voc21'))
    cfg = load_config(path)
    assert cfg.model.text_head.auxiliary_text == 'voc21_definitions'
    with pytest.raises(Exception, match=r'model.label_postprocess.kernel_sise'):
        load_config(path, {'model.label_postprocess.kernel_sise': 5})
    with pytest.raises(Exception, match=r'model.text_head.def_coeficient'):
        load_config(path, {'model.text_head.def_coeficient': 0.1})
