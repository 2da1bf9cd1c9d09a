"""Task heads across families: Llama's heads against transformers, the Auto* surface, head
initialization and dropping on load, and clear errors for bad labels and configs."""

import logging

import pytest
import torch
import transformers

import leanformers
from leanformers import (AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForMultipleChoice,
                         AutoModelForQuestionAnswering, AutoModelForSequenceClassification,
                         AutoModelForTokenClassification)
from leanformers.models.heads import last_token_index, sequence_classification_loss

TINY = {
    "llama": (transformers.LlamaConfig, dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                              bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    "gpt2": (transformers.GPT2Config, dict(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=32,
                                            bos_token_id=1, eos_token_id=2, pad_token_id=0)),
    "bert": (transformers.BertConfig, dict(vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=37, max_position_embeddings=32)),
}
LLAMA_HEADS = ["LlamaForSequenceClassification", "LlamaForTokenClassification", "LlamaForQuestionAnswering"]


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """(model_type, transformers class name, num_labels) -> (transformers model, folder it saved itself to)."""
    made = {}

    def make(model_type, head, num_labels=3):
        if (model_type, head, num_labels) not in made:
            torch.manual_seed(0)
            config_class, values = TINY[model_type]
            model = getattr(transformers, head)(config_class(**values, num_labels=num_labels)).eval()
            folder = tmp_path_factory.mktemp(f"{head}-{num_labels}")
            model.save_pretrained(folder)
            made[model_type, head, num_labels] = (model, folder)
        return made[model_type, head, num_labels]

    return make


def random_ids(batch, length, seed=0):
    return torch.randint(3, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


def main_outputs(out):
    return [out[k] for k in ("last_hidden_state", "logits", "start_logits", "end_logits") if k in out]


# -- Llama heads ---------------------------------------------------------------------------


@pytest.mark.parametrize("head", LLAMA_HEADS)
def test_llama_heads_logits_and_loss_match_transformers(checkpoint, head):
    ref, folder = checkpoint("llama", head, num_labels=2 if "Question" in head else 3)
    ours = getattr(leanformers, head).from_pretrained(folder)
    ids = random_ids(3, 10, seed=1)
    labels = {"LlamaForSequenceClassification": {"labels": torch.tensor([0, 2, 1])},
              "LlamaForTokenClassification": {"labels": torch.randint(0, 3, (3, 10)).masked_fill(ids < 50, -100)},
              "LlamaForQuestionAnswering": {"start_positions": torch.tensor([1, 9, 3]),
                                            "end_positions": torch.tensor([4, 9, 99])}}[head]
    with torch.no_grad():
        expected, got = ref(ids, **labels), ours(ids, **labels)
    for a, b in zip(main_outputs(got), main_outputs(expected), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_llama_sequence_classification_pools_the_last_real_token_of_padded_rows(checkpoint, side):
    ref, folder = checkpoint("llama", "LlamaForSequenceClassification")
    ours = leanformers.LlamaForSequenceClassification.from_pretrained(folder)
    rows = [random_ids(1, n, seed=n)[0] for n in (7, 3)]
    ids = torch.zeros(2, 7, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        span = slice(7 - len(row), 7) if side == "left" else slice(0, len(row))
        ids[i, span], mask[i, span] = row, 1
    with torch.no_grad():
        batched = ours(ids, attention_mask=mask).logits
        alone = torch.cat([ours(row[None]).logits for row in rows])
        if side == "right":  # transformers numbers positions 0.. only when no left padding shifts them
            torch.testing.assert_close(batched, ref(ids, attention_mask=mask).logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=0)


def test_llama_heads_save_pretrained_loads_back_in_transformers(checkpoint, tmp_path):
    for head in LLAMA_HEADS:
        ref, folder = checkpoint("llama", head, num_labels=2 if "Question" in head else 3)
        getattr(leanformers, head).from_pretrained(folder).save_pretrained(tmp_path / head)
        reloaded = getattr(transformers, head).from_pretrained(tmp_path / head).eval()
        ids = random_ids(2, 6, seed=2)
        with torch.no_grad():
            for a, b in zip(main_outputs(reloaded(ids)), main_outputs(ref(ids)), strict=True):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_last_token_index_follows_transformers_rule():
    ids = torch.tensor([[5, 6, 7, 0, 0], [0, 0, 5, 6, 7], [0, 0, 0, 0, 0], [5, 0, 6, 0, 0]])
    # rightmost non-pad position; an all-pad row gives 0; a pad id inside a row is skipped over
    assert last_token_index(ids, 0, 4, "cpu").tolist() == [2, 4, 0, 2]
    assert last_token_index(ids[:1], None, 1, "cpu").tolist() == [-1]
    with pytest.raises(ValueError, match="pad_token_id"):
        last_token_index(ids, None, 4, "cpu")


# -- Auto surface ----------------------------------------------------------------------------

AUTO_CASES = [
    (AutoModel, "gpt2", "GPT2Model"), (AutoModelForCausalLM, "gpt2", "GPT2LMHeadModel"),
    (AutoModelForSequenceClassification, "gpt2", "GPT2ForSequenceClassification"),
    (AutoModelForTokenClassification, "gpt2", "GPT2ForTokenClassification"),
    (AutoModelForQuestionAnswering, "gpt2", "GPT2ForQuestionAnswering"),
    (AutoModel, "bert", "BertModel"), (AutoModelForMaskedLM, "bert", "BertForMaskedLM"),
    (AutoModelForSequenceClassification, "bert", "BertForSequenceClassification"),
    (AutoModelForTokenClassification, "bert", "BertForTokenClassification"),
    (AutoModelForQuestionAnswering, "bert", "BertForQuestionAnswering"),
    (AutoModelForMultipleChoice, "bert", "BertForMultipleChoice"),
    (AutoModelForSequenceClassification, "llama", "LlamaForSequenceClassification"),
    (AutoModelForTokenClassification, "llama", "LlamaForTokenClassification"),
    (AutoModelForQuestionAnswering, "llama", "LlamaForQuestionAnswering"),
]


@pytest.mark.parametrize("auto, model_type, head", AUTO_CASES, ids=[c[2] for c in AUTO_CASES])
def test_auto_classes_pick_the_same_class_as_transformers(checkpoint, auto, model_type, head):
    _, folder = checkpoint(model_type, head, num_labels=2)
    model = auto.from_pretrained(folder)
    assert type(model).__name__ == head == type(getattr(transformers, auto.__name__).from_pretrained(folder)).__name__
    assert type(auto.from_config(model.config)) is type(model)


def test_auto_class_without_the_task_names_what_the_family_has(checkpoint):
    _, folder = checkpoint("gpt2", "GPT2Model")
    with pytest.raises(ValueError, match="no AutoModelForMultipleChoice class.*sequence-classification"):
        AutoModelForMultipleChoice.from_pretrained(folder)


@pytest.mark.parametrize("model_type, base, head", [("gpt2", "GPT2Model", "GPT2ForSequenceClassification"),
                                                    ("bert", "BertModel", "BertForSequenceClassification"),
                                                    ("llama", "LlamaModel", "LlamaForSequenceClassification")])
def test_base_checkpoint_under_a_new_head_initializes_it_and_says_so(checkpoint, caplog, model_type, base, head):
    ref, folder = checkpoint(model_type, base)
    id2label = {0: "neg", 1: "neutral", 2: "pos", 3: "mixed"}
    with caplog.at_level(logging.WARNING, logger="leanformers"):
        model = AutoModelForSequenceClassification.from_pretrained(
            folder, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    assert type(model).__name__ == head
    assert model.config.num_labels == 4 and model.config.id2label[3] == "mixed"
    new = "score.weight" if model_type != "bert" else "classifier.weight"
    assert "newly initialized" in caplog.text and new in caplog.text
    weight = getattr(model, new.split(".")[0]).weight
    assert weight.shape == (4, 32) and 0.005 < weight.std().item() < 0.05
    base_model = getattr(model, model.base_model_prefix)
    torch.testing.assert_close(base_model.get_input_embeddings().weight, ref.get_input_embeddings().weight)
    ids = random_ids(2, 6)
    with torch.no_grad():
        assert model(ids).logits.shape == (2, 4)


@pytest.mark.parametrize("model_type, head", [("gpt2", "GPT2LMHeadModel"), ("bert", "BertForMaskedLM"),
                                              ("bert", "BertForSequenceClassification"),
                                              ("llama", "LlamaForTokenClassification")])
def test_head_checkpoint_into_the_base_class_drops_the_head_quietly(checkpoint, caplog, model_type, head):
    ref, folder = checkpoint(model_type, head)
    with caplog.at_level(logging.WARNING, logger="leanformers"):
        ours = AutoModel.from_pretrained(folder)
    expected_class = {"gpt2": "GPT2Model", "bert": "BertModel", "llama": "LlamaModel"}[model_type]
    assert type(ours).__name__ == expected_class
    theirs = transformers.AutoModel.from_pretrained(folder).eval()
    ids = random_ids(2, 6)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).last_hidden_state, theirs(ids).last_hidden_state, atol=1e-5, rtol=0)
    if head != "BertForMaskedLM":  # the masked-LM checkpoint has no pooler: BertModel's is new, as in transformers
        assert not [r for r in caplog.records if r.name == "leanformers"]


def test_num_labels_disagreeing_with_the_checkpoint_head_says_how_to_reinitialize(checkpoint):
    _, folder = checkpoint("bert", "BertForSequenceClassification", num_labels=3)
    with pytest.raises(ValueError, match=r"classifier.weight: checkpoint \(3, 32\), model \(5, 32\).*"
                                         r"ignore_mismatched_sizes=True"):
        AutoModelForSequenceClassification.from_pretrained(folder, num_labels=5)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=5, ignore_mismatched_sizes=True)
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=5,
                                                                             ignore_mismatched_sizes=True)
    assert model.config.num_labels == theirs.config.num_labels == 5
    assert model.config.id2label == theirs.config.id2label
    assert model.classifier.weight.shape == (5, 32)


# -- bad labels and configs -------------------------------------------------------------------


@pytest.mark.parametrize("model_type, head", [("gpt2", "GPT2ForSequenceClassification"),
                                              ("bert", "BertForSequenceClassification")])
def test_classification_labels_of_the_wrong_shape_or_dtype_are_clear_errors(checkpoint, model_type, head):
    _, folder = checkpoint(model_type, head)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    ids = random_ids(2, 5)
    with pytest.raises(ValueError, match=r"labels of shape \(3,\) do not match the expected \(2,\)"):
        model(ids, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match=r"multi_label_classification labels of shape \(2,\).*\(2, 3\)"):
        model(ids, labels=torch.tensor([0.0, 1.0]))  # float labels mean multi-label, as in transformers
    model.config.problem_type = "single_label_classification"
    with pytest.raises(TypeError, match="integer class ids, not torch.float32"):
        model(ids, labels=torch.tensor([0.0, 1.0]))
    model.config.problem_type = "multi_label_classification"
    with pytest.raises(TypeError, match="float tensor of 0/1"):
        model(ids, labels=torch.tensor([[0, 1, 1], [1, 0, 0]]))


def test_token_and_span_labels_of_the_wrong_shape_or_dtype_are_clear_errors(checkpoint):
    _, folder = checkpoint("gpt2", "GPT2ForTokenClassification")
    model = AutoModelForTokenClassification.from_pretrained(folder)
    ids = random_ids(2, 5)
    with pytest.raises(ValueError, match=r"labels of shape \(2, 4\) do not match the expected \(2, 5\)"):
        model(ids, labels=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class ids"):
        model(ids, labels=torch.zeros(2, 5))
    _, folder = checkpoint("bert", "BertForQuestionAnswering", num_labels=2)
    qa = AutoModelForQuestionAnswering.from_pretrained(folder)
    with pytest.raises(TypeError, match="start_positions must hold integer class ids"):
        qa(ids, start_positions=torch.tensor([1.0, 2.0]), end_positions=torch.tensor([2, 3]))
    with pytest.raises(ValueError, match=r"end_positions of shape \(3,\)"):
        qa(ids, start_positions=torch.tensor([1, 2]), end_positions=torch.tensor([2, 3, 4]))
    _, folder = checkpoint("bert", "BertForMaskedLM")
    mlm = AutoModelForMaskedLM.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"labels of shape \(2, 6\) do not match the expected \(2, 5\)"):
        mlm(ids, labels=torch.zeros(2, 6, dtype=torch.long))


def test_unknown_problem_type_is_a_clear_error(checkpoint):
    with pytest.raises(ValueError, match="problem_type must be one of .*'regression'.*got 'ranking'"):
        leanformers.BertConfig(problem_type="ranking")
    _, folder = checkpoint("bert", "BertForSequenceClassification")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    model.config.problem_type = "ranking"
    with pytest.raises(ValueError, match="config.problem_type must be one of .*got 'ranking'"):
        model(random_ids(2, 5), labels=torch.tensor([0, 1]))


def test_sequence_classification_loss_infers_the_problem_type_as_transformers_does():
    config = leanformers.BertConfig(num_labels=3)
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    single = sequence_classification_loss(logits, torch.tensor([0, 2]), config)
    torch.testing.assert_close(single, torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])))
    multi_labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    multi = sequence_classification_loss(logits, multi_labels, config)
    torch.testing.assert_close(multi, torch.nn.functional.binary_cross_entropy_with_logits(logits, multi_labels))
    assert config.problem_type is None  # inferred per call, never stored
    one = leanformers.BertConfig(num_labels=1)
    regression = sequence_classification_loss(torch.tensor([[0.5], [1.5]]), torch.tensor([1.0, 1.0]), one)
    torch.testing.assert_close(regression, torch.tensor(0.25))
