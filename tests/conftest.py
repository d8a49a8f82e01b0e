"""Shared fixtures: a tiny random CLIP from a JSON file, synthetic datasets."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TINY_ARCH = os.path.join(ROOT, 'tests', 'assets', 'clearclip-tiny-vit.json')
TINY_NAME = 'clearclip-tiny-vit'


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Never read or write the user's text-classifier cache from tests."""
    monkeypatch.setenv('CLEARCLIP_CACHE', str(tmp_path_factory.getbasetemp() / 'cache'))


@pytest.fixture(scope='session')
def tiny_arch():
    return TINY_ARCH


@pytest.fixture
def tiny_clip():
    """(open_clip model, arch name) with seeded random weights, fp32, eval."""
    import torch

    from clearclip_seg.models.clip_loader import create_clip
    torch.manual_seed(0)
    return create_clip(None, arch_file=TINY_ARCH)


def make_voc2012(root, sizes=((60, 90), (300, 200), (500, 470), (40, 40)), seed=0):
    """A synthetic VOC2012-layout dataset; returns the image ids."""
    from clearclip_seg.synthetic import write_benchmark
    return write_benchmark('voc21', str(root), sizes=sizes, seed=seed)
