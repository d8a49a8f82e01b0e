"""The demo (``clearclip_seg.demo``) with the tiny random CLIP: overlays, panels, bad files skipped by name;
``tools/demo.py`` once as a subprocess."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, TINY_ARCH


def write_inputs(folder):
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(os.path.join(folder, 'a_street.png'))
    Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8)).save(os.path.join(folder, 'b_field.jpg'))
    with open(os.path.join(folder, 'c_broken.jpg'), 'wb') as f:
        f.write(b'this is not a jpeg' * 10)
    open(os.path.join(folder, 'd_empty.png'), 'wb').close()
    with open(os.path.join(folder, 'notes.txt'), 'w') as f:  # not an image extension: ignored
        f.write('x')


@pytest.fixture(scope='module')
def models():
    from clearclip_seg.demo import build_models
    return build_models(['clearclip', 'clip'], ['sky', 'grass', 'tree'], device='cpu', log=lambda m: None,
                        arch_file=TINY_ARCH, templates='a_photo_of')


def test_demo_draws_the_predictions_and_skips_bad_files(models, tmp_path):
    from clearclip_seg.apis import inference_segmentor, load_image
    from clearclip_seg.demo import collect_images, segment_images
    from clearclip_seg.protocol.constants import RESIZE
    from clearclip_seg.visualization import make_palette, overlay
    assert {p: m.precision for p, m in models.items()} == {'clearclip': 'fp32', 'clip': 'fp32'}  # auto on a CPU
    assert (models['clip'].method.attn, models['clip'].method.residual) == ('qk', True)
    inputs = tmp_path / 'in'
    write_inputs(inputs)
    paths, problems = collect_images([str(inputs)])
    assert [os.path.basename(p) for p in paths] == ['a_street.png', 'b_field.jpg', 'c_broken.jpg', 'd_empty.png']
    assert problems == []
    out = tmp_path / 'out'
    out.mkdir()
    lines = []
    assert segment_images(models, paths, str(out), log=lines.append) == (2, 2)
    expected = {f'{stem}_{kind}.png' for stem in ('a_street', 'b_field') for kind in ('clearclip', 'clip', 'panel')}
    assert set(os.listdir(out)) == expected
    palette = make_palette(3)
    for stem, ext, (h, w) in (('a_street', 'png', (40, 56)), ('b_field', 'jpg', (64, 48))):
        # the overlay is the image with the prediction at its original size blended in, a legend below
        result = inference_segmentor(models['clearclip'], str(inputs / f'{stem}.{ext}'), scale=RESIZE)
        labels = result.labels
        assert result.classes == ['sky', 'grass', 'tree']  # the class names come with the labels
        assert result.present() == [result.classes[i] for i in np.unique(labels)]
        rgb = np.ascontiguousarray(load_image(str(inputs / f'{stem}.{ext}'))[..., ::-1])
        over = np.asarray(Image.open(out / f'{stem}_clearclip.png'))
        assert over.shape[1] == w and over.shape[0] > h and over.shape[2] == 3
        assert np.array_equal(over[:h], overlay(rgb, labels, palette, 0.5))
        panel = np.asarray(Image.open(out / f'{stem}_panel.png'))
        assert panel.shape[1] >= 3 * w  # image | clearclip | clip
    for bad in ('c_broken.jpg', 'd_empty.png'):
        hits = [ln for ln in lines if bad in ln]
        assert len(hits) == 1 and hits[0].startswith(f'skipped {bad}: '), lines
    assert 'empty file' in [ln for ln in lines if 'd_empty.png' in ln][0]
    assert segment_images(models, paths[2:], str(out), log=lambda m: None) == (0, 2)  # the CLI then exits 1


@pytest.mark.slow  # a subprocess; the quick subset runs main() in-process (test_demo_bad_input_exit_2)
def test_demo_command_line(tmp_path):
    inputs = tmp_path / 'in'
    write_inputs(inputs)

    proc = subprocess.run([sys.executable, os.path.join(ROOT, 'tools', 'demo.py'), str(inputs / 'a_street.png'),
                           str(inputs / 'd_empty.png'), str(tmp_path / 'missing.jpg'), '--vocab', 'sky, grass , tree',
                           '--preset', 'clearclip,clip', 'sclip', '--out', str(tmp_path / 'out'),
                           '--arch-file', TINY_ARCH,
                           '--templates', 'a_photo_of', '--device', 'cpu'],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'vocabulary: 3 classes (sky, grass, tree)' in proc.stdout
    assert '1 image(s) segmented, 2 skipped' in proc.stdout and 'missing.jpg: no such file or folder' in proc.stdout
    assert sorted(os.listdir(tmp_path / 'out')) == ['a_street_clearclip.png', 'a_street_clip.png',
                                                    'a_street_panel.png', 'a_street_sclip.png']


def test_demo_bad_input_exit_2(tmp_path, capsys):
    import importlib.util
    spec = importlib.util.spec_from_file_location('_demo_tool', os.path.join(ROOT, 'tools', 'demo.py'))
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    for argv, says in (([str(tmp_path / 'x.jpg'), '--vocab', 'sky', '--method', 'sclip-stlye'],
                        "error: --method: unknown method 'sclip-stlye'"),
                       ([str(tmp_path / 'missing.jpg'), '--vocab', 'sky'], 'error: no images to segment'),
                       ([str(tmp_path), '--vocab', ' , '], 'error: --vocab is empty')):
        assert demo.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(says), err


def test_demo_helpers():
    from clearclip_seg.demo import output_stem, parse_class_list, parse_models
    assert parse_class_list(' cat,dog , ,grass ') == ['cat', 'dog', 'grass']
    assert parse_models(['clearclip,clip', 'sclip-style', 'clip']) == ['clearclip', 'clip', 'sclip-style']
    # presets, method cards and registered methods alike (the README's "--preset clearclip clip maskclip sclip")
    assert parse_models(['clearclip', 'clip', 'maskclip', 'sclip', 'NACLIP']) == \
        ['clearclip', 'clip', 'maskclip', 'sclip', 'NACLIP']
    with pytest.raises(ValueError, match="unknown method 'x.jpg'.*image paths go before --method"):
        parse_models(['x.jpg'])
    used = {}
    assert [output_stem(p, used) for p in ('a/x.jpg', 'b/x.png', 'y.jpg')] == ['x', 'x_2', 'y']


def test_demo_runs_method_cards_and_registered_methods():
    """A method card brings its method and its authors' windows, patch fit, logit scale, PAMR and resize;
    a registered method its default options under the protocol's windows."""
    from clearclip_seg.demo import build_models, demo_scales
    from clearclip_seg.protocol.methods import METHOD_CARDS
    models = build_models(['naclip', 'SCLIP'], ['sky', 'grass'], device='cpu', log=lambda m: None,
                          arch_file=TINY_ARCH, templates='a_photo_of')
    card = METHOD_CARDS['naclip']
    nac, sc = models['naclip'], models['SCLIP']
    assert nac.method.describe()['type'] == 'NACLIP' and nac.method.describe()['gaussian_std'] == 5.0
    assert list(nac.test_cfg['crop_size']) == [224, 224] and list(nac.test_cfg['stride']) == [112, 112]
    assert nac.test_cfg['patch_fit'] == 'truncate' and nac.logit_scale == card.defaults['logit_scale'] == 40.0
    assert nac.postprocess.describe()['type'] == 'PAMR'
    assert sc.method.describe()['type'] == 'SCLIP' and list(sc.test_cfg['crop_size']) == [448, 448]
    assert demo_scales(['naclip', 'SCLIP']) == {'naclip': (2048, 336), 'SCLIP': (2048, 448)}
    assert demo_scales(['naclip'], (100, 50)) == {'naclip': (100, 50)}
