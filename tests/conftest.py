"""Shared fixtures: a tiny random CLIP from a JSON file, an isolated text cache.

Plain helpers (paths, overrides, synthetic data, the independent mIoU) are in
``helpers.py``; test modules import them from there, never from each other.
"""
import pytest

from helpers import TINY_ARCH


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
