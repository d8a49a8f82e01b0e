"""FLOSS (``model.text_head=dict(type='FLOSS')``): fusion rule, expert classifiers, rankings, cards, end to end."""
import json
import os

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from clearclip_seg.models.floss import (FLOSS, SHIPPED_RANKINGS, expert_classifiers, fuse_probabilities,
                                        load_rankings, query_templates)
from clearclip_seg.models.floss_rankings import (EntropyTally, compute_rankings, rankings_document,
                                                 select_templates)
from clearclip_seg.models.slide import window_boxes
from clearclip_seg.protocol.constants import config_path
from clearclip_seg.vocab import load_vocabulary
from helpers import ROOT, tiny_cfg_options, tiny_segmentor

TEMPLATES = ['a photo of a {}.', 'a bad photo of a {}.', 'art of the {}.', 'a {} in a video game.', '{}',
             'a close-up photo of the {}.']
VOCAB = ['sky', 'grass', 'tree, bush']
# per class: ranked template ids (indices into TEMPLATES)
RANKED = {'sky': [3, 1, 0, 2], 'grass': [5, 4, 1, 0], 'tree': [0, 2, 5, 3]}


def _fuse_reference(probs: torch.Tensor) -> torch.Tensor:
    """FLOSS's rule pixel by pixel, as the card states it (no tensor tricks). probs: (K + 1, Q, H, W)."""
    k = probs.shape[0] - 1
    out = torch.empty(probs.shape[1:])
    for y in range(probs.shape[2]):
        for x in range(probs.shape[3]):
            claim = [c for c in range(k) if int(probs[c, :, y, x].argmax()) == c]
            if not claim:
                out[:, y, x] = probs[k, :, y, x]
                continue
            best, pick = -1.0, None
            for c in claim:
                if float(probs[c, c, y, x]) > best:
                    best, pick = float(probs[c, c, y, x]), c
            out[:, y, x] = probs[pick, :, y, x]
    return out


@pytest.fixture
def rankings_file(tmp_path):
    doc = rankings_document({k: [dict(template_id=t, entropy=0.1 * i, pixel_percentage=1.0, rank=i + 1)
                                 for i, t in enumerate(v)] for k, v in RANKED.items()}, 'tiny', 'tiny', 'voc20')
    path = tmp_path / 'rankings.json'
    path.write_text(json.dumps(doc))
    return str(path)


def _head(rankings_file, **kw):
    return dict(type='FLOSS', rankings='tiny', backbone='tiny', benchmark='voc20', file=rankings_file, top_k=2, **kw)


def test_fusion_equals_the_pixel_rule_including_ties():
    g = torch.Generator().manual_seed(0)
    q = 4
    probs = torch.softmax(torch.randn(q + 1, q, 6, 7, generator=g) * 3, dim=1)
    probs[:, :, 0, 0] = 0.25                 # every expert ties: argmax is query 0, expert 0 claims
    probs[:, :, 1, 1] = torch.tensor([0.1, 0.6, 0.2, 0.1])   # experts 0, 3 and the default: no claim
    probs[2, :, 1, 1] = torch.tensor([0.1, 0.1, 0.6, 0.2])   # experts 1 and 2 claim with equal confidence
    ref = _fuse_reference(probs)
    assert torch.equal(fuse_probabilities(probs[None])[0], ref)
    assert torch.equal(ref[:, 1, 1], probs[1, :, 1, 1])      # lowest expert wins the tie


@pytest.mark.parametrize('size', [(6, 7), (20, 23)])
def test_streamed_window_fusion_equals_softmax_upsample_then_fuse(monkeypatch, size):
    import clearclip_seg.models.floss as floss
    monkeypatch.setattr(floss, 'FUSE_CHUNK_BYTES', 1)       # one classifier at a time: the streaming path
    g = torch.Generator().manual_seed(1)
    q, b = 3, 2
    logits = torch.randn(b, (q + 1) * q, 6, 7, generator=g) * 0.05
    head = FLOSS(logit_scale=100.0)
    head._experts = [[0]] * q
    probs = torch.softmax(100.0 * logits.view(b, q + 1, q, 6, 7), dim=2)
    up = F.interpolate(probs.flatten(0, 1), size=size, mode='bilinear', align_corners=False).view(b, q + 1, q, *size)
    expected = torch.stack([_fuse_reference(up[i]) for i in range(b)])
    assert torch.equal(head.fuse_window(logits, size), expected)
    head.half = 'window'
    assert torch.equal(head.fuse_window(logits, size), expected.half().float())
    head.half = 'maps'
    up16 = up.half().float()
    assert torch.equal(head.fuse_window(logits, size), torch.stack([_fuse_reference(up16[i]) for i in range(b)]))


@pytest.mark.parametrize('renormalize', [True, False])
def test_expert_classifiers_equal_plain_per_template_embeddings(rankings_file, renormalize):
    seg = tiny_segmentor(vocabulary=VOCAB, templates=TEMPLATES, text_head=_head(rankings_file, renormalize=renormalize))
    rows = seg.build_text_classifier()
    queries = ['sky', 'grass', 'tree', 'bush']
    q = len(queries)
    assert rows.shape[0] == (q + 1) * q
    model, tok = seg._text_model[0], seg._tokenizer
    with torch.no_grad():
        unit = {(t, n): F.normalize(model.encode_text(tok([TEMPLATES[t].format(n)])).float()[0], dim=-1)
                for t in range(len(TEMPLATES)) for n in queries}
    experts = [RANKED['sky'][:2], RANKED['grass'][:2], RANKED['tree'][:2], RANKED['tree'][:2]]  # bush: tree's class
    for c in range(q + 1):
        ids = experts[c] if c < q else range(len(TEMPLATES))
        for k, name in enumerate(queries):
            row = torch.stack([unit[(t, name)] for t in ids]).mean(0)
            row = F.normalize(row, dim=0) if renormalize else row
            assert torch.allclose(rows[c * q + k], row, atol=1e-6), (c, k)


def _manual_floss(seg, image):
    """Windows by hand: the method's patch logits for all rows, softmax x100 per classifier, upsampled
    to the window, fused (reference rule), averaged."""
    rows = seg.build_text_classifier()
    q = len(seg.vocabulary.queries)
    H, W = image.shape[-2:]
    acc, cnt = torch.zeros(q, H, W), torch.zeros(1, H, W)
    for y1, y2, x1, x2 in window_boxes(H, W, seg.test_cfg['crop_size'], seg.test_cfg['stride']):
        crop = image[None, :, y1:y2, x1:x2]
        with torch.no_grad():
            raw = seg.method.patch_logits(seg.encoder, crop, rows).float()
        probs = torch.softmax(100.0 * raw.view(q + 1, q, *raw.shape[-2:]), dim=1)
        up = F.interpolate(probs, size=(y2 - y1, x2 - x1), mode='bilinear', align_corners=False)
        acc[:, y1:y2, x1:x2] += _fuse_reference(up)
        cnt[:, y1:y2, x1:x2] += 1
    return acc / cnt


@pytest.mark.parametrize('method', [None, dict(type='SCLIP'), dict(type='NACLIP')])
def test_head_over_methods_end_to_end(rankings_file, method):
    kw = {} if method is None else dict(last_block=None, method=method)
    seg = tiny_segmentor(vocabulary=VOCAB, templates=TEMPLATES, text_head=_head(rankings_file),
                         test_cfg=dict(crop_size=(32, 32), stride=(16, 16)), **kw)
    image = torch.randn(3, 32, 48, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        got = seg.query_logits([image])[0]
    expected = _manual_floss(seg, image)
    assert torch.allclose(got, expected, atol=1e-6)
    labels = seg.predict(image[None])[0].pred_sem_seg.data[0]
    assert torch.equal(labels, seg.query_to_class[expected.argmax(0)])


def test_voc20_synonyms_get_their_class_templates_as_the_authors_fix_does():
    ranked = load_rankings('naclip', 'vit-b16', 'voc20')
    voc = load_vocabulary('voc20_synonyms')
    got = dict(zip(voc.queries, query_templates(voc, ranked, 4, 'naclip')))
    fixed = dict(ranked)       # NACLIP._apply_quick_and_dirty_fix, written out
    fixed['ship'], fixed['table'] = fixed.pop('boat'), fixed.pop('diningtable')
    for s in ('person in shirt', 'person in jeans', 'person in dress', 'person in sweater', 'person in skirt',
              'person in jacket'):
        fixed[s] = ranked['person']
    for s in ('television monitor', 'tv monitor', 'monitor', 'television', 'screen'):
        fixed[s] = ranked['tvmonitor']
    assert got == {q: fixed[q] for q in voc.queries}
    # 'table' is a COCO-Stuff class of its own beside 'diningtable': no rename there
    stuff = load_vocabulary('coco_stuff164k')
    ids = dict(zip(stuff.queries, query_templates(stuff, load_rankings('naclip', 'vit-b16', 'coco_stuff164k'), 4,
                                                  'naclip')))
    ranked = load_rankings('naclip', 'vit-b16', 'coco_stuff164k')
    assert ids['table'] == ranked['table'] and ids['diningtable'] == ranked['diningtable']


def test_shipped_rankings_are_the_loader_rule_of_the_official_files():
    with open(SHIPPED_RANKINGS) as f:
        data = json.load(f)
    entries = [(n, bb, k, e) for n, d in data['rankings'].items() for bb, bs in d.items() for k, e in bs.items()]
    assert len(entries) == 15 and data['keep'] == 4
    assert {(n, bb) for n, bb, _, _ in entries} == {('naclip', 'vit-b16'), ('maskclip', 'openclip-vit-b16'),
                                                     ('clipdinoiser', 'openclip-vit-b16')}
    for _, _, _, e in entries:
        assert len(e['sha256']) == 64 and e['source'].startswith('rankings/')
        assert all(len(v) == 4 and all(0 <= t < 80 for t in v) for v in e['classes'].values())
    # spot values read from the official files (naclip/cityscapes 'road'; pp = 0 entries skipped for 'rider')
    assert data['rankings']['naclip']['vit-b16']['cityscapes']['classes']['road'] == \
        load_rankings('naclip', 'vit-b16', 'cityscapes')['road']
    rows = [dict(template_id=7, pixel_percentage=0.0), dict(template_id=3, pixel_percentage=0.5),
            dict(template_id=1, pixel_percentage=0.0), dict(template_id=9, pixel_percentage=2.0)]
    assert select_templates(rows, 4) == [3, 9] and select_templates(rows, 1) == [3]


def test_ranking_errors_are_one_line(tmp_path, rankings_file):
    cases = [dict(rankings='nope'), dict(backbone='vit-l14'), dict(benchmark='voc21'), dict(path=str(tmp_path))]
    for kw in cases:
        with pytest.raises(ValueError) as e:
            load_rankings(**{**dict(rankings='naclip', backbone='vit-b16', benchmark='voc20'), **kw})
        assert '\n' not in str(e.value) and 'model.text_head' in str(e.value)
    head = FLOSS(rankings='tiny', backbone='tiny', benchmark='voc20', file=rankings_file, top_k=5)
    with pytest.raises(ValueError, match=r'top_k=5: the tiny/tiny/voc20 rankings keep 4 templates per class'):
        head.bind(load_vocabulary(VOCAB), TEMPLATES)
    head = FLOSS(rankings='tiny', backbone='tiny', benchmark='voc20', file=rankings_file)
    with pytest.raises(ValueError, match=r"1 class\(es\) .* no tiny/tiny/voc20 ranking: \['cat'\]"):
        head.bind(load_vocabulary(['sky', 'cat']), TEMPLATES)
    with pytest.raises(ValueError, match=r'template id 5 is past the 2 templates'):
        FLOSS(rankings='tiny', backbone='tiny', benchmark='voc20', file=rankings_file, top_k=1).bind(
            load_vocabulary(VOCAB), TEMPLATES[:2])
    with pytest.raises(ValueError, match=r"model.text_head.half='x'"):
        FLOSS(half='x')
    # a class none of whose templates predicted a pixel: an error (NACLIP base) or every template
    empty = {**RANKED, 'grass': []}
    voc = load_vocabulary(VOCAB)
    with pytest.raises(ValueError, match=r"no template that predicted any pixel for \['grass'\]"):
        query_templates(voc, empty, 2, 'x')
    assert query_templates(voc, empty, 2, 'x', empty='all') == [[3, 1], None, [0, 2], [0, 2]]


def _independent_entropy(seg, images, n_templates, scale=100.0):
    """Per template: a plain segmentor with that one template, its averaged logits resized to the original
    size, softmax x100, max over synonyms, argmax; entropy sums per class in float64."""
    sums, counts, total = {}, {}, 0
    for t in range(n_templates):
        plain = tiny_segmentor(vocabulary=VOCAB, templates=[TEMPLATES[t]],
                               test_cfg=dict(crop_size=(32, 32), stride=(16, 16)))
        for image, size in images:
            with torch.no_grad():
                lg = F.interpolate(plain.query_logits([image])[0][None], size=size, mode='bilinear',
                                   align_corners=False)[0]
            p = torch.softmax(lg * scale, dim=0)
            p = torch.stack([p[0], p[1], torch.maximum(p[2], p[3])]).double()
            pred = p.argmax(0)
            h = -(p * torch.log(p + 1e-10)).sum(0)
            for c in range(3):
                m = pred == c
                sums[t, c] = sums.get((t, c), 0.0) + float(h[m].sum())
                counts[t, c] = counts.get((t, c), 0) + int(m.sum())
            if t == 0:
                total += size[0] * size[1]
    return sums, counts, total


def test_recomputed_rankings_equal_an_independent_entropy_computation():
    seg = tiny_segmentor(vocabulary=VOCAB, templates=TEMPLATES, test_cfg=dict(crop_size=(32, 32), stride=(16, 16)))
    g = torch.Generator().manual_seed(3)
    images = [(torch.randn(3, 32, 48, generator=g), (40, 60)), (torch.randn(3, 48, 32, generator=g), (48, 32))]
    got = compute_rankings(seg, images, average='logits', templates_per_pass=4)
    sums, counts, total = _independent_entropy(seg, images, len(TEMPLATES))
    for c, name in enumerate(['sky', 'grass', 'tree']):
        rows = got[name]
        assert [r['rank'] for r in rows] == list(range(1, len(TEMPLATES) + 1))
        expect = sorted(((sums[t, c] / counts[t, c] if counts[t, c] else 0.0), t) for t in range(len(TEMPLATES)))
        assert [r['template_id'] for r in rows] == [t for _, t in expect]
        for r in rows:
            t = r['template_id']
            assert r['entropy'] == pytest.approx(sums[t, c] / counts[t, c] if counts[t, c] else 0.0, rel=1e-5)
            assert r['pixel_percentage'] == pytest.approx(100.0 * counts[t, c] / total, rel=1e-12)
    # the written document is what the head reads
    doc = rankings_document(got, 'mine', 'tiny', 'voc20', keep=4)
    assert doc['rankings']['mine']['tiny']['voc20']['classes']['sky'] == select_templates(got['sky'], 4)


def test_entropy_tally_counts_pixels_per_predicted_class():
    tally = EntropyTally(1, 2)
    probs = torch.tensor([[[0.9, 0.2]], [[0.1, 0.8]]])    # (C=2, 1, 2): pixel 0 -> class 0, pixel 1 -> 1
    tally.add(0, probs)
    tally.total_pixels = 2
    h0 = -(0.9 * torch.log(torch.tensor(0.9 + 1e-10)) + 0.1 * torch.log(torch.tensor(0.1 + 1e-10)))
    r = tally.rankings(['a', 'b'])
    assert r['a'][0]['entropy'] == pytest.approx(float(h0)) and r['a'][0]['pixel_percentage'] == 50.0


# --------------------------------------------------------------------------- cards and configs

NACLIP_BASE = {'voc20': (336, 'whole'), 'context59': (336, 'slide'), 'coco_stuff164k': (336, 'slide'),
               'cityscapes': (560, 'slide'), 'ade20k': (336, 'slide')}


@pytest.mark.parametrize('bench', list(NACLIP_BASE))
def test_generated_floss_configs_are_the_authors_settings(bench):
    cfg = Config.fromfile(os.path.join(ROOT, config_path('floss-naclip', 'vit-b16', bench)))
    m = cfg.model
    resize, mode = NACLIP_BASE[bench]
    assert tuple(cfg.test_pipeline[1].scale) == (2048, resize) and m.test_cfg.mode == mode
    assert m.postprocess is None and m.method.type == 'NACLIP' and m.clip.pretrained == 'openai'
    assert m.text_head.to_dict() == dict(type='FLOSS', rankings='naclip', backbone='vit-b16', benchmark=bench,
                                         top_k=4, logit_scale=100.0, renormalize=True,
                                         half='window' if bench in ('coco_stuff164k', 'ade20k') else 'none',
                                         empty='error')
    cfg = Config.fromfile(os.path.join(ROOT, config_path('floss-maskclip', 'openclip-vit-b16', bench)))
    m = cfg.model
    assert tuple(cfg.test_pipeline[1].scale) == (2048, 448) and m.test_cfg.mode == 'slide'
    assert tuple(m.test_cfg.crop_size) == (448, 448) and tuple(m.test_cfg.stride) == (224, 224)
    assert m.method.to_dict() == dict(type='MaskCLIPDinoiser', pos_interp='size')
    assert m.clip.pretrained == 'laion2b_s34b_b88k' and m.vocabulary == f'floss/{bench}'
    assert m.text_head.renormalize is False and m.text_head.empty == 'all'
    assert m.text_head.half == ('maps' if bench in ('coco_stuff164k', 'ade20k') else 'none')
    # no configs for the benchmarks with background: FLOSS has no rankings there
    assert not os.path.exists(os.path.join(ROOT, config_path('floss-naclip', 'vit-b16', 'voc21')))


def test_floss_class_files_resolve_against_their_rankings():
    for bench in NACLIP_BASE:
        for rankings, backbone in (('maskclip', 'openclip-vit-b16'), ('clipdinoiser', 'openclip-vit-b16')):
            voc = load_vocabulary(f'floss/{bench}')
            ranked = load_rankings(rankings, backbone, bench)
            assert [k.strip() for k in ranked] == list(voc.classes)       # the same list, in the same order
            assert query_templates(voc, ranked, 4, rankings) == [ranked[k] for k in ranked]


@pytest.mark.slow
def test_generated_config_runs_on_synthetic_data(tmp_path):
    from clearclip_seg.apis import evaluate
    from clearclip_seg.synthetic import write_benchmark
    root = tmp_path / 'data'
    ids = write_benchmark('voc20', str(root), sizes=((40, 60),), seed=2)
    opts = tiny_cfg_options(root, **{'model.text_cache': False,
                                     'test_dataloader.dataset.pipeline.1.scale': (2048, 48)})
    rec = evaluate(os.path.join(ROOT, config_path('floss-naclip', 'vit-b16', 'voc20')), opts,
                   work_dir=str(tmp_path / 'w'))
    assert rec['dataset']['num_images'] == len(ids)
    assert 0.0 <= rec['metrics']['mIoU'] <= 100.0


@pytest.mark.slow
def test_rankings_cli_writes_a_file_the_head_reads(tmp_path):
    import importlib.util
    from clearclip_seg.synthetic import write_benchmark
    from helpers import TINY_ARCH, TINY_NAME
    write_benchmark('voc20', str(tmp_path / 'data'), sizes=((40, 60), (50, 40)), seed=1)
    spec = importlib.util.spec_from_file_location('floss_rankings_cli',
                                                  os.path.join(ROOT, 'tools', 'floss_rankings.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    out = str(tmp_path / 'r.json')
    templates = tmp_path / 'templates.txt'
    templates.write_text('\n'.join(TEMPLATES) + '\n')
    argv = [os.path.join(ROOT, config_path('floss-naclip', 'vit-b16', 'voc20')), str(tmp_path / 'data' / 'JPEGImages'),
            '--name', 'mine', '--backbone', 'tiny', '--benchmark', 'voc20', '--average', 'logits', '--out', out,
            '--templates-per-pass', '40', '--cfg-options', f'model.clip.arch_file={TINY_ARCH}',
            f'model.clip.arch={TINY_NAME}', 'model.clip.pretrained=None', 'model.text_cache=False',
            f'model.templates={templates}']
    assert cli.main(argv) == 0
    with open(out) as f:
        ranked = json.load(f)['rankings']['mine']['tiny']['voc20']
    # random weights: some classes are never predicted; they take every template with empty='all'
    head = FLOSS(rankings='mine', backbone='tiny', benchmark='voc20', file=out, empty='all')
    voc = load_vocabulary('voc20_synonyms')
    head.bind(voc, TEMPLATES)
    expect = [ranked['classes'][voc.classes[c]][:4] or None for c in voc.query_to_class]
    assert head.experts() == expect and len(expect) == 30
    assert all(r['entropy'] >= 0 for rows in ranked['entropy_ranking'].values() for r in rows)
    assert cli.main(argv[:2] + ['--name', 'x', '--backbone', 'y', '--benchmark', 'voc20', '--num-images', '0']) == 2


def test_floss_over_any_config_through_cfg_options():
    from clearclip_seg.apis import init_segmentor
    from helpers import TINY_ARCH, TINY_NAME
    opts = {'model.clip.arch_file': TINY_ARCH, 'model.clip.arch': TINY_NAME, 'model.clip.pretrained': None,
            'model.text_head.type': 'FLOSS', 'model.text_head.rankings': 'naclip',
            'model.text_head.backbone': 'vit-b16'}
    model = init_segmentor(os.path.join(ROOT, config_path('sclip', 'vit-b16', 'context59')), device='cpu',
                           cfg_options=opts, build_text=False)
    ranked = load_rankings('naclip', 'vit-b16', 'context59')
    assert model.text_head.benchmark is None and model.text_head._bench == 'context59'
    assert model.text_head.experts() == [ranked[q] for q in model.vocabulary.queries]
    with pytest.raises(ValueError, match=r"benchmark='voc21': no naclip/vit-b16 rankings"):
        init_segmentor(os.path.join(ROOT, config_path('sclip', 'vit-b16', 'voc21')), device='cpu',
                       cfg_options=opts, build_text=False)


def test_dinoiser_maskclip_is_the_maskclip_preset_with_positions_resized_to_the_size():
    """Native grid: the LastBlock preset (identity, residual, FFN); other grids: positions by plain bicubic to
    the grid, everything else the same (checked against the preset on an encoder whose positions are swapped)."""
    from clearclip_seg.methods import build_method
    seg = tiny_segmentor()
    enc = seg.encoder
    ours = build_method(dict(type='MaskCLIPDinoiser'))
    preset = build_method(dict(type='LastBlock', attn='identity', residual=True, ffn=True))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 64, 64, generator=g)           # the tiny tower's native 4 x 4 grid
    with torch.no_grad():
        assert torch.equal(ours.features(enc, x), preset.features(enc, x))
        x = torch.randn(1, 3, 96, 128, generator=g)      # 6 x 8 patches
        got = ours.features(enc, x)
        dino = build_method(dict(type='MaskCLIPDinoiser', pos_interp='dino')).features(enc, x)
        assert torch.equal(dino, preset.features(enc, x)) and not torch.allclose(got, dino, atol=1e-3)
        pe = enc.visual.positional_embedding
        dim = pe.shape[-1]
        grid = pe[1:].reshape(1, 4, 4, dim).permute(0, 3, 1, 2)
        resized = F.interpolate(grid, size=(6, 8), mode='bicubic', align_corners=False)
        manual = torch.cat([pe[:1], resized.permute(0, 2, 3, 1).reshape(48, dim)])
        enc.pos_embed = lambda grid_, mode='dino': manual      # the preset, fed the bicubic-to-size positions
        assert torch.allclose(got, preset.features(enc, x), atol=1e-6)
    with pytest.raises(ValueError, match=r"model.method.pos_interp='x'"):
        build_method(dict(type='MaskCLIPDinoiser', pos_interp='x'))
