"""The one registry class behind methods and post-processors."""
import pytest

from clearclip_seg.methods import build_method, list_methods
from clearclip_seg.models.postprocess import build_postprocessor, list_postprocessors
from clearclip_seg.registry import Registry, keyword_options


def test_register_list_get_and_check():
    loaded = []
    reg = Registry('widget', 'model.widget', 'widget_name', load=lambda: loaded.append(1))

    @reg.register('b')
    class B:
        def __init__(self, size=1, *, key='model.widget', colour='red'):
            pass

    @reg.register('a')
    class A:
        pass

    assert reg.names() == ['a', 'b'] and loaded and B.widget_name == 'b'
    assert reg.get('b') is B
    assert keyword_options(B) == ['size', 'colour']
    with pytest.raises(ValueError, match=r"unknown widget 'c' \(model.widget.type\): expected one of \['a', 'b'\]"):
        reg.get('c')
    with pytest.raises(ValueError, match=r"model.other.type"):
        reg.get('c', 'model.other')
    with pytest.raises(KeyError, match="widget 'a' is registered twice"):
        reg.register('a')(type('Other', (), {}))
    reg.check_options(B, {'size': 2}, 'model.widget')
    with pytest.raises(ValueError, match='model.widget'):
        reg.check_options(B, {'sise': 2}, 'model.widget')


def test_methods_and_postprocessors_use_it():
    assert list_methods() == ['CLIPtrase', 'GEM', 'ITACLIP', 'LPOSS', 'LastBlock', 'MaskCLIPDinoiser', 'NACLIP',
                              'ProxyCLIP', 'ResCLIP', 'SCCLIP', 'SCLIP', 'Trident']
    assert list_postprocessors() == ['PAMR']
    with pytest.raises(ValueError, match=r"unknown method 'NoSuch' \(model.method.type\)"):
        build_method(dict(type='NoSuch'))
    with pytest.raises(ValueError, match=r"unknown post-processor 'NoSuch' \(model.postprocess.type\)"):
        build_postprocessor(dict(type='NoSuch'))
    with pytest.raises(ValueError, match=r'model.postprocess'):
        build_postprocessor(dict(type='PAMR', num_iters=10))
