"""ClearCLIPSegmentor: text classifier, classification rule, batching, errors."""
import os

import pytest
import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from clearclip_seg.segmentor import ClearCLIPSegmentor
from clearclip_seg.vocab import load_templates, load_vocabulary

MEAN = [122.771, 116.746, 104.094]
STD = [68.501, 66.632, 70.323]


def make_segmentor(tiny_arch, **kw):
    torch.manual_seed(0)
    cfg = dict(clip=dict(arch=None, arch_file=tiny_arch, precision='fp32'), vocabulary='voc21',
               data_preprocessor=dict(type='ClearCLIPDataPreProcessor', mean=MEAN, std=STD, bgr_to_rgb=True),
               test_cfg=dict(mode='slide', crop_size=(64, 64), stride=(32, 32)))
    cfg.update(kw)
    return ClearCLIPSegmentor(**cfg).eval()


def test_text_classifier_matches_protocol_and_cache(tiny_arch, tmp_path, monkeypatch):
    import open_clip
    seg = make_segmentor(tiny_arch, vocabulary=['background', 'cat, kitty', 'dog'],
                         templates=['a photo of a {}.', 'art of the {}.'], text_cache=str(tmp_path))
    emb = seg.build_text_classifier()
    assert emb.shape == (4, 32)
    model = seg._text_model[0]
    tok = open_clip.get_tokenizer(seg.arch)
    for i, q in enumerate(['background', 'cat', 'kitty', 'dog']):
        e = F.normalize(model.encode_text(tok([f'a photo of a {q}.', f'art of the {q}.'])), dim=-1)
        torch.testing.assert_close(emb[i], F.normalize(e.mean(0), dim=0), rtol=1e-5, atol=1e-6)
    assert len(os.listdir(tmp_path)) == 1
    # a second segmentor with the same weights reads the cache and encodes nothing
    seg2 = make_segmentor(tiny_arch, vocabulary=['background', 'cat, kitty', 'dog'],
                          templates=['a photo of a {}.', 'art of the {}.'], text_cache=str(tmp_path))
    monkeypatch.setattr('clearclip_seg.models.text_classifier.encode_queries',
                        lambda *a, **k: pytest.fail('cache miss'))
    torch.testing.assert_close(seg2.build_text_classifier(), emb)


def test_default_templates_are_openai_80():
    t = load_templates('openai_imagenet')
    assert len(t) == 80 and t[0] == 'a bad photo of a {}.'


def test_classify_synonyms_and_prob_thd(tiny_arch):
    seg = make_segmentor(tiny_arch, vocabulary=['background', 'cat, kitty', 'dog'], prob_thd=0.5,
                         logit_scale=50.0)
    # 4 queries x 1 x 3 pixels
    logits = torch.tensor([[0.0, 0.0, 0.0],      # background
                           [0.1, 0.0, 0.0],      # cat
                           [0.0, 0.1, 0.0],      # kitty
                           [0.0, 0.0, 0.001]]).view(4, 1, 3)
    probs, labels = seg.classify(logits)
    p = torch.softmax(logits * 50, dim=0)
    expected = torch.stack([p[0], torch.maximum(p[1], p[2]), p[3]])
    torch.testing.assert_close(probs, expected)
    # pixels 0 and 1: cat (via either synonym); pixel 2: dog wins but is unsure -> background
    assert labels.flatten().tolist() == [1, 1, 0]


def _sample(h, w, ori):
    s = SegDataSample()
    s.set_metainfo(dict(img_shape=(h, w), ori_shape=ori))
    return s


def test_batch_equals_one_at_a_time_and_original_size(tiny_arch):
    seg = make_segmentor(tiny_arch)
    g = torch.Generator().manual_seed(3)
    imgs = [torch.randn(3, 70, 100, generator=g), torch.randn(3, 48, 130, generator=g)]
    oris = [(35, 50), (60, 160)]
    batch = seg.predict(imgs, [_sample(70, 100, oris[0]), _sample(48, 130, oris[1])])
    for img, ori, b in zip(imgs, oris, batch):
        one = seg.predict([img], [_sample(*img.shape[-2:], ori)])[0]
        assert b.pred_sem_seg.data.shape == (1, *ori)
        assert b.seg_logits.data.shape == (21, *ori)
        torch.testing.assert_close(b.seg_logits.data, one.seg_logits.data, rtol=1e-5, atol=1e-6)
        assert torch.equal(b.pred_sem_seg.data, one.pred_sem_seg.data)


def test_predictions_follow_resize_then_softmax(tiny_arch):
    seg = make_segmentor(tiny_arch, prob_thd=0.1)
    img = torch.randn(3, 64, 96, generator=torch.Generator().manual_seed(5))
    q = seg.query_logits([img])[0]
    out = seg.predict([img], [_sample(64, 96, (40, 41))])[0]
    resized = F.interpolate(q[None], size=(40, 41), mode='bilinear', align_corners=False)[0]
    probs = torch.softmax(resized * 50, 0)
    top, lab = probs.max(0)
    lab[top < 0.1] = 0
    assert torch.equal(out.pred_sem_seg.data[0], lab)


def test_clear_errors(tiny_arch, tmp_path):
    empty = tmp_path / 'empty.txt'
    empty.write_text('\n  \n')
    with pytest.raises(ValueError, match='empty'):
        load_vocabulary(str(empty))
    with pytest.raises(FileNotFoundError, match="vocabulary 'nope.txt' not found"):
        load_vocabulary('nope.txt')
    with pytest.raises(ValueError, match=r"unknown CLIP architecture 'ViT-Z-99' \(model.clip.arch\)"):
        ClearCLIPSegmentor(clip=dict(arch='ViT-Z-99'))
    with pytest.raises(ValueError, match=r"unknown pretrained tag 'nope' for 'ViT-B-16'"):
        ClearCLIPSegmentor(clip=dict(arch='ViT-B-16', pretrained='nope'))
    with pytest.raises(FileNotFoundError, match="checkpoint file '/no/such.pt'"):
        ClearCLIPSegmentor(clip=dict(arch='ViT-B-16', pretrained='/no/such.pt'))
    with pytest.raises(ValueError, match='model.last_block.attn'):
        make_segmentor(tiny_arch, last_block=dict(attn='qv'))
    with pytest.raises(ValueError, match='unknown keys'):
        make_segmentor(tiny_arch, last_block=dict(atn='qq'))


def test_local_checkpoint_roundtrip(tiny_arch, tmp_path):
    """Weights saved to a local file and reloaded through model.clip.pretrained."""
    seg = make_segmentor(tiny_arch)
    path = tmp_path / 'tiny.pt'
    torch.save(seg._text_model[0].state_dict(), path)
    torch.manual_seed(123)  # different random init: the file must win
    seg2 = ClearCLIPSegmentor(clip=dict(arch='clearclip-tiny-vit', pretrained=str(path)), vocabulary='voc21',
                              test_cfg=dict(mode='whole'))
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(seg2.encoder(x), seg.encoder(x))
    import hashlib  # a local checkpoint is identified by its content
    assert seg2.text_cache_key()['weights'] == 'sha256:' + hashlib.sha256(path.read_bytes()).hexdigest()


def test_auto_max_windows_by_device_and_precision():
    """'auto' windows per batch: 16 on a GPU, 1 for fp32 on a CPU, 4 for bf16/fp16 on a CPU; numbers pass through."""
    from clearclip_seg.segmentor_options import AUTO_MAX_WINDOWS, resolve_max_windows
    assert AUTO_MAX_WINDOWS == dict(cuda=16, cpu=1, cpu_low_precision=4)
    assert resolve_max_windows('auto', 'cpu', torch.float32) == 1
    assert resolve_max_windows('auto', 'cpu', torch.bfloat16) == 4
    assert resolve_max_windows('auto', torch.device('cpu'), torch.float16) == 4
    assert resolve_max_windows('auto', 'cuda', torch.float16) == 16
    assert resolve_max_windows(3, 'cpu', torch.bfloat16) == 3
    with pytest.raises(ValueError, match='model.test_cfg.max_windows'):
        resolve_max_windows(0, 'cpu', torch.float32)
