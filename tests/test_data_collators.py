"""Data collators against transformers' on the same tokenizer and features."""

import pytest
import torch
import transformers

from leanformers import (AutoTokenizer, DataCollatorForLanguageModeling, DataCollatorForSeq2Seq,
                         DataCollatorWithPadding, default_data_collator)


@pytest.fixture(scope="module")
def minilm():
    return AutoTokenizer.from_pretrained("all-minilm-l6-v2")


@pytest.fixture(scope="module")
def smollm():
    return AutoTokenizer.from_pretrained("smollm2-135m-instruct")


def features(tokenizer, texts, labels=True):
    rows = [dict(tokenizer(t)) for t in texts]
    if labels:
        for i, row in enumerate(rows):
            row["label"] = i % 2
    return rows


TEXTS = ["short", "a somewhat longer sentence here", "mid length text"]


def assert_same(ours: dict, theirs):
    assert sorted(ours) == sorted(theirs)
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("kwargs", [{}, {"pad_to_multiple_of": 8}, {"padding": "max_length", "max_length": 12}])
def test_padding_collator_matches_transformers(minilm, kwargs):
    rows = features(minilm, TEXTS)
    assert_same(DataCollatorWithPadding(minilm, **kwargs)(rows),
                transformers.DataCollatorWithPadding(minilm, **kwargs)(rows))


def test_padding_collator_left_side(smollm):
    smollm.padding_side = "left"
    try:
        batch = DataCollatorWithPadding(smollm)(features(smollm, TEXTS))
    finally:
        smollm.padding_side = "right"
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1
    assert batch["labels"].tolist() == [0, 1, 0]


def test_default_collator_matches_transformers(minilm):
    rows = [{"input_ids": [1, 2, 3], "label": 1, "text": "x"}, {"input_ids": [4, 5, 6], "label": 0, "text": "y"}]
    assert_same(default_data_collator(rows), transformers.default_data_collator(rows))
    floats = [{"x": [0.5, 1.0], "label": 0.25}, {"x": [1.5, 2.0], "label": 1.0}]
    assert_same(default_data_collator(floats), transformers.default_data_collator(floats))
    with pytest.raises(ValueError, match="DataCollatorWithPadding"):
        default_data_collator([{"input_ids": [1, 2]}, {"input_ids": [1]}])


def test_seq2seq_collator_matches_transformers(smollm):
    rows = [{"input_ids": [5, 6, 7], "labels": [1, 2]}, {"input_ids": [8], "labels": [3, 4, 5, 6]}]
    for kwargs in ({}, {"pad_to_multiple_of": 4}):
        assert_same(DataCollatorForSeq2Seq(smollm, **kwargs)([dict(r) for r in rows]),
                    transformers.DataCollatorForSeq2Seq(smollm, **kwargs)([dict(r) for r in rows]))


def test_causal_lm_labels_mask_padding_by_position_not_eos(smollm):
    """pad == eos (SmolLM2): a real EOS keeps its label, only padding positions get -100."""
    assert smollm.pad_token_id == smollm.eos_token_id
    eos = smollm.eos_token_id
    rows = [{"input_ids": [10, 11, eos]}, {"input_ids": [12, eos, 13, 14, eos]}]
    batch = DataCollatorForLanguageModeling(smollm, mlm=False)(rows)
    assert batch["labels"].tolist() == [[10, 11, eos, -100, -100], [12, eos, 13, 14, eos]]
    assert batch["input_ids"].tolist()[0] == [10, 11, eos, eos, eos]
    with_labels = DataCollatorForLanguageModeling(smollm, mlm=False)(
        [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [4], "labels": [4]}])
    assert with_labels["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    with pytest.raises(ValueError, match="mask token"):
        DataCollatorForLanguageModeling(smollm, mlm=True)


def test_mlm_masking_is_seeded_and_follows_80_10_10(minilm):
    rows = [{"input_ids": minilm("word " * 200)["input_ids"]} for _ in range(50)]
    a = DataCollatorForLanguageModeling(minilm, seed=0)(rows)
    b = DataCollatorForLanguageModeling(minilm, seed=0)(rows)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    original = torch.tensor([r["input_ids"] for r in rows])
    masked = a["labels"] != -100
    assert torch.equal(a["labels"][masked], original[masked])
    assert not masked[:, 0].any() and not masked[:, -1].any()  # [CLS] and [SEP] are never masked
    share = masked.float().mean().item()
    assert 0.13 < share < 0.17
    as_mask = (a["input_ids"] == minilm.mask_token_id)[masked].float().mean().item()
    unchanged = (a["input_ids"] == original)[masked].float().mean().item()
    assert 0.77 < as_mask < 0.83 and 0.07 < unchanged < 0.14
    assert torch.equal(a["input_ids"][~masked], original[~masked])
    from leanformers.hub import bundled_model_path

    reference = transformers.AutoTokenizer.from_pretrained(str(bundled_model_path("all-minilm-l6-v2")))
    theirs = transformers.DataCollatorForLanguageModeling(reference, seed=0)(rows)
    assert abs((theirs["labels"] != -100).float().mean().item() - share) < 0.02
