"""fill-mask against transformers' pipeline on a tiny random BERT checkpoint."""

import warnings

import pytest
from test_pipelines import assert_same, both

from leanformers import pipeline

MASKED = ["Paris is the [MASK] of France.", "The [MASK] sat on the [MASK] all afternoon.",
          "I [MASK] this film.", "[MASK] [MASK] [MASK]", "A long sentence about the weather, which was [MASK] today."]


@pytest.fixture(scope="module")
def masked_lm(bert_pipeline_checkpoint):
    return bert_pipeline_checkpoint("BertForMaskedLM", initializer_range=0.3)


# transformers' pipelines are slow to build, so each is built once: (transformers', ours)
@pytest.fixture(scope="module")
def fill_masks(masked_lm):
    return both("fill-mask", masked_lm)


# -- fill-mask --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"top_k": 1}, {"top_k": 12}, {"targets": ["capital", "city", "paris"]},
                                    {"targets": "capital"}, {"targets": ["city", "capital", "dog"], "top_k": 2}])
def test_fill_mask_matches_transformers(fill_masks, kwargs):
    ref, ours = fill_masks
    # Random-init scores are around 1e-3, so the tolerance is set below them.
    assert_same(ours(MASKED[0], **kwargs), ref(MASKED[0], **kwargs), atol=1e-7)
    assert_same(ours(MASKED, **kwargs), ref(MASKED, **kwargs), atol=1e-7)
    assert_same(ours(MASKED[1:2], **kwargs), ref(MASKED[1:2], **kwargs), atol=1e-7)


def test_fill_mask_gives_a_list_per_mask_with_the_other_masks_kept(fill_masks):
    ours = fill_masks[1]
    one, three = ours(MASKED[0], top_k=3), ours(MASKED[3], top_k=3)
    assert len(one) == 3 and "[MASK]" not in one[0]["sequence"] and "[CLS]" not in one[0]["sequence"]
    assert len(three) == 3 and all(len(row) == 3 for row in three)
    assert all(r["sequence"].count("[MASK]") == 2 for row in three for r in row)
    assert [r["score"] for r in three[0]] == sorted((r["score"] for r in three[0]), reverse=True)


def test_fill_mask_targets_outside_the_vocabulary_use_their_first_token(masked_lm, fill_masks):
    ref, ours = fill_masks
    targets = ["Paris", "zzzqqq", "capital"]  # the cased word and the unknown one are not vocabulary tokens
    with pytest.warns(UserWarning) as caught:
        got = ours(MASKED[0], targets=targets, top_k=10)
    assert [str(w.message) for w in caught] == [
        "the target 'Paris' is not in the vocabulary; its first token 'paris' stands for it",
        "the target 'zzzqqq' is not in the vocabulary; its first token 'z' stands for it"]
    assert len(got) == 3  # top_k is capped at the number of targets
    assert_same(got, ref(MASKED[0], targets=targets, top_k=10), atol=1e-7)
    with pytest.warns(UserWarning) as caught:
        preset = pipeline("fill-mask", model=str(masked_lm), targets=targets)
    assert len(caught) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # targets given to pipeline() were resolved there, once
        assert {r["token_str"] for r in preset([MASKED[0], MASKED[2]])[1]} == {"paris", "z", "capital"}


def test_fill_mask_bad_input(fill_masks):
    ours = fill_masks[1]
    with pytest.raises(ValueError, match=r"no mask token \(\[MASK\]\) in the input 'Nothing is hidden here.'"):
        ours("Nothing is hidden here.")
    with pytest.raises(ValueError, match="no mask token"):
        ours([MASKED[0], "Nothing is hidden here."], batch_size=8)
    with pytest.raises(ValueError, match="the input is an empty string"):
        ours("")
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        ours(MASKED[0], top_k=0)
    with pytest.raises(ValueError, match=r"targets=\[\] gives no token to score"):
        ours(MASKED[0], targets=[])
    with pytest.raises(TypeError, match="takes no argument\\(s\\) candidate_labels"):
        ours(MASKED[0], candidate_labels=["a"])


def test_fill_mask_batched_equals_unbatched(fill_masks):
    ours = fill_masks[1]
    assert_same(ours(MASKED * 2, top_k=3, batch_size=8), ours(MASKED * 2, top_k=3), atol=1e-6)
