"""Loss over a whole file: what `leanformers eval` prints (mean loss per predicted token, perplexity).

The loss is token-weighted: the summed cross-entropy of every position whose next-token label is not
-100, divided by their number, so long and short examples count by their tokens (as one long text
would), not by the example.
"""

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
