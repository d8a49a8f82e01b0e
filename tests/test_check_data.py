"""Data checks (``clearclip_seg.data_check``) on small synthetic datasets in the real layouts;
``tools/check_data.py`` once as a subprocess.

CPU only, no network, no mmseg.
"""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clearclip_seg import data_check as C
from clearclip_seg.protocol.benchmarks import get_benchmark

REPO = Path(__file__).resolve().parents[1]

H, W = 6, 8


def _jpg(path: Path, h: int = H, w: int = W) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(path)


def _png(path: Path, array, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(array, dtype=np.uint8), mode='L')
    if palette:  # VOC labels are palette PNGs
        im = im.convert('P')
        im.putpalette([v for i in range(256) for v in (i, i, i)])
    im.save(path)


def _label(*values) -> np.ndarray:
    a = np.zeros((H, W), np.uint8)
    for i, v in enumerate(values):
        a[i % H, i // H] = v
    return a


def make_voc(root: Path, ids=('2007_000033', '2007_000042', '2007_000061')) -> Path:
    """A VOC2012-layout set: JPEGImages, SegmentationClass, ImageSets/Segmentation/val.txt."""
    b = get_benchmark('voc21')
    for k, i in enumerate(ids):
        _jpg(root / b.img_dir / f'{i}{b.img_suffix}')
        _png(root / b.ann_dir / f'{i}{b.seg_map_suffix}', _label(0, 20, 255, k), palette=True)
    split = root / b.ann_file
    split.parent.mkdir(parents=True, exist_ok=True)
    split.write_text(''.join(i + '\n' for i in ids))
    _jpg(root / b.img_dir / '2008_000001.jpg')  # an image not in the split: not counted
    return root


def make_coco_object(root: Path, n: int = 3) -> Path:
    b = get_benchmark('coco_object')
    for k in range(n):
        stem = f'{139 + k:012d}'
        _jpg(root / b.img_dir / f'{stem}{b.img_suffix}')
        _png(root / b.ann_dir / f'{stem}{b.seg_map_suffix}', _label(0, 80, k + 1))
        # the COCO-Stuff labels live in the same folder and must not disturb the check
        _png(root / b.ann_dir / f'{stem}_labelTrainIds.png', _label(170, 255))
    return root


def test_voc_correct_set_passes(tmp_path):
    root = make_voc(tmp_path / 'VOC2012')
    assert C.check_benchmark('voc21', root, expected_count=3) == []
    assert C.check_benchmark('voc20', root, expected_count=3) == []
    problems, stats = C.run_check('voc21', root, expected_count=3)
    assert stats.images == 3 and stats.labels_checked == 3 and {0, 20, 255} <= stats.values_seen


def test_voc_wrong_count(tmp_path):
    root = make_voc(tmp_path / 'VOC2012')
    problems = C.check_benchmark('voc21', root)  # the table expects 1449
    assert len(problems) == 1
    assert 'found 3 ids in ImageSets/Segmentation/val.txt, expected 1449' in problems[0]


def test_voc_missing_label_and_image(tmp_path):
    root = make_voc(tmp_path / 'VOC2012')
    (root / 'SegmentationClass' / '2007_000042.png').unlink()
    (root / 'JPEGImages' / '2007_000061.jpg').unlink()
    problems = C.check_benchmark('voc21', root, expected_count=3)
    text = '\n'.join(problems)
    assert len(problems) == 2, text
    assert '1 images have no label file' in text and '2007_000042.png' in text
    assert '1 images listed in ImageSets/Segmentation/val.txt are missing' in text and '2007_000061.jpg' in text


def test_voc_out_of_range_value(tmp_path):
    root = make_voc(tmp_path / 'VOC2012')
    _png(root / 'SegmentationClass' / '2007_000033.png', _label(0, 21, 254), palette=True)
    problems = C.check_benchmark('voc21', root, expected_count=3)
    assert len(problems) == 1
    assert '2007_000033.png' in problems[0] and '[21, 254]' in problems[0] and '0..20 and 255' in problems[0]


def test_size_mismatch_and_rgb_label(tmp_path):
    root = make_voc(tmp_path / 'VOC2012')
    _png(root / 'SegmentationClass' / '2007_000033.png', np.zeros((H + 1, W), np.uint8))
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / 'SegmentationClass' / '2007_000042.png')
    text = '\n'.join(C.check_benchmark('voc21', root, expected_count=3))
    assert 'differ in size' in text and '2007_000033.png' in text
    assert 'not single-channel' in text and '2007_000042.png' in text


def test_max_files_samples_labels(tmp_path):
    root = make_voc(tmp_path / 'VOC2012')
    _, stats = C.run_check('voc21', root, expected_count=3, max_files=1)
    assert stats.labels_checked == 1
    # existence is still checked for every file
    (root / 'SegmentationClass' / '2007_000061.png').unlink()
    assert any('no label file' in p for p in C.check_benchmark('voc21', root, expected_count=3, max_files=1))
    for bad in (0, -1, True, 1.5):  # reading no labels and saying OK would hide every problem
        with pytest.raises(ValueError, match=f'max_files={bad!r}: expected a positive number'):
            C.run_check('voc21', root, expected_count=3, max_files=bad)


def test_missing_root_and_split(tmp_path):
    problems = C.check_benchmark('context60', tmp_path / 'nowhere')
    assert len(problems) == 1 and 'does not exist' in problems[0] and 'prepare_data.py context' in problems[0]
    root = make_voc(tmp_path / 'VOC2012')
    (root / 'ImageSets' / 'Segmentation' / 'val.txt').unlink()
    assert 'split file' in C.check_benchmark('voc21', root, expected_count=3)[0]


def test_coco_object_set(tmp_path):
    root = make_coco_object(tmp_path / 'coco_stuff164k')
    assert C.check_benchmark('coco_object', root, expected_count=3) == []
    assert C.check_benchmark('coco_stuff164k', root, expected_count=3) == []
    # COCO-Object ignores nothing: 255 is out of range, and so is 81
    _png(root / 'annotations/val2017/000000000140_instanceTrainIds.png', _label(0, 255, 81))
    problems = C.check_benchmark('coco_object', root, expected_count=3)
    assert len(problems) == 1 and '000000000140_instanceTrainIds.png' in problems[0]
    assert '[81, 255]' in problems[0] and 'outside 0..80 (' in problems[0]
    # a missing instance label
    (root / 'annotations/val2017/000000000141_instanceTrainIds.png').unlink()
    text = '\n'.join(C.check_benchmark('coco_object', root, expected_count=3))
    assert '000000000141_instanceTrainIds.png' in text and 'no label file' in text


def test_cityscapes_nested_layout(tmp_path):
    root = tmp_path / 'cityscapes'
    for city, name in [('frankfurt', 'frankfurt_000000_000294'), ('lindau', 'lindau_000000_000019')]:
        _png(root / 'leftImg8bit/val' / city / f'{name}_leftImg8bit.png', np.zeros((H, W), np.uint8))
        _png(root / 'gtFine/val' / city / f'{name}_gtFine_labelTrainIds.png', _label(0, 18, 255))
        _png(root / 'gtFine/val' / city / f'{name}_gtFine_labelIds.png', _label(33))  # ignored
    assert C.check_benchmark('cityscapes', root, expected_count=2) == []
    assert 'expected 500' in C.check_benchmark('cityscapes', root)[0]


def test_cli_verdicts_and_exit_codes(tmp_path):
    def check(*argv):
        return subprocess.run([sys.executable, str(REPO / 'tools' / 'check_data.py'), *argv, '--nproc', '1'],
                              capture_output=True, text=True, timeout=120)
    good = make_voc(tmp_path / 'good')
    bad = make_voc(tmp_path / 'bad')
    (bad / 'SegmentationClass' / '2007_000033.png').unlink()
    proc = check('voc21', '--data-root-override', f'voc21={good}', '--expected-count', '3')
    assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1].startswith('voc21: OK (3 images')
    proc = check('voc21', 'voc20', '--data-root-override', f'voc21={good}', '--data-root-override', f'voc20={bad}',
                 '--expected-count', '3')
    assert proc.returncode == 1
    assert 'voc21: OK' in proc.stdout and 'voc20: FAILED (1 problem)' in proc.stdout
    assert '2007_000033.png' in proc.stdout
    # --data-root: the benchmark roots go under it, as under data/
    data = tmp_path / 'data'
    make_coco_object(data / 'coco_stuff164k')
    assert check('coco_object', '--data-root', str(data), '--expected-count', '3').returncode == 0
    proc = check('nonsense')
    assert proc.returncode == 2 and proc.stderr.startswith('error: unknown benchmark(s) nonsense')
    proc = check('voc21', '--data-root-override', 'voc21')
    assert proc.returncode != 0 and "expected KEY=PATH" in proc.stderr


def test_data_readme_matches_the_table():
    from clearclip_seg.protocol.benchmarks import BENCHMARKS
    text = (REPO / 'data' / 'README.md').read_text()
    for b in BENCHMARKS.values():
        for piece in (b.data_root, b.img_dir, b.ann_dir, b.seg_map_suffix, str(b.num_images), b.prepare):
            assert piece in text, f'data/README.md does not mention {piece!r} ({b.key})'
        if b.ann_file:
            assert b.ann_file in text
        lo, hi = b.label_values
        assert f'{lo}..{hi}' in text


def _check_data_main():
    import importlib.util
    spec = importlib.util.spec_from_file_location('_check_data_cli', REPO / 'tools' / 'check_data.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize('args,named', [
    (['--max-files', '0'], '--max-files 0: expected a positive number (omit it to read every label)'),
    (['--max-files', '-3'], '--max-files -3: expected a positive number'),
    (['--nproc', '0'], '--nproc 0: expected a positive number'),
    (['--expected-count', '-1'], '--expected-count -1: expected a count >= 0'),
    (['--data-root-override', 'voc21'], "--data-root-override 'voc21': expected KEY=PATH"),
])
def test_cli_usage_mistakes_are_one_line_exit_2(tmp_path, capsys, args, named):
    make_voc(tmp_path / 'VOC2012')
    code = _check_data_main()(['voc21', '--data-root-override', f'voc21={tmp_path / "VOC2012"}', *args])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith(f'error: {named}'), captured
    assert len(captured.err.splitlines()) == 1 and captured.out == ''


def test_wide_labels_split_mistakes_and_oriented_images(tmp_path):
    root = make_voc(tmp_path / 'VOC2012')
    wide = np.zeros((H, W), np.uint16)
    wide[1, 1], wide[2, 2] = 261, 20
    Image.fromarray(wide).save(root / 'SegmentationClass' / '2007_000033.png')  # 16-bit: 261 stays 261
    split = root / 'ImageSets' / 'Segmentation' / 'val.txt'
    split.write_text('2007_000033\n2007_000042 \n2007_000061\n2007_000042\n')
    img = root / 'JPEGImages' / '2007_000061.jpg'
    with Image.open(img) as im:
        exif = im.getexif()
        exif[0x0112] = 8
        im.save(img, exif=exif.tobytes())
    problems = C.check_benchmark('voc21', root, expected_count=3)
    text = '\n'.join(problems)
    assert len(problems) == 3, text
    assert "split file ImageSets/Segmentation/val.txt lists id '2007_000042' twice (lines 2 and 4)" in text
    assert '1 of 3 label files hold values outside 0..20 and 255 (all such values: [261])' in text
    assert '1 images carry an EXIF orientation tag' in text and '2007_000061.jpg (orientation 8)' in text
    split.write_text('2007_000033\n\n2007_000042\n2007_000061\n')
    assert 'has 1 blank line (line 2)' in '\n'.join(C.check_benchmark('voc21', root, expected_count=3))


def test_labels_with_nothing_to_score(tmp_path):
    root = make_voc(tmp_path / 'VOC2012')
    for name in ('2007_000033', '2007_000042', '2007_000061'):
        _png(root / 'SegmentationClass' / f'{name}.png', np.full((H, W), 255), palette=True)
    assert C.check_benchmark('voc21', root, expected_count=3) == [
        'none of the 3 label files read holds a pixel to score (only 255): '
        'tools/test.py refuses a benchmark with nothing to score']
    _png(root / 'SegmentationClass' / '2007_000061.png', _label(0, 255), palette=True)  # one background pixel
    assert C.check_benchmark('voc21', root, expected_count=3) == []
    assert 'holds a pixel to score' in C.check_benchmark('voc20', root, expected_count=3)[0]  # 0 is not scored


def test_image_listing_follows_folders_as_mmseg_and_refuses_loops(tmp_path):
    img = tmp_path / 'img'
    for rel in ('a.jpg', 'sub/b.jpg', '.hidden/c.jpg', 'sub/.d.jpg', 'sub/e.png'):
        (img / rel).parent.mkdir(parents=True, exist_ok=True)
        (img / rel).write_bytes(b'x')
    other = tmp_path / 'other'
    other.mkdir()
    (other / 'f.jpg').write_bytes(b'x')
    (img / 'linked').symlink_to(other)  # a link to a folder elsewhere is followed, as MMSeg does
    assert C.list_images(img, '.jpg') == ['.hidden/c', 'a', 'linked/f', 'sub/b']
    (img / 'sub' / 'up').symlink_to('..')
    with pytest.raises(C.DataLayoutError, match=r"'.*/img/sub/up' is a symbolic link to '.*/img', a folder above"):
        C.list_images(img, '.jpg')
