"""BERT family against transformers: tiny random checkpoints written by transformers, loaded by both."""

import json
import logging

import pytest
import torch
import transformers

import leanformers
from leanformers import BertConfig, BertForMaskedLM, BertForMultipleChoice, BertForSequenceClassification, BertModel

TINY_BERT = dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 max_position_embeddings=24, type_vocab_size=2, pad_token_id=0)
HEADS = ["BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
         "BertForQuestionAnswering", "BertForMultipleChoice"]


@pytest.fixture(scope="session")
def bert_checkpoint(tmp_path_factory):
    """(head class name, config overrides) -> (transformers model, folder it saved itself to)."""
    made = {}

    def make(head, **overrides):
        key = (head, json.dumps(overrides, sort_keys=True))
        if key not in made:
            torch.manual_seed(0)
            config = transformers.BertConfig(**{**TINY_BERT, "num_labels": 2 if "Question" in head else 3, **overrides})
            model = getattr(transformers, head)(config).eval()
            folder = tmp_path_factory.mktemp(f"bert-{head}")
            model.save_pretrained(folder)
            made[key] = (model, folder)
        return made[key]

    return make


def random_ids(shape, seed=0, vocab=128):
    return torch.randint(3, vocab, shape, generator=torch.Generator().manual_seed(seed))


def inputs_for(head, seed=0):
    """input_ids, token_type_ids and labels for a head; multiple choice takes (batch, choices, seq)."""
    g = torch.Generator().manual_seed(seed)
    shape = (2, 3, 9) if head == "BertForMultipleChoice" else (3, 9)
    ids = random_ids(shape, seed)
    token_types = torch.zeros_like(ids)
    token_types[..., 5:] = 1
    labels = {}
    if head == "BertForMaskedLM":
        labels["labels"] = torch.where(torch.rand(ids.shape, generator=g) < 0.3, ids, -100)
    elif head == "BertForSequenceClassification":
        labels["labels"] = torch.randint(0, 3, (3,), generator=g)
    elif head == "BertForTokenClassification":
        labels["labels"] = torch.randint(0, 3, ids.shape, generator=g).masked_fill(ids < 40, -100)
    elif head == "BertForQuestionAnswering":
        labels["start_positions"] = torch.tensor([0, 4, 8])
        labels["end_positions"] = torch.tensor([[2], [30], [8]])  # (B, 1) and out of range: squeezed and clamped
    elif head == "BertForMultipleChoice":
        labels["labels"] = torch.tensor([2, 0])
    return ids, token_types, labels


def main_outputs(out):
    return [out[k] for k in ("last_hidden_state", "pooler_output", "logits", "start_logits", "end_logits") if k in out]


@pytest.mark.parametrize("head", HEADS)
def test_bert_logits_and_loss_match_transformers(bert_checkpoint, head):
    ref, folder = bert_checkpoint(head)
    ours = getattr(leanformers, head).from_pretrained(folder)
    ids, token_types, labels = inputs_for(head, seed=1)
    with torch.no_grad():
        expected = ref(ids, token_type_ids=token_types, **labels)
        got = ours(ids, token_type_ids=token_types, **labels)
    for a, b in zip(main_outputs(got), main_outputs(expected), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    if labels:
        torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("case", ["regression", "single_label", "multi_label", "regression_3_outputs"])
def test_bert_sequence_classification_losses_by_problem_type_match_transformers(bert_checkpoint, case):
    g = torch.Generator().manual_seed(7)
    num_labels, overrides = {"regression": (1, {}), "single_label": (3, {}), "multi_label": (3, {}),
                             "regression_3_outputs": (3, {"problem_type": "regression"})}[case]
    ref, folder = bert_checkpoint("BertForSequenceClassification", num_labels=num_labels, **overrides)
    ours = BertForSequenceClassification.from_pretrained(folder)
    labels = {"regression": torch.randn(4, generator=g), "single_label": torch.tensor([0, 2, 1, 2]),
              "multi_label": (torch.rand(4, 3, generator=g) > 0.5).float(),
              "regression_3_outputs": torch.randn(4, 3, generator=g)}[case]
    ids = random_ids((4, 6), seed=3)
    ref.config.problem_type = overrides.get("problem_type")  # transformers stores what it inferred on the last call
    with torch.no_grad():
        expected, got = ref(ids, labels=labels), ours(ids, labels=labels)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
    assert ours.config.problem_type == overrides.get("problem_type")


@pytest.mark.parametrize("head", HEADS)
def test_bert_padded_batch_equals_unpadded_rows(bert_checkpoint, head):
    _, folder = bert_checkpoint(head)
    model = getattr(leanformers, head).from_pretrained(folder)
    lengths = (9, 4, 6)
    rows = [random_ids((n,), seed=n) for n in lengths]
    ids = torch.zeros(3, 9, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    if head == "BertForMultipleChoice":  # the three rows are the three choices of one question
        ids, mask = ids[None], mask[None]
    with torch.no_grad():
        batched = model(ids, attention_mask=mask)
        for i, row in enumerate(rows):
            alone = model(row[None, None] if head == "BertForMultipleChoice" else row[None])
            for a, b in zip(main_outputs(batched), main_outputs(alone), strict=True):
                if head == "BertForMultipleChoice":
                    got, want = a[0, i], b[0, 0]
                elif a.shape[:2] == (3, 9):
                    got, want = a[i, : len(row)], b[0]
                else:
                    got, want = a[i], b[0]
                assert not torch.isnan(got).any()
                torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", HEADS)
def test_bert_save_pretrained_loads_back_in_transformers(bert_checkpoint, tmp_path, head):
    ref, folder = bert_checkpoint(head)
    getattr(leanformers, head).from_pretrained(folder).save_pretrained(tmp_path)
    reloaded = getattr(transformers, head).from_pretrained(tmp_path).eval()
    ids, token_types, _ = inputs_for(head, seed=2)
    with torch.no_grad():
        expected, got = ref(ids, token_type_ids=token_types), reloaded(ids, token_type_ids=token_types)
    for a, b in zip(main_outputs(got), main_outputs(expected), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_bert_masked_lm_ties_decoder_to_word_embeddings(bert_checkpoint):
    _, folder = bert_checkpoint("BertForMaskedLM")
    model = BertForMaskedLM.from_pretrained(folder)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.bert.pooler is None


def test_bert_masked_lm_logits_to_keep_scores_only_those_positions(bert_checkpoint):
    ref, folder = bert_checkpoint("BertForMaskedLM")
    model = BertForMaskedLM.from_pretrained(folder)
    ids = random_ids((3, 9), seed=5)
    with torch.no_grad():
        expected = ref(ids).logits  # (B, T, V)
        positions = torch.tensor([1, 4, 8])
        torch.testing.assert_close(model(ids, logits_to_keep=positions).logits, expected[:, positions], atol=1e-4,
                                   rtol=0)
        torch.testing.assert_close(model(ids, logits_to_keep=2).logits, expected[:, -2:], atol=1e-4, rtol=0)
        assert model(ids).logits.shape == expected.shape


def test_bert_hidden_states_and_attentions_match_transformers(bert_checkpoint):
    _, folder = bert_checkpoint("BertModel")
    ref = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    ours = BertModel.from_pretrained(folder)
    ids = random_ids((2, 7), seed=4)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
        got = ours(ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert len(got.hidden_states) == len(expected.hidden_states) == 3
    assert len(got.attentions) == len(expected.attentions) == 2
    for a, b in zip(got.hidden_states + got.attentions, expected.hidden_states + expected.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_bert_masked_lm_checkpoint_under_a_pooled_head_initializes_pooler_and_classifier(bert_checkpoint, caplog):
    ref, folder = bert_checkpoint("BertForMaskedLM")
    with caplog.at_level(logging.WARNING, logger="leanformers"):
        model = BertForSequenceClassification.from_pretrained(folder)
    assert "bert.pooler.dense.weight" in caplog.text and "classifier.weight" in caplog.text
    assert "cls.predictions" not in caplog.text
    torch.testing.assert_close(model.bert.embeddings.word_embeddings.weight, ref.bert.embeddings.word_embeddings.weight)
    assert not torch.isnan(model(random_ids((1, 5))).logits).any()


def test_bert_config_round_trips_and_matches_transformers_defaults(tmp_path):
    ours, theirs = BertConfig(), transformers.BertConfig()
    for key in ("vocab_size", "hidden_size", "intermediate_size", "layer_norm_eps", "type_vocab_size", "pad_token_id",
                "max_position_embeddings", "hidden_act", "tie_word_embeddings"):
        assert getattr(ours, key) == getattr(theirs, key), key
    BertConfig(**TINY_BERT, position_embedding_type="absolute").save_pretrained(tmp_path)
    again = transformers.BertConfig.from_pretrained(tmp_path)
    assert again.hidden_size == 32 and again.max_position_embeddings == 24
    with pytest.raises(ValueError, match="relative_key"):
        BertConfig(position_embedding_type="relative_key")


def test_bert_input_longer_than_max_position_embeddings_is_a_clear_error(bert_checkpoint):
    _, folder = bert_checkpoint("BertModel")
    model = BertModel.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"30 tokens long.*max_position_embeddings=24"):
        model(random_ids((1, 30)))


def test_bert_multiple_choice_rejects_inputs_of_the_wrong_rank(bert_checkpoint):
    _, folder = bert_checkpoint("BertForMultipleChoice")
    model = BertForMultipleChoice.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"\(batch, num_choices, seq_len\).*\(2, 9\)"):
        model(random_ids((2, 9)))
    with pytest.raises(ValueError, match=r"labels of shape \(2, 3\)"):
        model(random_ids((2, 3, 9)), labels=torch.zeros(2, 3, dtype=torch.long))


def test_bert_all_padding_row_is_finite_and_matches_transformers(bert_checkpoint):
    ref, folder = bert_checkpoint("BertModel")
    ours = BertModel.from_pretrained(folder)
    ids = random_ids((2, 6), seed=5)
    mask = torch.ones_like(ids)
    mask[1] = 0  # a row that is padding only, as a bucketed batch can produce
    with torch.no_grad():
        got, expected = ours(ids, attention_mask=mask), ref(ids, attention_mask=mask)
    assert torch.isfinite(got.last_hidden_state).all()
    torch.testing.assert_close(got.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=0)
