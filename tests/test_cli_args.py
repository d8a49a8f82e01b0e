"""The tools agree on their shared options: ``--data-root`` (a data folder, or KEY=PATH) means the same in
tools/benchmark.py, tools/check_data.py and tools/prepare_data.py; ``--help`` lists the registered suites;
bad input is exit code 2 with one line."""
import importlib.util
import os
import sys

import pytest

from clearclip_seg.cli_args import parse_data_roots, under_data_dir
from helpers import ROOT, make_voc2012


def load_tool(name):
    if name == 'check_data':  # imported by its name: its worker processes unpickle functions by module
        sys.path.insert(0, os.path.join(ROOT, 'tools'))
        import check_data
        return check_data
    spec = importlib.util.spec_from_file_location(f'_cli_args_{name}', os.path.join(ROOT, 'tools', f'{name}.py'))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    """A data folder holding the VOC2012 layout (two tiny images), and a second copy elsewhere."""
    base = tmp_path_factory.mktemp('cli')
    make_voc2012(str(base / 'data' / 'VOCdevkit' / 'VOC2012'), sizes=((40, 40), (48, 56)))
    make_voc2012(str(base / 'elsewhere' / 'VOC2012'), sizes=((40, 40),))
    return base


def test_parse_data_roots():
    assert parse_data_roots(['/d', 'voc21=/x/VOC2012'], ['ade20k=rel/ade']) == \
        ('/d', {'voc21': '/x/VOC2012', 'ade20k': 'rel/ade'})
    assert parse_data_roots(['./a=b/data']) == ('./a=b/data', {})  # a folder whose name holds '='
    assert parse_data_roots([]) == (None, {})
    for items, overrides, says in ((['nope=/x'], [], "unknown benchmark 'nope'"),
                                   (['/a', '/b'], [], 'one data folder at most'),
                                   ([], ['/d'], 'expected KEY=PATH'),
                                   (['voc21='], [], 'expected KEY=PATH')):
        with pytest.raises(ValueError, match=says):
            parse_data_roots(items, overrides)
    assert under_data_dir('data/VOCdevkit/VOC2012', '/d') == '/d/VOCdevkit/VOC2012'
    assert under_data_dir('/abs/VOC2012', '/d') is None and under_data_dir('other/VOC2012', '/d') is None


def test_data_root_means_the_same_in_the_three_tools(data, capsys):
    folder, own = str(data / 'data'), str(data / 'elsewhere' / 'VOC2012')
    check, prepare, bench = load_tool('check_data'), load_tool('prepare_data'), load_tool('benchmark')
    voc = os.path.join(folder, 'VOCdevkit', 'VOC2012')
    # check_data: the data folder, then one benchmark's own root
    assert check.main(['voc21', '--data-root', folder, '--expected-count', '2']) == 0
    assert f'voc21: OK (2 images' in capsys.readouterr().out and voc
    assert check.main(['voc21', '--data-root', folder, '--data-root', f'voc21={own}', '--expected-count', '1']) == 0
    assert f'[{own}]' in capsys.readouterr().out
    # prepare_data: the tree is found where check_data found it (present: nothing to extract; its check
    # counts the real 1449 images: off for two)
    assert prepare.main(['voc', '--data-root', folder, '--no-download', '--no-check']) == 0
    assert f'{voc}: present, skipped' in capsys.readouterr().out
    assert prepare.main(['voc', '--data-root', folder, '--data-root', f'voc20={own}', '--no-download',
                         '--no-check']) == 0
    assert f'{own}: present, skipped' in capsys.readouterr().out  # voc20 reads the voc21 tree
    # benchmark: every run reads its benchmark from the data folder (or its own root)
    config = os.path.join(ROOT, 'configs/clearclip/clearclip_vit-b16_voc21.py')
    out_dir = str(data / 'results')
    assert bench.main(['--configs', config, '--data-root', folder, '--dry-run', '--out', out_dir]) == 0
    assert f'on {voc}/JPEGImages' in capsys.readouterr().out
    assert bench.main(['--suite', 'main', '--benchmarks', 'voc21', '--data-root', folder,
                       '--data-root', f'voc21={own}', '--dry-run', '--out', out_dir]) == 0
    assert f'on {own}/JPEGImages' in capsys.readouterr().out


def test_bad_data_roots_are_exit_code_2_in_every_tool(data, capsys):
    check, prepare, bench = load_tool('check_data'), load_tool('prepare_data'), load_tool('benchmark')
    for argv in (['--data-root', 'nope=/x'], ['--data-root', '/a', '--data-root', '/b']):
        for tool, head in ((check, ['voc21']), (prepare, ['voc', '--no-download'])):
            assert tool.main(head + argv) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and err[0].startswith('error: --data-root'), err
        assert bench.main(['--suite', 'main', '--dry-run'] + argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith('error: --data-root'), err
    assert bench.main(['--suite', 'main', '--dry-run', '--data-root', str(data / 'missing')]) == 2
    assert 'no such data folder' in capsys.readouterr().err


def test_help_lists_every_registered_suite_and_demo_method(capsys):
    from clearclip_seg.demo import model_names
    from clearclip_seg.suites import SUITES
    for name, names in (('benchmark', list(SUITES)), ('demo', model_names())):
        with pytest.raises(SystemExit):
            load_tool(name).parse_args(['--help'])
        text = ''.join(capsys.readouterr().out.split())  # argparse wraps lines, also at hyphens
        marker = ('anamedrunmatrix(repeatable):' if name == 'benchmark'
                  else '(space-orcomma-separated;defaultclearclip):')
        listed = text[text.index(marker) + len(marker):].split('--')[0]
        assert listed.split(',') == names
