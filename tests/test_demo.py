"""tools/demo.py with the tiny random CLIP: overlays, panels, bad files skipped by name."""
import importlib.util
import os

import numpy as np
from PIL import Image

from conftest import ROOT, TINY_ARCH


def load_demo():
    spec = importlib.util.spec_from_file_location('_tool_demo', os.path.join(ROOT, 'tools', 'demo.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def test_demo_two_presets_skips_bad_files(tmp_path, capsys):
    inputs = tmp_path / 'in'
    write_inputs(inputs)
    out = tmp_path / 'out'
    demo = load_demo()
    rc = demo.main([str(inputs), '--vocab', 'sky, grass , tree', '--preset', 'clearclip', 'clip',
                    '--arch-file', TINY_ARCH, '--templates', 'a_photo_of', '--device', 'cpu',
                    '--out', str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0, stdout
    expected = {f'{stem}_{kind}.png' for stem in ('a_street', 'b_field') for kind in ('clearclip', 'clip', 'panel')}
    assert set(os.listdir(out)) == expected
    # overlays keep the original image (predictions at the original size) with a legend below
    for stem, (h, w) in (('a_street', (40, 56)), ('b_field', (64, 48))):
        over = np.asarray(Image.open(out / f'{stem}_clearclip.png'))
        assert over.shape[1] == w and over.shape[0] > h and over.shape[2] == 3
        panel = np.asarray(Image.open(out / f'{stem}_panel.png'))
        assert panel.shape[1] >= 3 * w  # image | clearclip | clip
    lines = stdout.splitlines()
    for bad in ('c_broken.jpg', 'd_empty.png'):
        hits = [ln for ln in lines if bad in ln]
        assert len(hits) == 1 and hits[0].startswith('skipped'), stdout
    assert 'notes.txt' not in stdout
    assert '2 image(s) segmented, 2 skipped' in stdout
    assert 'vocabulary: 3 classes (sky, grass, tree)' in stdout


def test_demo_exit_code_when_nothing_succeeds(tmp_path, capsys):
    bad = tmp_path / 'bad.png'
    bad.write_bytes(b'')
    demo = load_demo()
    rc = demo.main([str(bad), str(tmp_path / 'missing.jpg'), '--vocab', 'cat, dog', '--arch-file', TINY_ARCH,
                    '--templates', 'a_photo_of', '--device', 'cpu', '--out', str(tmp_path / 'out')])
    stdout = capsys.readouterr().out
    assert rc == 1
    assert 'skipped bad.png: empty file' in stdout and 'missing.jpg' in stdout


def test_demo_helpers():
    demo = load_demo()
    assert demo.parse_class_list(' cat,dog , ,grass ') == ['cat', 'dog', 'grass']
    assert demo.parse_presets(['clearclip,clip', 'sclip-style', 'clip']) == ['clearclip', 'clip', 'sclip-style']
    used = {}
    assert [demo.output_stem(p, used) for p in ('a/x.jpg', 'b/x.png', 'y.jpg')] == ['x', 'x_2', 'y']
