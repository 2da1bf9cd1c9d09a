"""Where code written for transformers would silently do something else (issue 13): each case runs the
same input through transformers and through leanformers and compares what a user sees: the printed
form, the kind of error and the fix its message names, the warning."""

import dataclasses

import pytest
import torch
import transformers
import transformers.modeling_outputs

import leanformers
from leanformers.models import outputs


def output_classes():
    return [c for c in vars(outputs).values()
            if isinstance(c, type) and dataclasses.is_dataclass(c) and issubclass(c, outputs.ModelOutput)]


# -- printing a model's output ---------------------------------------------------------------


@pytest.mark.parametrize("cls", output_classes(), ids=lambda c: c.__name__)
def test_model_output_prints_as_transformers(cls):
    ref_cls = getattr(transformers.modeling_outputs, cls.__name__)
    first, second = (f.name for f in dataclasses.fields(cls)[:2])
    values = {first: torch.tensor([[0.25, -1.5]]), second: torch.tensor([3.0])}
    assert repr(cls(**values)) == repr(ref_cls(**values))
    assert str(cls(**values)) == str(ref_cls(**values))


def test_sequence_classifier_output_of_a_model_prints_as_transformers(bert_pipeline_checkpoint):
    folder = bert_pipeline_checkpoint("BertForSequenceClassification")
    x = {"input_ids": torch.tensor([[101, 2630, 4937, 102]])}
    ref = transformers.AutoModelForSequenceClassification.from_pretrained(folder).eval()
    ours = leanformers.AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        expected = repr(ref(**x))
        printed = repr(ours(**x))
    assert expected.startswith("SequenceClassifierOutput(loss=None, logits=tensor(")
    assert printed == expected


# -- printing a config -----------------------------------------------------------------------

CONFIGS = [
    ("LlamaConfig", dict(vocab_size=128, hidden_size=64, num_attention_heads=4)),
    ("LlamaConfig", dict(tie_word_embeddings=True, use_cache=False, pad_token_id=0, num_labels=3)),
    ("GPT2Config", dict(n_layer=2)),
    ("GPT2Config", dict(bos_token_id=0, problem_type="regression")),
    ("BertConfig", dict(hidden_size=48, num_attention_heads=4)),
    ("BertConfig", dict(id2label={0: "NEG", 1: "POS"}, label2id={"NEG": 0, "POS": 1}, output_hidden_states=True)),
]


def printed_config(config):
    """The repr without transformers' version line (leanformers has no transformers version to print)."""
    return "\n".join(line for line in repr(config).splitlines() if '"transformers_version"' not in line)


@pytest.mark.parametrize("name,values", CONFIGS)
def test_config_prints_as_transformers(name, values):
    expected = printed_config(getattr(transformers, name)(**values))
    assert '"use_cache": ' in expected and '"eos_token_id": ' in expected  # printed even at their default
    assert printed_config(getattr(leanformers, name)(**values)) == expected


def test_loaded_config_prints_as_transformers(llama_checkpoint, bert_pipeline_checkpoint):
    folders = [llama_checkpoint("tied")[1], bert_pipeline_checkpoint("BertForSequenceClassification", num_labels=3)]
    for folder in folders:
        expected = printed_config(transformers.AutoConfig.from_pretrained(folder))
        assert printed_config(leanformers.AutoConfig.from_pretrained(folder)) == expected
