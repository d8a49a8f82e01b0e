"""Extension points (docs/extending.md): a benchmark is one entry, a suite is one registered function."""
import json
import os
import subprocess
import sys

import pytest

from clearclip_seg import suites
from clearclip_seg.protocol.benchmarks import BENCHMARKS
from clearclip_seg.protocol.methods import METHOD_CARDS, PROXYCLIP_VOCABULARIES, SCLIP_FAMILY_VOCABULARIES
from clearclip_seg.protocol.presets import PRESETS
from helpers import ROOT


def test_benchmark_entries_name_their_data_prep_step():
    from clearclip_seg.data_prep import STEPS
    steps = {k: b.prepare_step for k, b in BENCHMARKS.items()}
    assert steps == {'voc21': 'voc', 'voc20': 'voc', 'context60': 'context', 'context59': 'context',
                     'coco_object': 'coco_object', 'coco_stuff164k': 'coco_stuff164k',
                     'cityscapes': 'cityscapes', 'ade20k': 'ade20k'}
    assert set(steps.values()) <= set(STEPS)
    assert BENCHMARKS['voc20'].prepare == 'python tools/prepare_data.py voc'


@pytest.mark.skipif(sys.version_info < (3, 10), reason='keyword-only dataclass fields need Python 3.10')
def test_benchmark_entries_are_keyword_only():
    from clearclip_seg.protocol.benchmarks import Benchmark
    with pytest.raises(TypeError, match='positional'):
        Benchmark('toybench', 'ToyBench')


def test_method_vocabularies_come_from_the_entries():
    # typed from the shipped class files (clearclip_seg/vocabularies/), not read from the entries
    assert SCLIP_FAMILY_VOCABULARIES == {
        'voc21': 'voc21_bg26', 'voc20': 'voc20_synonyms', 'coco_object': 'coco_object_bg26',
        'context60': 'context60', 'context59': 'context59', 'coco_stuff164k': 'coco_stuff164k',
        'cityscapes': 'cityscapes', 'ade20k': 'ade20k'}
    assert PROXYCLIP_VOCABULARIES == {k: f'proxyclip/{k}.semicolon' for k in
                                      ('voc21', 'voc20', 'context60', 'context59', 'coco_object',
                                       'coco_stuff164k', 'cityscapes', 'ade20k')}
    assert BENCHMARKS['voc21'].vocabulary_for(None) == 'voc21'
    assert BENCHMARKS['voc21'].vocabulary_for('no-such-family') == 'voc21'


# A ninth benchmark added the way docs/extending.md says: one entry, nothing else edited.
_NEW_BENCHMARK = '''
import json
from clearclip_seg.protocol import benchmarks as B
B.BENCHMARKS['toybench'] = B.Benchmark(
    key='toybench', title='ToyBench', data_root='data/toy', img_dir='img',
    ann_dir='ann', img_suffix='.jpg', seg_map_suffix='_lbl.png', ann_file='val.txt', num_images=7,
    num_classes=30, label_values=(0, 29), prob_thd=0.25, vocabulary='ade20k', background=False,
    prepare_step='ade20k', typical_size=(100, 200), crop=224, stride=112,
    method_vocabularies=dict(sclip='voc20_synonyms'), published={('vit-b16', 'clearclip'): 12.3})
from clearclip_seg.protocol import published, render
from clearclip_seg.protocol.constants import config_path
files = render.expected_files()
print(json.dumps(dict(
    new=sorted(p for p in files if 'toybench' in p),
    dataset=files['configs/_base_/datasets/toybench.py'],
    clearclip=files[config_path('clearclip', 'vit-b16', 'toybench')],
    sclip=files[config_path('sclip', 'vit-b16', 'toybench')],
    proxyclip=files[config_path('proxyclip', 'vit-b16', 'toybench')],
    published=published.published_miou('vit-b16', 'clearclip', 'toybench'))))
'''


@pytest.mark.slow  # renders every config of the new entry in a subprocess; its end-to-end run stays quick
def test_a_new_benchmark_is_one_entry():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.run([sys.executable, '-c', _NEW_BENCHMARK], cwd=ROOT, env=env, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    expected = ['configs/_base_/datasets/toybench.py']
    expected += [f'configs/{p}/{p}_{bb}_toybench.py' for p, preset in PRESETS.items() for bb in preset.backbones]
    # a card limited to its authors' benchmarks (FLOSS: the rankings' five) makes none for a new one
    expected += [f'configs/{c}/{c}_{bb}_toybench.py' for c, card in METHOD_CARDS.items() for bb in card.backbones
                 if card.benchmarks is None]
    assert out['new'] == sorted(expected)
    ds = out['dataset']
    for line in ("data_root = 'data/toy'", "data_prefix=dict(img_path='img', seg_map_path='ann'),",
                 "ann_file='val.txt',", "seg_map_suffix='_lbl.png',", "dataset_type = 'BenchmarkDataset'",
                 "benchmark=benchmark,"):
        assert line in ds, line
    assert "vocabulary='ade20k'," in out['clearclip'] and 'prob_thd=0.25,' in out['clearclip']
    assert 'crop_size=(224, 224), stride=(112, 112)' in out['clearclip']
    assert "vocabulary='voc20_synonyms'," in out['sclip']   # its method family's class file
    assert "vocabulary='ade20k'," in out['proxyclip']       # no ProxyCLIP file listed: its own
    assert out['published'] == 12.3


def test_a_suite_is_one_registered_function():
    assert list(suites.SUITES) == ['main', 'baselines', 'ablation', 'backbones', 'methods', 'methods-common',
                                   'methods-common-pamr', 'floss', 'floss-common']
    counts = {s: len(suites.suite_runs(s)) for s in suites.SUITES}
    from clearclip_seg.protocol.methods import DENSE_CARDS, FLOSS_BENCHMARKS, METHOD_CARDS
    per_suite = 8 * (1 + len(DENSE_CARDS))   # ClearCLIP and every dense method card on the eight benchmarks
    floss_cards = [c for c in METHOD_CARDS if c not in DENSE_CARDS]
    with_head = [c for c in DENSE_CARDS if c not in ('lposs', 'lposs-plus', 'trident', 'cliptrase')]
    assert counts == {'main': 16, 'baselines': 40, 'ablation': 100, 'backbones': 288, 'methods': per_suite,
                      'methods-common': per_suite, 'methods-common-pamr': per_suite,
                      'floss': 5 * len(floss_cards), 'floss-common': 5 * 2 * (1 + len(with_head))}

    @suites.register_suite('toy-suite', benchmarks=('voc20', 'ade20k', 'voc21'))
    def toy(benchmarks):
        return suites.preset_runs(['clip'], ['vit-b16'], benchmarks)
    try:
        assert 'toy-suite' in suites.SUITES
        assert [r.name for r in suites.suite_runs('toy-suite')] == [
            'clip_vit-b16_voc20', 'clip_vit-b16_ade20k', 'clip_vit-b16_voc21']
        assert [r.benchmark for r in suites.suite_runs('toy-suite', ['voc21', 'voc20'])] == ['voc20', 'voc21']
        with pytest.raises(ValueError, match="suite 'toy-suite' is registered twice"):
            suites.register_suite('toy-suite')(toy)
    finally:
        del suites.SUITE_BUILDERS['toy-suite']
    with pytest.raises(KeyError, match="unknown suite 'toy-suite'"):
        suites.suite_runs('toy-suite')


@pytest.mark.slow
def test_a_new_benchmark_runs_end_to_end_with_the_generic_dataset(tmp_path, monkeypatch):
    """A benchmark entry with no dataset class and no step of its own: its generated configs run on
    synthetic data in its layout and score the same mIoU as an independent confusion matrix."""
    import shutil

    from clearclip_seg.apis import evaluate
    from clearclip_seg.protocol import benchmarks, render
    from clearclip_seg.synthetic import write_benchmark
    from helpers import confusion_miou, tiny_cfg_options
    entry = benchmarks.Benchmark(
        key='toybench', title='ToyBench', data_root='data/toy', img_dir='pictures', ann_dir='masks',
        img_suffix='.jpg', seg_map_suffix='_mask.png', ann_file='splits/val.txt', num_images=3, num_classes=19,
        label_values=(0, 18), prob_thd=0.0, vocabulary='cityscapes', background=False, prepare_step='ade20k',
        typical_size=(60, 80), crop=64, stride=32)
    monkeypatch.setitem(benchmarks.BENCHMARKS, 'toybench', entry)
    configs = tmp_path / 'configs'
    shutil.copytree(os.path.join(ROOT, 'configs', '_base_'), configs / '_base_')
    (configs / '_base_' / 'datasets' / 'toybench.py').write_text(render.dataset_config(entry))
    (configs / 'clearclip').mkdir()
    leaf = configs / 'clearclip' / 'clearclip_vit-b16_toybench.py'
    leaf.write_text(render.leaf_config('clearclip', 'vit-b16', entry))
    root = tmp_path / 'toy'
    ids = write_benchmark('toybench', str(root), sizes=((50, 70), (90, 40), (64, 64)), seed=3)
    preds = tmp_path / 'preds'
    rec = evaluate(str(leaf), tiny_cfg_options(root, **{'test_evaluator.output_dir': str(preds),
                                                        'model.templates': 'a_photo_of'}),
                   work_dir=str(tmp_path / 'w'))
    assert rec['benchmark'] == 'toybench' and rec['dataset']['num_images'] == len(ids) == 3
    assert rec['dataset']['classes'][:3] == ['road', 'sidewalk', 'building']   # cityscapes.txt, in order
    assert len(rec['dataset']['classes']) == 19
    pairs = [(str(preds / f'{i}.png'), str(root / 'masks' / f'{i}_mask.png')) for i in ids]
    assert rec['metrics']['mIoU'] == pytest.approx(confusion_miou(pairs, 19)[0], abs=1e-6)
