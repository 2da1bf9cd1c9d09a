"""Logits processors: each rule a small pure function on next-token scores (B, V) float, and transformers'
class of the same name a few lines over it.

A function returns a new tensor (or its input, untouched, when the rule does not apply now) and never
changes its input. They reproduce transformers' processors value for value, so generation with the same
random draws picks the same tokens. The rules that only sampling uses (temperature, top-k, top-p, ...) are
in sampling.py, the watermark in watermarking.py; generate() puts them together in transformers' order
(utils.build_logits_processors).
"""

from abc import ABC, abstractmethod

import numpy as np
import torch

NEG_INF = -float("inf")


# -- the rules --------------------------------------------------------------------------------------
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
    """Set the scores of `token_ids` (1-D long) to -inf; ids outside the vocabulary (or negative) are ignored.

    The ids are masked on the device, with no host sync: they go through a spare last column when outside.
    """
    vocab_size = logits.shape[-1]
    token_ids = token_ids.to(logits.device)
    inside = token_ids.where((token_ids >= 0) & (token_ids < vocab_size), vocab_size)
    banned = torch.zeros(vocab_size + 1, dtype=torch.bool, device=logits.device).index_fill_(0, inside, True)
    return logits.masked_fill(banned[:vocab_size], NEG_INF)


def is_token_id(value) -> bool:
    # a bool is an int to Python, but True in a list of ids is a mistake, not token 1
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0


def check_sequence_bias(sequence_bias) -> dict:
    """transformers' two spellings, `{(ids...): bias}` or `[[[ids...], bias], ...]`, checked as it checks them
    (bias a float, ids non-negative integers); returns the dict spelling."""
    if not isinstance(sequence_bias, (dict, list)) or len(sequence_bias) == 0:
        raise ValueError(
            f"`sequence_bias` has to be a non-empty dictionary, or non-empty list of lists but is {sequence_bias}."
        )
    if isinstance(sequence_bias, list):
        for pair in sequence_bias:
            valid = (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], list) and pair[0]
                     and all(is_token_id(t) for t in pair[0]) and isinstance(pair[1], float))  # fmt: skip
            if not valid:
                raise ValueError(
                    "Each element in `sequence_bias` has to be a non-empty list of lists of positive integers and "
                    f"float, but is {sequence_bias}."
                )
        return {tuple(ids): bias for ids, bias in sequence_bias}
    if any(not isinstance(ids, tuple) for ids in sequence_bias):
        raise ValueError(f"`sequence_bias` has to be a dict with tuples as keys, but is {sequence_bias}.")
    if any(len(ids) == 0 or not all(is_token_id(t) for t in ids) for ids in sequence_bias):
        raise ValueError(
            f"Each key in `sequence_bias` has to be a non-empty tuple of positive integers, but is {sequence_bias}."
        )
    if any(not isinstance(bias, float) for bias in sequence_bias.values()):
        raise ValueError(f"`sequence_bias` has to be a dict with floats as values, but is {sequence_bias}.")
    return dict(sequence_bias)


def bad_words_bias(bad_words_ids, eos_token_id=None) -> dict:
    """Check `bad_words_ids` (a list of lists of token ids) like transformers; a bad word is a -inf sequence bias.

    A bad word that is exactly an EOS token is dropped (generation must be able to stop), as in transformers.
    An empty bad word is refused (transformers 5 ignores it silently: it is a mistake that bans nothing).
    """
    if not isinstance(bad_words_ids, list) or len(bad_words_ids) == 0:
        raise ValueError(f"`bad_words_ids` has to be a non-empty list, but is {bad_words_ids}.")
    if any(not isinstance(word, list) for word in bad_words_ids):
        raise ValueError(f"`bad_words_ids` has to be a list of lists, but is {bad_words_ids}.")
    if any(not word or not all(is_token_id(t) for t in word) for word in bad_words_ids):
        raise ValueError(f"Each list in `bad_words_ids` has to be a list of positive integers, but is {bad_words_ids}.")
    eos = set(torch.as_tensor(eos_token_id).reshape(-1).tolist()) if eos_token_id is not None else set()
    return {tuple(word): NEG_INF for word in bad_words_ids if not (len(word) == 1 and word[0] in eos)}


def prepare_sequence_bias(sequence_bias: dict, vocab_size: int, device=None):
    """Split a checked sequence bias for apply_sequence_bias: the one-token biases as a (V,) float tensor, and
    the longer sequences grouped by prefix length as `(prefixes (N, P), last tokens (N,), biases (N,))`."""
    outside = [t for ids in sequence_bias for t in ids if t >= vocab_size]
    if outside:
        raise ValueError(
            f"The model vocabulary size is {vocab_size}, but the following tokens were being biased: {outside}"
        )
    single = torch.zeros(vocab_size, dtype=torch.float, device=device)
    singles = {ids[0]: bias for ids, bias in sequence_bias.items() if len(ids) == 1}
    single[list(singles)] = torch.tensor(list(singles.values()), device=device)
    groups = {}
    for ids, bias in sequence_bias.items():
        if len(ids) > 1:
            groups.setdefault(len(ids) - 1, []).append((ids, bias))
    multi = [
        (torch.tensor([ids[:-1] for ids, _ in group], device=device),
         torch.tensor([ids[-1] for ids, _ in group], device=device),
         torch.tensor([bias for _, bias in group], dtype=torch.float, device=device))
        for group in groups.values()
    ]  # fmt: skip
    return single, multi


def apply_sequence_bias(logits, input_ids, single, multi):
    """Add each one-token bias always, and a longer sequence's bias to its last token in the rows that end with
    the rest of it (the next token would complete it). `single, multi` come from prepare_sequence_bias."""
    bias = single.to(logits.dtype).expand_as(logits).clone()
    for prefixes, last, biases in multi:
        if prefixes.shape[1] > input_ids.shape[1]:
            continue
        matching = (input_ids[:, None, -prefixes.shape[1] :] == prefixes).all(-1)  # (B, N)
        bias.index_add_(1, last, torch.where(matching, biases, 0.0).to(bias.dtype))
    return logits + bias


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


def apply_prefix_constraint(logits, input_ids, allowed_tokens_fn, num_beams: int):
    """Keep only the tokens `allowed_tokens_fn(batch_id, row_ids)` lists; rows come num_beams per prompt.

    Where every row of a prompt has only -inf left, its allowed tokens are forced with score 0, so the
    constraint still holds (as in transformers). Calls the function once per row: a Python loop by nature.
    """
    allowed = torch.full_like(logits, NEG_INF)
    for row, ids in enumerate(input_ids):
        tokens = allowed_tokens_fn(row // num_beams, ids)
        if len(tokens) == 0:
            raise ValueError(
                f"`prefix_allowed_tokens_fn` returned an empty list for batch ID {row // num_beams}. This means that "
                "the constraint is unsatisfiable. Please check your implementation of `prefix_allowed_tokens_fn`."
            )
        allowed[row, tokens] = 0
    constrained = logits + allowed
    stuck = constrained.amax(-1).isneginf().view(-1, num_beams).all(-1, keepdim=True)  # (prompts, 1)
    return torch.where(stuck.repeat_interleave(num_beams, dim=0), allowed, constrained)


def remove_invalid_values(logits):
    """nan -> 0, +inf -> the dtype's largest value, -inf -> its lowest, so that sampling cannot fail on them."""
    info = torch.finfo(logits.dtype)
    return torch.nan_to_num(logits, nan=0.0, posinf=info.max, neginf=info.min)


def apply_exponential_decay(logits, cur_len: int, start: int, factor: float, eos_token_ids):
    """Past length `start`, raise the EOS scores by |score| * (factor ** (cur_len - start) - 1): stopping
    becomes likelier with every token (negative scores rise too). Infinite EOS scores are left as they are."""
    if cur_len <= start:
        return logits
    eos_scores = logits[:, eos_token_ids]
    boost = eos_scores.abs() * (factor ** (cur_len - start) - 1)
    penalties = torch.zeros_like(logits)
    penalties[:, eos_token_ids] = boost.masked_fill(~torch.isfinite(eos_scores), 0.0)
    return logits + penalties


# -- transformers' classes ----------------------------------------------------------------------------
def token_tensor(ids, device="cpu"):
    """An id, a list of ids or a tensor of them as a 1-D tensor (dtype kept, so a float id can be refused)."""
    return torch.as_tensor(ids, device=device).reshape(-1)


def check_positive_ids(ids, name="eos_token_id"):
    if torch.is_floating_point(ids) or (ids < 0).any():
        raise ValueError(f"`{name}` has to be a list of positive integers, but is {ids}")


class LogitsProcessor(ABC):
    """Called as `processor(input_ids, scores) -> scores`: input_ids (B, T) long, scores (B, V) float."""

    @abstractmethod
    def __call__(self, input_ids, scores):
        """The processed scores (B, V); the input is left unchanged."""


class LogitsProcessorList(list):
    """Processors `(input_ids, scores) -> scores`, applied in order (transformers' processors work here too)."""

    def __call__(self, input_ids, scores, **kwargs):
        for processor in self:
            scores = processor(input_ids, scores, **kwargs) if kwargs else processor(input_ids, scores)
        return scores


class RepetitionPenaltyLogitsProcessor(LogitsProcessor):
    """`penalty` > 1 makes tokens already in the sequence less likely, < 1 more. `prompt_ignore_length`: an
    int skips that many leading tokens of every row, a (B,) tensor a number per row (left padding)."""

    def __init__(self, penalty: float, prompt_ignore_length=None):
        if not isinstance(penalty, float) or not penalty > 0:
            raise ValueError(f"`penalty` has to be a strictly positive float, but is {penalty}")
        if isinstance(prompt_ignore_length, int) and prompt_ignore_length < 0:
            raise ValueError(f"`prompt_ignore_length` has to be a positive integer, but is {prompt_ignore_length}")
        if isinstance(prompt_ignore_length, torch.Tensor) and prompt_ignore_length.dim() != 1:
            raise ValueError("`prompt_ignore_length` must be 1D")
        self.penalty = penalty
        self.prompt_ignore_length = prompt_ignore_length

    def __call__(self, input_ids, scores):
        if input_ids.dim() == 1:  # one id per row
            input_ids = input_ids[:, None]
        skip = self.prompt_ignore_length
        if isinstance(skip, int):
            return apply_repetition_penalty(scores, input_ids[:, skip:], self.penalty)
        if skip is not None:
            if skip.shape[0] != input_ids.shape[0]:
                raise ValueError("Incompatible `prompt_ignore_length` batch size")
            skip = self.prompt_ignore_length = skip.to(input_ids.device)  # moved once, then a no-op
        return apply_repetition_penalty(scores, input_ids, self.penalty, ignore_before=skip)


class NoRepeatNGramLogitsProcessor(LogitsProcessor):
    """No n-gram of `ngram_size` tokens occurs twice in a row's sequence (prompt included)."""

    def __init__(self, ngram_size: int):
        if not isinstance(ngram_size, int) or ngram_size <= 0:
            raise ValueError(f"`ngram_size` has to be a strictly positive integer, but is {ngram_size}")
        self.ngram_size = ngram_size

    def __call__(self, input_ids, scores):
        return apply_no_repeat_ngram(scores, input_ids, self.ngram_size)


class SequenceBiasLogitsProcessor(LogitsProcessor):
    """Add a bias to a token sequence's last token when the next token would complete it (always, for
    one-token sequences). `sequence_bias`: `[[[ids...], bias], ...]` or `{(ids...): bias}`."""

    def __init__(self, sequence_bias):
        self.sequence_bias = check_sequence_bias(sequence_bias)
        self.prepared = None  # (single, multi), built on the first call, when the vocabulary size is known

    def __call__(self, input_ids, scores):
        if self.prepared is None:
            self.prepared = prepare_sequence_bias(self.sequence_bias, scores.shape[-1], scores.device)
        return apply_sequence_bias(scores, input_ids, *self.prepared)


class NoBadWordsLogitsProcessor(SequenceBiasLogitsProcessor):
    """The token sequences of `bad_words_ids` are never completed (a -inf sequence bias); an EOS id on its
    own is never banned."""

    def __init__(self, bad_words_ids, eos_token_id=None):
        self.bad_word_ids = bad_words_ids
        self.sequence_bias = bad_words_bias(bad_words_ids, eos_token_id)
        self.prepared = None


class MinLengthLogitsProcessor(LogitsProcessor):
    """No EOS while the sequence, prompt included, is shorter than `min_length`."""

    def __init__(self, min_length: int, eos_token_id, device="cpu"):
        if not isinstance(min_length, int) or min_length < 0:
            raise ValueError(f"`min_length` has to be a non-negative integer, but is {min_length}")
        self.min_length = min_length
        self.eos_token_id = token_tensor(eos_token_id, device)

    def __call__(self, input_ids, scores):
        return apply_min_length(scores, input_ids.shape[-1], self.min_length, self.eos_token_id)


class MinNewTokensLengthLogitsProcessor(LogitsProcessor):
    """No EOS until `min_new_tokens` tokens follow the first `prompt_length_to_skip`."""

    def __init__(self, prompt_length_to_skip: int, min_new_tokens: int, eos_token_id, device="cpu"):
        for name, value in (("prompt_length_to_skip", prompt_length_to_skip), ("min_new_tokens", min_new_tokens)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` has to be a positive integer, but is {value}")
        self.prompt_length_to_skip = prompt_length_to_skip
        self.min_new_tokens = min_new_tokens
        self.eos_token_id = token_tensor(eos_token_id, device)

    def __call__(self, input_ids, scores):
        new_tokens = input_ids.shape[-1] - self.prompt_length_to_skip
        return apply_min_new_tokens(scores, new_tokens, self.min_new_tokens, self.eos_token_id)


class PrefixConstrainedLogitsProcessor(LogitsProcessor):
    """Only the tokens `prefix_allowed_tokens_fn(batch_id, input_ids_of_the_row)` returns can come next;
    `num_beams` rows per prompt (with several samples per prompt, pass their number)."""

    def __init__(self, prefix_allowed_tokens_fn, num_beams: int):
        self._prefix_allowed_tokens_fn = prefix_allowed_tokens_fn
        self._num_beams = num_beams

    def __call__(self, input_ids, scores):
        return apply_prefix_constraint(scores, input_ids, self._prefix_allowed_tokens_fn, self._num_beams)


class ForcedBOSTokenLogitsProcessor(LogitsProcessor):
    """The first generated token after a one-token start is `bos_token_id`."""

    def __init__(self, bos_token_id: int):
        self.bos_token_id = bos_token_id

    def __call__(self, input_ids, scores):
        return force_tokens(scores, self.bos_token_id) if input_ids.shape[-1] == 1 else scores


class ForcedEOSTokenLogitsProcessor(LogitsProcessor):
    """The token that reaches `max_length` is an EOS (one of them, by score, when there are several)."""

    def __init__(self, max_length: int, eos_token_id, device="cpu"):
        self.max_length = max_length
        self.eos_token_id = token_tensor(eos_token_id, device)
        check_positive_ids(self.eos_token_id)

    def __call__(self, input_ids, scores):
        return force_tokens(scores, self.eos_token_id) if input_ids.shape[-1] == self.max_length - 1 else scores


class SuppressTokensLogitsProcessor(LogitsProcessor):
    """The tokens of `suppress_tokens` are never generated."""

    def __init__(self, suppress_tokens, device="cpu"):
        self.suppress_tokens = torch.tensor(list(suppress_tokens), dtype=torch.long, device=device)

    def __call__(self, input_ids, scores):
        return suppress_tokens(scores, self.suppress_tokens)


class SuppressTokensAtBeginLogitsProcessor(LogitsProcessor):
    """The tokens of `begin_suppress_tokens` are not generated at length `begin_index`."""

    def __init__(self, begin_suppress_tokens, begin_index: int, device="cpu"):
        self.begin_suppress_tokens = torch.tensor(list(begin_suppress_tokens), dtype=torch.long, device=device)
        self.begin_index = begin_index

    def set_begin_index(self, begin_index: int):
        self.begin_index = begin_index

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] != self.begin_index:
            return scores
        return suppress_tokens(scores, self.begin_suppress_tokens)


class InfNanRemoveLogitsProcessor(LogitsProcessor):
    """nan scores become 0 and infinite ones the dtype's extremes (`remove_invalid_values=True`)."""

    def __call__(self, input_ids, scores):
        return remove_invalid_values(scores)


class ExponentialDecayLengthPenalty(LogitsProcessor):
    """`exponential_decay_length_penalty=(start_index, decay_factor)`: from `start_index` new tokens on, the
    EOS scores grow by a factor of `decay_factor` per token (see apply_exponential_decay)."""

    def __init__(self, exponential_decay_length_penalty, eos_token_id, input_ids_seq_length: int):
        self.regulation_start = exponential_decay_length_penalty[0] + input_ids_seq_length
        self.regulation_factor = exponential_decay_length_penalty[1]
        self.eos_token_id = token_tensor(eos_token_id)
        check_positive_ids(self.eos_token_id)

    def __call__(self, input_ids, scores):
        self.eos_token_id = self.eos_token_id.to(scores.device)
        return apply_exponential_decay(scores, input_ids.shape[-1], self.regulation_start, self.regulation_factor,
                                       self.eos_token_id)  # fmt: skip


class LogitNormalization(LogitsProcessor):
    """Scores to log-probabilities (`renormalize_logits=True`), after every other processor."""

    def __call__(self, input_ids, scores):
        return scores.log_softmax(dim=-1)
