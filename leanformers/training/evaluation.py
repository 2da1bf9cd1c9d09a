"""Loss over a whole file: what `leanformers eval` prints (mean loss per predicted token, perplexity).

The loss is token-weighted: the summed cross-entropy of every position whose next-token label is not
-100, divided by their number, so long and short examples count by their tokens (as one long text
would), not by the example.
"""

import torch
import torch.nn.functional as F

from ..data.collators import IGNORE_INDEX


def text_blocks(texts, tokenizer, block_size: int) -> list[list[int]]:
    """Documents -> one stream of ids (EOS after each non-empty document) cut into blocks of block_size;
    the last block may be shorter, so every token is scored."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token to put between documents")
    stream = []
    for ids in tokenizer([t for t in texts if t.strip()], add_special_tokens=False)["input_ids"]:
        stream += ids + [tokenizer.eos_token_id]
    blocks = [stream[i:i + block_size] for i in range(0, len(stream), block_size)]
    return [block for block in blocks if len(block) > 1]  # a lone last token predicts nothing


def summed_token_loss(logits, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of next-token cross-entropy, number of scored positions) for logits (B, T, V), labels (B, T)."""
    shifted = F.pad(labels, (0, 1), value=IGNORE_INDEX)[..., 1:]
    loss = F.cross_entropy(logits.float().flatten(0, 1), shifted.flatten(), ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, (shifted != IGNORE_INDEX).sum()


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
