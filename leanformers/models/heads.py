"""Task heads shared by the model families: the losses, the pooling, and thin head mixins.

A family's head class is the mixin plus its PreTrainedModel and an __init__ that
builds the layers under the checkpoint's names, e.g.

    class GPT2ForTokenClassification(TokenClassificationHead, GPT2PreTrainedModel):
        def __init__(self, config):
            ...; self.transformer = GPT2Model(config); self.dropout = ...; self.classifier = ...

The mixins find the base model through `base_model_prefix` and the output layer
through `classifier_name`, so the same forward serves Llama, GPT-2 and BERT.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PROBLEM_TYPES
from .outputs import QuestionAnsweringModelOutput, SequenceClassifierOutputWithPast, TokenClassifierOutput

INTEGER_DTYPES = (torch.long, torch.int, torch.int16, torch.int8, torch.uint8)


def classifier_dropout(config) -> float:
    """classifier_dropout, else the family's hidden dropout, else 0.1 (transformers' order)."""
    for name in ("classifier_dropout", "hidden_dropout", "hidden_dropout_prob"):
        value = getattr(config, name, None)
        if value is not None:
            return value
    return 0.1


def check_integer_labels(name: str, labels, shape):
    if labels.dtype not in INTEGER_DTYPES:
        raise TypeError(f"{name} must hold integer class ids, not {labels.dtype}")
    if tuple(labels.shape) != tuple(shape):
        raise ValueError(f"{name} of shape {tuple(labels.shape)} do not match the expected {tuple(shape)}")


# -- pooling ------------------------------------------------------------------------------


def last_token_index(input_ids, pad_token_id, batch_size: int, device):
    """Index (B,) of the last non-pad token of each row, as transformers finds it: the rightmost
    position whose id is not pad_token_id (so left and right padding both work); -1 when there is
    no pad token (then only a batch of one is unambiguous) or only inputs_embeds were given."""
    if pad_token_id is None:
        if batch_size != 1:
            raise ValueError("cannot find the last token of each row in a batch of more than one without a "
                             "pad_token_id in the config; set config.pad_token_id")
        return torch.full((batch_size,), -1, dtype=torch.long, device=device)
    if input_ids is None:
        return torch.full((batch_size,), -1, dtype=torch.long, device=device)
    not_pad = (input_ids != pad_token_id).to(device, torch.int32)
    positions = torch.arange(input_ids.shape[-1], device=device, dtype=torch.int32)
    return (positions * not_pad).argmax(-1)


def pool_last_token(hidden, input_ids, pad_token_id):
    """hidden (B, T, H) -> (B, H) at each row's last non-pad token."""
    index = last_token_index(input_ids, pad_token_id, hidden.shape[0], hidden.device)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), index]


# -- losses --------------------------------------------------------------------------------


def infer_problem_type(config, labels) -> str:
    """The config's problem_type, or transformers' guess from num_labels and the labels' dtype."""
    problem_type = config.problem_type
    if problem_type is None:
        if config.num_labels == 1:
            return "regression"
        integer = labels.dtype in (torch.long, torch.int)
        return "single_label_classification" if integer else "multi_label_classification"
    if problem_type not in PROBLEM_TYPES:
        raise ValueError(f"config.problem_type must be one of {PROBLEM_TYPES}, got {problem_type!r}")
    return problem_type


def sequence_classification_loss(logits, labels, config):
    """logits (B, num_labels); labels (B,) class ids, (B, num_labels) multi-hot, or (B,) / (B, num_labels) targets."""
    num_labels = config.num_labels
    problem_type = infer_problem_type(config, labels)
    labels = labels.to(logits.device)
    batch = logits.shape[0]
    if problem_type == "single_label_classification":
        check_integer_labels("labels", labels, (batch,))
        return F.cross_entropy(logits.float().view(-1, num_labels), labels.view(-1))
    if problem_type == "multi_label_classification" and not labels.is_floating_point():
        raise TypeError(f"labels for multi_label_classification must be a float tensor of 0/1 of shape "
                        f"{(batch, num_labels)}, not {labels.dtype}")
    if problem_type == "regression":
        allowed = [(batch, num_labels)] + ([(batch,)] if num_labels == 1 else [])
        if tuple(labels.shape) not in allowed:
            raise ValueError(f"regression labels of shape {tuple(labels.shape)} do not match the expected "
                             f"{' or '.join(map(str, allowed))}")
        if not labels.is_floating_point():
            raise TypeError(f"regression labels must be a float tensor, not {labels.dtype}")
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze())
        return F.mse_loss(logits, labels)
    if tuple(labels.shape) != (batch, num_labels):
        raise ValueError(f"multi_label_classification labels of shape {tuple(labels.shape)} do not match the "
                         f"expected {(batch, num_labels)} (for one class id per row use an integer tensor)")
    return F.binary_cross_entropy_with_logits(logits, labels)


def token_classification_loss(logits, labels, ignore_index: int = -100):
    """logits (B, T, num_labels); labels (B, T) class ids, -100 where no label applies."""
    check_integer_labels("labels", labels, logits.shape[:-1])
    return F.cross_entropy(logits.float().flatten(0, -2), labels.flatten().to(logits.device), ignore_index=ignore_index)


def question_answering_loss(start_logits, end_logits, start_positions, end_positions):
    """Mean of the start and end cross-entropies; positions outside the sequence are ignored
    (clamped to the sequence length, which is the ignore index, as transformers does)."""
    batch, length = start_logits.shape
    losses = []
    for name, logits, positions in (("start_positions", start_logits, start_positions),
                                    ("end_positions", end_logits, end_positions)):
        if positions.dim() > 1:
            positions = positions.squeeze(-1)
        check_integer_labels(name, positions, (batch,))
        positions = positions.to(logits.device).clamp(0, length)
        losses.append(F.cross_entropy(logits.float(), positions, ignore_index=length))
    return (losses[0] + losses[1]) / 2


def split_span_logits(logits):
    """(B, T, 2) -> start_logits (B, T), end_logits (B, T)."""
    if logits.shape[-1] != 2:
        raise ValueError(f"a question-answering head needs 2 outputs per token (start, end), this one has "
                         f"{logits.shape[-1]}: build it with num_labels=2")
    start, end = logits.split(1, dim=-1)
    return start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()


# -- head mixins --------------------------------------------------------------------------


class HeadMixin:
    """What the mixins share: the base model under its checkpoint prefix."""

    def base_model(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)


class LastTokenClassificationHead(HeadMixin):
    """Sequence classification for decoder models: `score` on the last non-pad token."""

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        out = self.base_model()(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        pooled = pool_last_token(out.last_hidden_state, input_ids, self.config.pad_token_id)  # (B, H)
        logits = self.score(pooled)  # (B, num_labels)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        return SequenceClassifierOutputWithPast(loss=loss, logits=logits, cache=out.cache,
                                                hidden_states=out.hidden_states, attentions=out.attentions)


class TokenClassificationHead(HeadMixin):
    """A label per token: dropout, then a linear layer named `classifier_name`."""

    classifier_name = "classifier"

    def forward(self, input_ids=None, attention_mask=None, labels=None, **kwargs):
        out = self.base_model()(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        logits = getattr(self, self.classifier_name)(self.dropout(out.last_hidden_state))  # (B, T, num_labels)
        loss = token_classification_loss(logits, labels) if labels is not None else None
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                     attentions=out.attentions)


class QuestionAnsweringHead(HeadMixin):
    """Extractive QA: `qa_outputs` gives a start and an end logit per token."""

    def forward(self, input_ids=None, attention_mask=None, start_positions=None, end_positions=None, **kwargs):
        out = self.base_model()(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        start_logits, end_logits = split_span_logits(self.qa_outputs(out.last_hidden_state))
        loss = None
        if start_positions is not None and end_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(loss=loss, start_logits=start_logits, end_logits=end_logits,
                                            hidden_states=out.hidden_states, attentions=out.attentions)
