"""Logits processors as small pure functions on next-token scores (B, V) float.

Each function returns a new tensor and leaves its input alone. They reproduce
transformers' processors value for value (same sort, same cumsum, same
comparisons), so sampling with the same random draws picks the same tokens.
generate() composes them with `build_logits_processors` in transformers'
order: repetition penalty, no-repeat n-gram, min length, min new tokens, the
user's processors, then (sampling only) temperature, top-k, top-p, min-p,
typical-p.
"""

from functools import partial

import torch

NEG_INF = -float("inf")


def apply_repetition_penalty(logits, input_ids, penalty: float, ignore_before=None):
    """Make tokens already in `input_ids` less likely: positive scores / penalty, negative scores * penalty.

    `ignore_before` (B,) skips each row's first positions (left padding), as transformers does.
    """
    vocab_size = logits.shape[-1]
    if ignore_before is not None:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        input_ids = input_ids.masked_fill(positions < ignore_before[:, None], vocab_size)
    # ids past the output vocabulary (and ignored positions) land in a spare column that is dropped.
    seen = torch.zeros(logits.shape[0], vocab_size + 1, dtype=torch.bool, device=logits.device)
    seen.scatter_(1, input_ids.clamp(max=vocab_size), True)
    penalized = torch.where(logits < 0, logits * penalty, logits / penalty)
    return torch.where(seen[:, :vocab_size], penalized, logits)


def apply_no_repeat_ngram(logits, input_ids, ngram_size: int):
    """Forbid any token that would complete an n-gram already present in the row."""
    length = input_ids.shape[1]
    if length < ngram_size:
        return logits
    prefix = input_ids[:, length + 1 - ngram_size :]  # (B, n-1): the n-gram the next token would complete
    windows = input_ids.unfold(1, ngram_size, 1)  # (B, W, n)
    matches = (windows[..., :-1] == prefix[:, None]).all(-1)  # (B, W)
    vocab_size = logits.shape[-1]
    banned = torch.zeros(logits.shape[0], vocab_size + 1, dtype=torch.bool, device=logits.device)
    banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab_size), vocab_size), True)
    return logits.masked_fill(banned[:, :vocab_size], NEG_INF)


def suppress_tokens(logits, token_ids):
    """Set the scores of `token_ids` (1-D long tensor) to -inf."""
    mask = torch.isin(torch.arange(logits.shape[-1], device=logits.device), token_ids)
    return torch.where(mask, NEG_INF, logits)


def apply_min_length(logits, cur_len: int, min_length: int, eos_token_ids):
    """Forbid EOS while the sequence (prompt included) is shorter than `min_length`."""
    return suppress_tokens(logits, eos_token_ids) if cur_len < min_length else logits


def apply_min_new_tokens(logits, new_tokens: int, min_new_tokens: int, eos_token_ids):
    """Forbid EOS until `min_new_tokens` tokens have been generated."""
    return suppress_tokens(logits, eos_token_ids) if new_tokens < min_new_tokens else logits


def apply_temperature(logits, temperature: float):
    return logits / temperature


def apply_top_k(logits, top_k: int, min_tokens_to_keep: int = 1):
    """Keep the tokens scoring at least the k-th best score (ties with it are kept too, as in transformers)."""
    k = min(max(top_k, min_tokens_to_keep), logits.shape[-1])
    kth = torch.topk(logits, k)[0][..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def apply_top_p(logits, top_p: float, min_tokens_to_keep: int = 1):
    """Nucleus filtering: keep the most likely tokens whose probabilities sum to at least top_p (at least one)."""
    sorted_logits, sorted_indices = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Drop the low tail holding at most 1 - top_p of the mass; the best tokens stay.
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[..., -min_tokens_to_keep:] = False
    drop = drop_sorted.scatter(1, sorted_indices, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def apply_min_p(logits, min_p: float, min_tokens_to_keep: int = 1):
    """Keep tokens whose probability is at least min_p times the best token's."""
    probs = torch.softmax(logits, dim=-1)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)
    best = torch.topk(probs, min(min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
    drop.scatter_(-1, best, False)
    return logits.masked_fill(drop, NEG_INF)


def apply_typical_p(logits, mass: float, min_tokens_to_keep: int = 1):
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy, up to `mass`."""
    log_probs = torch.log_softmax(logits, dim=-1)
    entropy = -(log_probs * log_probs.exp()).nansum(-1, keepdim=True)
    distance = (-log_probs - entropy).abs()
    sorted_distance, sorted_indices = torch.sort(distance, descending=False)
    cumulative = logits.gather(-1, sorted_indices).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=1).clamp(max=sorted_distance.shape[-1] - 1)
    drop_sorted = sorted_distance > sorted_distance.gather(1, last[:, None])
    drop_sorted[..., :min_tokens_to_keep] = False
    drop = drop_sorted.scatter(1, sorted_indices, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


class LogitsProcessorList(list):
    """Processors `(input_ids, scores) -> scores`, applied in order (transformers' processors work here too)."""

    def __call__(self, input_ids, scores, **kwargs):
        for processor in self:
            scores = processor(input_ids, scores, **kwargs) if kwargs else processor(input_ids, scores)
        return scores


def build_logits_processors(
    config,
    prompt_length: int,
    eos_token_ids=None,
    pad_lengths=None,
    user_processors=None,
) -> LogitsProcessorList:
    """The processors a (merged, defaults filled) GenerationConfig asks for, in transformers' order.

    `eos_token_ids` is a 1-D long tensor or None; `pad_lengths` (B,) holds each row's left padding.
    """
    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        penalty = config.repetition_penalty
        processors.append(
            lambda ids, scores: apply_repetition_penalty(scores, ids, penalty, ignore_before=pad_lengths)
        )
    if config.no_repeat_ngram_size:
        size = config.no_repeat_ngram_size
        processors.append(lambda ids, scores: apply_no_repeat_ngram(scores, ids, size))
    if eos_token_ids is not None and config.min_length:
        min_length = config.min_length
        processors.append(lambda ids, scores: apply_min_length(scores, ids.shape[1], min_length, eos_token_ids))
    if eos_token_ids is not None and config.min_new_tokens:
        min_new = config.min_new_tokens
        processors.append(
            lambda ids, scores: apply_min_new_tokens(scores, ids.shape[1] - prompt_length, min_new, eos_token_ids)
        )
    processors.extend(user_processors or ())
    if config.do_sample:
        warpers = []
        if config.temperature is not None and config.temperature != 1.0:
            warpers.append(partial(apply_temperature, temperature=config.temperature))
        if config.top_k:
            warpers.append(partial(apply_top_k, top_k=config.top_k))
        if config.top_p is not None and config.top_p < 1.0:
            warpers.append(partial(apply_top_p, top_p=config.top_p))
        if config.min_p is not None:
            warpers.append(partial(apply_min_p, min_p=config.min_p))
        if config.typical_p is not None and config.typical_p < 1.0:
            warpers.append(partial(apply_typical_p, mass=config.typical_p))
        processors.extend(lambda ids, scores, warp=warp: warp(scores) for warp in warpers)
    return processors


def sample_next_token(scores, generator=None):
    """Draw one token per row from softmax(scores), like transformers' torch.multinomial call. (B, V) -> (B,)"""
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
