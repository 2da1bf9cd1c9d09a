"""Model outputs: dataclasses readable by attribute (out.logits), key (out["logits"])
and index (out[0]); fields left as None are skipped by keys and indices, as in
transformers, so out[0] is the loss when labels were given and the logits otherwise.
They print as the dataclasses they are, every field included, as transformers' do
(`SequenceClassifierOutput(loss=None, logits=tensor(...), ...)`), not as the dict of set fields.
"""

from dataclasses import dataclass, fields

import torch


class ModelOutput(dict):
    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                dict.__setitem__(self, f.name, value)

    def __getitem__(self, key):
        if isinstance(key, str):
            return dict.__getitem__(self, key)
        return self.to_tuple()[key]

    def __setitem__(self, key, value):
        dict.__setitem__(self, key, value)
        object.__setattr__(self, key, value)

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in self.__dataclass_fields__ and value is not None:
            dict.__setitem__(self, name, value)

    @property
    def past_key_values(self):
        """The v4 name of `cache`."""
        return getattr(self, "cache", None)

    def to_tuple(self):
        return tuple(self[k] for k in self.keys())


@dataclass(eq=False)
class BaseModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass(eq=False)
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: torch.Tensor = None
    cache: object = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass(eq=False)
class BaseModelOutputWithPooling(ModelOutput):
    last_hidden_state: torch.Tensor = None
    pooler_output: torch.Tensor = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass(eq=False)
class CausalLMOutputWithPast(ModelOutput):
    loss: torch.Tensor = None
    logits: torch.Tensor = None
    cache: object = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass(eq=False)
class BaseModelOutputWithPoolingAndCrossAttentions(ModelOutput):
    last_hidden_state: torch.Tensor = None
    pooler_output: torch.Tensor = None
    hidden_states: tuple = None
    cache: object = None
    attentions: tuple = None
    cross_attentions: tuple = None


@dataclass(eq=False)
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor = None
    logits: torch.Tensor = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass(eq=False)
class SequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor = None
    logits: torch.Tensor = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass(eq=False)
class SequenceClassifierOutputWithPast(ModelOutput):
    loss: torch.Tensor = None
    logits: torch.Tensor = None
    cache: object = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass(eq=False)
class TokenClassifierOutput(ModelOutput):
    loss: torch.Tensor = None
    logits: torch.Tensor = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass(eq=False)
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor = None
    start_logits: torch.Tensor = None
    end_logits: torch.Tensor = None
    hidden_states: tuple = None
    attentions: tuple = None


@dataclass(eq=False)
class MultipleChoiceModelOutput(ModelOutput):
    loss: torch.Tensor = None
    logits: torch.Tensor = None
    hidden_states: tuple = None
    attentions: tuple = None
