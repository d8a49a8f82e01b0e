"""The dense-encoder contract: one abstract interface, sibling tower encoders, a tower registry.

Also: the packages a method author imports (``clearclip_seg.methods``,
``clearclip_seg.models``) load without MMSegmentation.
"""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from helpers import ROOT

# the stages a method may call, as declared abstract on DenseEncoder
STAGES = {'kind_of', 'check_tower', 'num_prefix_tokens', 'dtype', 'embed_dim', 'blocks', 'embed', 'run_blocks',
          'qkv', 'project_heads', 'ffn_branch', 'head', 'pooled'}


def test_methods_and_models_import_without_mmseg():
    code = ('import sys, clearclip_seg.methods, clearclip_seg.models; '
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('mmseg', 'mmcv', 'mmengine')); "
            'assert not bad, bad')
    proc = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_data_preprocessor_is_still_reachable_from_models():
    import clearclip_seg.models as models
    from clearclip_seg.models.data_preprocessor import ClearCLIPDataPreProcessor
    assert models.ClearCLIPDataPreProcessor is ClearCLIPDataPreProcessor
    with pytest.raises(AttributeError, match='no attribute'):
        models.NoSuchThing  # noqa: B018


def test_both_tower_encoders_are_siblings_implementing_the_interface():
    from clearclip_seg.models.dense_encoder import DenseEncoder
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    from clearclip_seg.models.timm_encoder import TimmCLIPEncoder
    assert DenseEncoder.__abstractmethods__ == STAGES
    for cls in (DenseCLIPEncoder, TimmCLIPEncoder):
        assert cls.__mro__[1] is DenseEncoder and not cls.__abstractmethods__
    assert not issubclass(TimmCLIPEncoder, DenseCLIPEncoder)
    with pytest.raises(TypeError, match='abstract'):
        DenseEncoder(nn.Module())


def test_tower_registry_maps_kinds_and_rejects_duplicates():
    from clearclip_seg.models import dense_encoder as de
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    from clearclip_seg.models.timm_encoder import TimmCLIPEncoder
    from clearclip_seg.models.towers import TOWER_ENCODERS
    assert TOWER_ENCODERS == de.tower_encoders() == {'openclip_vit': DenseCLIPEncoder, 'timm_vit': TimmCLIPEncoder,
                                                     'timm_eva': TimmCLIPEncoder}

    class Again(DenseCLIPEncoder):
        kinds = ('openclip_vit',)
    with pytest.raises(ValueError, match=r"tower kinds \['openclip_vit'\] of Again are already registered"):
        de.register_tower(Again)
    with pytest.raises(TypeError, match='DenseEncoder subclass'):
        de.register_tower(nn.Module)


def test_a_new_tower_kind_is_one_registered_class(tiny_clip, monkeypatch):
    """A new kind: a DenseEncoder subclass naming its kind and saying which towers it wraps."""
    from clearclip_seg.methods import build_method
    from clearclip_seg.models import dense_encoder as de
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    from clearclip_seg.models.towers import wrap_visual
    monkeypatch.setattr(de, '_TOWERS', list(de._TOWERS))  # registered for this test only

    class Marked(nn.Module):
        def __init__(self, visual):
            super().__init__()
            self.inner = visual

    @de.register_tower
    class MarkedEncoder(DenseCLIPEncoder):  # reuses the open_clip stages on the wrapped tower
        kinds = ('marked_vit',)

        def __init__(self, visual, fused_attn=True):
            super().__init__(visual.inner, fused_attn)

        @classmethod
        def kind_of(cls, visual):
            return 'marked_vit' if isinstance(visual, Marked) else None

        @classmethod
        def check_tower(cls, visual):
            super().check_tower(visual.inner if isinstance(visual, Marked) else visual)

    visual = tiny_clip[0].visual
    assert de.tower_kind(Marked(visual)) == 'marked_vit' and de.tower_kind(visual) == 'openclip_vit'
    enc = wrap_visual(Marked(visual))
    assert type(enc) is MarkedEncoder
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    method = build_method(dict(type='LastBlock'))
    with torch.no_grad():
        assert torch.equal(method.features(enc, x), method.features(wrap_visual(visual), x))
    with pytest.raises(TypeError, match="image tower Linear is not supported: expected one of .*'marked_vit'"):
        wrap_visual(nn.Linear(2, 2))


def test_encoders_hold_no_last_block_switches(tiny_clip):
    from clearclip_seg.models.encoder import DenseCLIPEncoder
    with pytest.raises(TypeError):
        DenseCLIPEncoder(tiny_clip[0].visual, attn='qk')  # switches are LastBlock's: passed per call
    enc = DenseCLIPEncoder(tiny_clip[0].visual)
    assert not {'attn_mode', 'residual', 'ffn'} & set(vars(enc))


def test_dense_method_declares_what_the_segmentor_reads():
    from clearclip_seg.methods import DenseMethod, build_method
    assert (DenseMethod.window_multiple, DenseMethod.shares_trunk, DenseMethod.needs_class_token) == (None, False,
                                                                                                    False)
    assert build_method(dict(type='LastBlock')).window_multiple is None
    assert build_method(dict(type='ProxyCLIP', vfm_pretrained=False)).window_multiple == 56


def test_segmentor_pads_windows_to_the_method_multiple():
    from helpers import tiny_segmentor
    seg = tiny_segmentor()
    seen = []
    real = seg.method.patch_logits

    def spy(encoder, x, text):
        seen.append(tuple(x.shape[-2:]))
        return real(encoder, x, text)
    seg.method.patch_logits = spy
    seg.method.window_multiple = 32  # a method's own multiple replaces the patch size (16: 48 here)
    seg.query_logits([torch.randn(3, 40, 40)])
    assert seen and all(h % 32 == 0 and w % 32 == 0 for h, w in seen)


def test_a_method_bound_to_one_tower_kind_refuses_others_in_one_line():
    from clearclip_seg.methods import build_method
    from clearclip_seg.models.clip_loader import create_clip
    from clearclip_seg.models.towers import wrap_visual
    torch.manual_seed(0)
    model, _ = create_clip(None, arch_file=os.path.join(ROOT, 'tests', 'assets', 'clearclip-tiny-rope.json'))
    enc = wrap_visual(model.visual)
    assert (enc.kind, enc.num_prefix_tokens) == ('timm_eva', 1)
    with pytest.raises(ValueError, match=r"model.method.type=GEM runs on \['openclip_vit'\] towers; "
                                         r"this tower is 'timm_eva' \(model.clip.arch\)"):
        build_method(dict(type='GEM', depth=2)).bind(enc)
