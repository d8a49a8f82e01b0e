"""Text heads (``model.text_head``): the classifier rows and the per-window fold, over any method."""
import pytest
import torch

from clearclip_seg.models.text_heads import TEXT_HEADS, TextHead, build_text_head, register_text_head
from helpers import tiny_segmentor


class _TwoTemplateSets(TextHead):
    """Test head: one row block per template set; keeps the first block's logits, or averages the blocks."""

    def __init__(self, mode: str = 'first', key: str = 'model.text_head'):
        self.mode = mode

    def classifier(self, embed, vocabulary, templates):
        return torch.cat([embed(vocabulary.queries, templates), embed(vocabulary.queries, ['a {}.'])])

    def fuse(self, logits):
        a, b = logits.chunk(2, dim=1)
        return a if self.mode == 'first' else (a + b) / 2


@pytest.fixture(scope='module', autouse=True)
def _registered():
    register_text_head('_TwoTemplateSets')(_TwoTemplateSets)
    yield
    TEXT_HEADS._classes.pop('_TwoTemplateSets')


@pytest.fixture(scope='module')
def image():
    return torch.randn(3, 70, 100, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize('method', [None, dict(type='SCLIP')])
def test_a_head_keeping_the_plain_rows_equals_no_head(image, method):
    kw = {} if method is None else dict(last_block=None, method=method)
    plain = tiny_segmentor(**kw)
    head = tiny_segmentor(text_head=dict(type='_TwoTemplateSets'), **kw)
    assert head.build_text_classifier().shape[0] == 2 * len(plain.vocabulary.queries)
    assert torch.equal(head.query_logits([image])[0], plain.query_logits([image])[0])


def test_fuse_runs_per_window_batch_on_the_method_logits(image):
    seg = tiny_segmentor(text_head=dict(type='_TwoTemplateSets', mode='mean'))
    rows = seg.build_text_classifier()
    q = len(seg.vocabulary.queries)
    crops = image[None, :, :64, :64]
    raw = seg.method.patch_logits(seg.encoder, crops, rows)
    expected = (raw[:, :q] + raw[:, q:]) / 2
    assert torch.equal(seg._patch_logits(crops), expected)


def test_unknown_head_and_option_are_one_line_errors():
    with pytest.raises(ValueError, match=r"model.text_head.type"):
        build_text_head(dict(type='NoSuchHead'))
    with pytest.raises(ValueError, match=r"modee"):
        build_text_head(dict(type='_TwoTemplateSets', modee='x'))
    assert build_text_head(None) is None and build_text_head({}) is None
