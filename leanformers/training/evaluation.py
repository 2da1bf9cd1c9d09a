"""Scoring: the loss over a whole file (what `leanformers eval` prints: mean loss per predicted token,
perplexity), and the Trainer's predictions gathered across batches for compute_metrics.

The loss is token-weighted: the summed cross-entropy of every position whose next-token label is not
-100, divided by their number, so long and short examples count by their tokens (as one long text
would), not by the example.
"""

from typing import NamedTuple

import numpy as np
import torch

from ..data.collators import IGNORE_INDEX
from ..models.layers import causal_lm_loss


def summed_token_loss(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropy, number of scored positions) for logits (B, T, V), labels (B, T)."""
    loss = causal_lm_loss(logits, labels, IGNORE_INDEX, reduction="sum")
    return loss, (labels[..., 1:] != IGNORE_INDEX).sum()  # the first label is predicted by nothing


def mean_token_loss(model, batches) -> tuple[float, int]:
    """Token-weighted mean loss of a causal LM over batches holding input_ids, attention_mask and labels."""
    total, count = torch.zeros((), dtype=torch.float64), 0
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
                loss, n = summed_token_loss(logits, batch["labels"])
                total += loss.double()
                count += int(n)
    finally:
        model.train(was_training)
    if count == 0:
        raise ValueError("no token to score: every label is -100 (or the data is empty)")
    return float(total / count), count


class EvalPrediction(NamedTuple):
    """What compute_metrics receives: `logits, labels = eval_pred` works as in transformers."""
    predictions: np.ndarray | tuple
    label_ids: np.ndarray | tuple | None


class PredictionOutput(NamedTuple):
    predictions: np.ndarray | tuple
    label_ids: np.ndarray | tuple | None
    metrics: dict


def pad_and_concat(chunks: list, pad_index: int = -100):
    """Per-batch arrays (or tuples of them) -> one array, padding the second axis when lengths differ."""
    if isinstance(chunks[0], tuple):
        return tuple(pad_and_concat(list(parts), pad_index) for parts in zip(*chunks, strict=True))
    if chunks[0].ndim < 2 or all(c.shape[1:] == chunks[0].shape[1:] for c in chunks):
        return np.concatenate(chunks)
    width = max(c.shape[1] for c in chunks)
    out = np.full((sum(len(c) for c in chunks), width, *chunks[0].shape[2:]), pad_index, dtype=chunks[0].dtype)
    row = 0
    for c in chunks:
        out[row:row + len(c), :c.shape[1]] = c
        row += len(c)
    return out


def as_numpy(value):
    if isinstance(value, (tuple, list)):
        return tuple(as_numpy(v) for v in value)
    return value.detach().float().cpu().numpy() if value.is_floating_point() else value.detach().cpu().numpy()
