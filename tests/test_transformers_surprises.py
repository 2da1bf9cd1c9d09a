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
