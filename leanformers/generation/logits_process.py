"""Logits processors as small pure functions on next-token scores (B, V) float.

Each function returns a new tensor and leaves its input alone. They reproduce
transformers' processors value for value (same sort, same cumsum, same
comparisons), so sampling with the same random draws picks the same tokens.
generate() composes them with `build_logits_processors` in transformers'
order: repetition penalty, no-repeat n-gram, bad words, min length, min new
tokens, forced BOS/EOS, suppressed tokens, the user's processors, then
(sampling only) temperature, top-k, top-p, min-p, typical-p.
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


def apply_presence_frequency_penalty(logits, generated_ids, presence: float, frequency: float):
    """OpenAI's penalties: each token's score minus `frequency` times the number of times it was generated
    and minus `presence` once if it was generated at all. generated_ids (B, T) long (T may be 0)."""
    counts = torch.zeros_like(logits).scatter_add_(1, generated_ids, torch.ones_like(generated_ids, dtype=logits.dtype))
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


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
    """Set the scores of `token_ids` (1-D long tensor of ids inside the vocabulary) to -inf."""
    return logits.index_fill(-1, token_ids, NEG_INF)


def apply_bad_words(logits, input_ids, single_ids, multi):
    """Forbid the bad words: `single_ids` (1-D long) always; each `(prefixes (N, P), last (N,))` of `multi`
    forbids `last[i]` in the rows whose last P tokens are `prefixes[i]`. Build them with `prepare_bad_words`."""
    vocab_size = logits.shape[-1]
    # Banned ids land in a (B, V + 1) mask; rows that do not match a prefix write to the spare last column.
    banned = torch.zeros(logits.shape[0], vocab_size + 1, dtype=torch.bool, device=logits.device)
    banned[:, single_ids] = True
    for prefixes, last in multi:
        if prefixes.shape[1] > input_ids.shape[1]:
            continue
        matching = (input_ids[:, None, -prefixes.shape[1] :] == prefixes).all(-1)  # (B, N)
        banned.scatter_(1, torch.where(matching, last, vocab_size), True)
    banned = banned[:, :vocab_size]
    return logits.masked_fill(banned, NEG_INF)


def prepare_bad_words(bad_words_ids, eos_token_ids=None, vocab_size=None, device=None):
    """Check `bad_words_ids` (a list of lists of token ids) like transformers and split it for apply_bad_words.

    A bad word that is exactly an EOS token is dropped (generation must be able to stop), as in transformers.
    """
    if not isinstance(bad_words_ids, list) or len(bad_words_ids) == 0:
        raise ValueError(f"`bad_words_ids` has to be a non-empty list, but is {bad_words_ids}.")
    if any(not isinstance(word, list) for word in bad_words_ids):
        raise ValueError(f"`bad_words_ids` has to be a list of lists, but is {bad_words_ids}.")
    if any(not word or any(not isinstance(t, int) or isinstance(t, bool) or t < 0 for t in word) for word in bad_words_ids):
        raise ValueError(f"Each list in `bad_words_ids` has to be a list of positive integers, but is {bad_words_ids}.")
    eos = set(eos_token_ids.tolist()) if eos_token_ids is not None else set()
    words = list(dict.fromkeys(tuple(w) for w in bad_words_ids if not (len(w) == 1 and w[0] in eos)))
    if vocab_size is not None:
        outside = [t for w in words for t in w if t >= vocab_size]
        if outside:
            raise ValueError(f"The model vocabulary size is {vocab_size}, but `bad_words_ids` holds {outside}")
    single = torch.tensor([w[0] for w in words if len(w) == 1], dtype=torch.long, device=device)
    by_prefix = {}
    for word in words:
        if len(word) > 1:
            by_prefix.setdefault(len(word) - 1, []).append(word)
    multi = [
        (torch.tensor([w[:-1] for w in group], device=device), torch.tensor([w[-1] for w in group], device=device))
        for group in by_prefix.values()
    ]
    return single, multi


def force_tokens(logits, token_ids):
    """Only `token_ids` remain possible, each with score 0 (forced BOS / EOS)."""
    forced = torch.full_like(logits, NEG_INF)
    forced[:, token_ids] = 0
    return forced


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
    candidates = int((logits > NEG_INF).sum(-1).max())
    if candidates < logits.shape[-1]:
        # After top-k only a few tokens are finite: order those rather than the whole vocabulary.
        # The -inf rest has probability 0 and would sort first, adding nothing to the sums.
        values, indices = logits.topk(candidates, dim=-1)
        sorted_logits, sorted_indices = values.flip(-1), indices.flip(-1)
    else:
        sorted_logits, sorted_indices = torch.sort(logits, descending=False)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    # Drop the low tail holding at most 1 - top_p of the mass; the best tokens stay.
    drop_sorted = cumulative <= (1 - top_p)
    drop_sorted[..., -min_tokens_to_keep:] = False
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, sorted_indices, ~drop_sorted)
    return logits.masked_fill(~keep, NEG_INF)


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
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, sorted_indices, ~drop_sorted)
    return logits.masked_fill(~keep, NEG_INF)


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
    vocab_size=None,
    device=None,
) -> LogitsProcessorList:
    """The processors a (merged, defaults filled) GenerationConfig asks for, in transformers' order.

    `eos_token_ids` is a 1-D long tensor or None; `pad_lengths` (B,) holds each row's left padding.
    With beam sampling, the sampling filters keep one token more than there are EOS ids, as transformers does.
    """
    def in_vocab(ids):  # ids the model cannot score are dropped once here, not filtered every step
        return ids[ids < vocab_size] if vocab_size is not None else ids

    processors = LogitsProcessorList()
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        penalty = config.repetition_penalty
        processors.append(
            lambda ids, scores: apply_repetition_penalty(scores, ids, penalty, ignore_before=pad_lengths)
        )
    if config.no_repeat_ngram_size:
        size = config.no_repeat_ngram_size
        processors.append(lambda ids, scores: apply_no_repeat_ngram(scores, ids, size))
    if config.bad_words_ids is not None:
        single, multi = prepare_bad_words(config.bad_words_ids, eos_token_ids, vocab_size, device)
        processors.append(lambda ids, scores: apply_bad_words(scores, ids, single, multi))
    eos_in_vocab = in_vocab(eos_token_ids) if eos_token_ids is not None else None
    if eos_token_ids is not None and config.min_length:
        min_length = config.min_length
        processors.append(lambda ids, scores: apply_min_length(scores, ids.shape[1], min_length, eos_in_vocab))
    if eos_token_ids is not None and config.min_new_tokens:
        min_new = config.min_new_tokens
        processors.append(
            lambda ids, scores: apply_min_new_tokens(scores, ids.shape[1] - prompt_length, min_new, eos_in_vocab)
        )
    if config.forced_bos_token_id is not None:
        bos = config.forced_bos_token_id
        processors.append(lambda ids, scores: force_tokens(scores, bos) if ids.shape[1] == 1 else scores)
    if config.forced_eos_token_id is not None:
        forced_eos = torch.as_tensor(config.forced_eos_token_id, dtype=torch.long, device=device).reshape(-1)
        if (forced_eos < 0).any():
            raise ValueError(f"`eos_token_id` has to be a list of positive integers, but is {config.forced_eos_token_id}")
        last = config.max_length - 1
        processors.append(lambda ids, scores: force_tokens(scores, forced_eos) if ids.shape[1] == last else scores)
    if config.suppress_tokens is not None:
        suppressed = in_vocab(torch.tensor(list(config.suppress_tokens), dtype=torch.long, device=device))
        processors.append(lambda ids, scores: suppress_tokens(scores, suppressed))
    if config.begin_suppress_tokens is not None:
        begin = in_vocab(torch.tensor(list(config.begin_suppress_tokens), dtype=torch.long, device=device))
        begin_index = prompt_length + (1 if prompt_length == 1 and config.forced_bos_token_id is not None else 0)
        processors.append(lambda ids, scores: suppress_tokens(scores, begin) if ids.shape[1] == begin_index else scores)
    processors.extend(user_processors or ())
    if config.do_sample:
        keep = 1
        if config.num_beams and config.num_beams > 1:
            keep = (eos_token_ids.numel() if eos_token_ids is not None else 1) + 1
        warpers = []
        if config.temperature is not None and config.temperature != 1.0:
            warpers.append(partial(apply_temperature, temperature=config.temperature))
        if config.top_k:
            warpers.append(partial(apply_top_k, top_k=config.top_k, min_tokens_to_keep=keep))
        if config.top_p is not None and config.top_p < 1.0:
            warpers.append(partial(apply_top_p, top_p=config.top_p, min_tokens_to_keep=keep))
        if config.min_p is not None:
            warpers.append(partial(apply_min_p, min_p=config.min_p, min_tokens_to_keep=keep))
        if config.typical_p is not None and config.typical_p < 1.0:
            warpers.append(partial(apply_typical_p, mass=config.typical_p, min_tokens_to_keep=keep))
        processors.extend(lambda ids, scores, warp=warp: warp(scores) for warp in warpers)
    return processors


def sample_next_token(scores, generator=None):
    """Draw one token per row from softmax(scores), like transformers' torch.multinomial call. (B, V) -> (B,)"""
    probs = torch.softmax(scores, dim=-1)
    if probs.device.type != "cpu":
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
    return multinomial_draw(probs, generator)


def multinomial_draw(probs, generator=None):
    """torch.multinomial(probs, 1)[:, 0] on CPU: the same token from the same random numbers, ~3x faster.

    torch draws one sample as argmax(probs / q), q ~ Exp(1), where each q is -log1p(-u) of a float64
    uniform u, computed in one serial loop (7.5 ms per step for 8 rows of a 49k vocabulary here). The
    same uniforms, in the same order, come from uniform_ on a float64 tensor; the logarithm is then
    vectorised. (B, V) -> (B,)
    """
    if not bool((probs.sum(-1) > 0).all()):  # what torch.multinomial refuses: a nan, an inf, no mass
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    uniform = torch.empty(probs.shape, dtype=torch.float64).uniform_(generator=generator)
    exponential = torch.log1p(uniform.neg_()).neg_().to(probs.dtype)
    return torch.div(probs, exponential).argmax(-1)
