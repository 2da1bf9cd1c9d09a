"""Stopping criteria: called after each step as `criteria(input_ids, scores) -> (B,) bool`, True = row done.

`StopStringCriteria` stops a row once one of the stop strings has been generated, also when the string
spans several tokens or ends inside a token. It matches on each token's own bytes (what the token adds to
the text), like transformers, so a match found here is the one transformers finds. The bytes of a token are
worked out the first time the token is seen, not for the whole vocabulary up front.
"""

import copy
import logging
import time
import warnings
from abc import ABC, abstractmethod

import torch

logger = logging.getLogger(__name__)


class StoppingCriteria(ABC):
    """Called after each step as `criteria(input_ids, scores) -> (B,) bool`: True marks a row as done.

    `scores` is the tuple of processed scores so far when `output_scores` is on, else None (as in transformers).
    A subclass that lacks __call__ cannot be instantiated.
    """

    @abstractmethod
    def __call__(self, input_ids, scores, **kwargs):
        """(B,) bool: True for the rows that are done."""


class StoppingCriteriaList(list):
    def __call__(self, input_ids, scores, **kwargs):
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criteria in self:
            done = done | criteria(input_ids, scores, **kwargs)
        return done

    @property
    def max_length(self):
        for criteria in self:
            if isinstance(criteria, MaxLengthCriteria):
                return criteria.max_length
        return None


class MaxLengthCriteria(StoppingCriteria):
    """Done once the sequences, prompt included, hold `max_length` tokens. Given the model's
    `max_position_embeddings`, it warns (once) when generation runs past the model's context."""

    def __init__(self, max_length: int, max_position_embeddings: int | None = None):
        self.max_length = max_length
        self.max_position_embeddings = max_position_embeddings
        self.warned = False

    def __call__(self, input_ids, scores, **kwargs):
        length = input_ids.shape[1]
        done = length >= self.max_length
        context = self.max_position_embeddings
        if context is not None and not done and length > context and not self.warned:
            self.warned = True
            logger.warning(
                f"This generation has run past the model's predefined maximum length ({context}): depending on the "
                "model, expect exceptions, worse output, or nothing at all."
            )
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class MaxTimeCriteria(StoppingCriteria):
    """Done once `max_time` seconds have passed since `initial_timestamp` (default: creation)."""

    def __init__(self, max_time: float, initial_timestamp: float | None = None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids, scores, **kwargs):
        done = time.time() - self.initial_timestamp > self.max_time
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class EosTokenCriteria(StoppingCriteria):
    """Done for the rows whose last `new_token_length` tokens hold one of `eos_token_id` (int, list or 1-D
    tensor)."""

    def __init__(self, eos_token_id):
        self.eos_token_id = torch.as_tensor(eos_token_id, dtype=torch.long).reshape(-1)

    def __call__(self, input_ids, scores, new_token_length: int = 1, **kwargs):
        self.eos_token_id = self.eos_token_id.to(input_ids.device)
        return torch.isin(input_ids[:, -new_token_length:], self.eos_token_id).any(dim=-1)


def validate_stopping_criteria(stopping_criteria: StoppingCriteriaList, max_length: int) -> StoppingCriteriaList:
    """A copy of `stopping_criteria` that stops at `max_length`: a MaxLengthCriteria is added when there is
    none; one with another length is kept, with a warning."""
    criteria = copy.deepcopy(stopping_criteria)
    if criteria.max_length is None:
        criteria.append(MaxLengthCriteria(max_length=max_length))
    elif criteria.max_length != max_length:
        warnings.warn("You set different `max_length` for stopping criteria and `max_length` parameter", UserWarning)
    return criteria


def byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the printable character standing for each byte -> the byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            chars[chr(byte)] = byte
        else:
            chars[chr(256 + extra)] = byte
            extra += 1
    return chars


def is_byte_level(tokenizer) -> bool:
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return False
    if type(decoder).__name__ == "ByteLevel":
        return True
    state = getattr(decoder, "__getstate__", lambda: None)()
    if isinstance(state, bytes):
        state = state.decode(errors="replace")
    return isinstance(state, str) and '"ByteLevel"' in state


class TokenBytes:
    """The bytes each token id adds to the decoded text, worked out on first use and remembered.

    Byte-level vocabularies (GPT-2, Llama 3, SmolLM2) spell bytes with printable characters: read them back.
    "<0xNN>" byte-fallback tokens are one byte. Anything else is decoded after a fixed prefix, so a leading
    space marker ("▁word", "Ġword") becomes the space it stands for.
    """

    PREFIX = "abcdef"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.byte_decoder = byte_level_decoder() if is_byte_level(tokenizer) else None
        self.cache: dict[int, bytes] = {}
        self._prefix_ids = None

    def __call__(self, token_id: int) -> bytes:
        piece = self.cache.get(token_id)
        if piece is None:
            piece = self.cache[token_id] = self._compute(token_id)
        return piece

    def _compute(self, token_id: int) -> bytes:
        convert = getattr(self.tokenizer, "convert_ids_to_tokens", None)
        token = convert(token_id) if convert is not None else None
        if isinstance(token, str):
            if self.byte_decoder is not None and token and all(ch in self.byte_decoder for ch in token):
                return bytes(self.byte_decoder[ch] for ch in token)
            if len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                try:
                    return bytes([int(token[3:5], 16)])
                except ValueError:
                    pass
        prefix = self.prefix_ids()
        text = self.tokenizer.decode(prefix + [token_id])
        start = text.find(self.PREFIX)
        return (text[start + len(self.PREFIX) :] if prefix and start >= 0 else text).encode("utf-8")

    def prefix_ids(self) -> list[int]:
        if self._prefix_ids is None:
            encode = getattr(self.tokenizer, "encode", None)
            self._prefix_ids = list(encode(self.PREFIX, add_special_tokens=False)) if encode is not None else []
        return self._prefix_ids


def check_stop_strings(stop_strings) -> tuple[str, ...]:
    if isinstance(stop_strings, str):
        stop_strings = [stop_strings]
    if not isinstance(stop_strings, (list, tuple)) or not stop_strings:
        raise ValueError(f"`stop_strings` must be a string or a non-empty list of strings, but is {stop_strings!r}")
    if any(not isinstance(s, str) or not s for s in stop_strings):
        raise ValueError(f"every stop string must be a non-empty string, but `stop_strings` is {stop_strings!r}")
    return tuple(stop_strings)


class StopStringCriteria(StoppingCriteria):
    """Done for the rows whose text now contains one of `stop_strings`, ending inside the last token.

    A stop string that was complete before the last token does not count (it was caught the step it ended).
    Costs one host sync and a few dictionary lookups per row and step, only while stop strings are in use.
    """

    def __init__(self, tokenizer, stop_strings):
        if tokenizer is None:
            raise ValueError(
                "There are one or more stop strings, either in the arguments to `generate` or in the model's "
                "generation config, but we could not locate a tokenizer. When generating with stop strings, you "
                "must pass the model's tokenizer to the `tokenizer` argument of `generate`."
            )
        self.stop_strings = check_stop_strings(stop_strings)
        self.targets = tuple(s.encode("utf-8") for s in self.stop_strings)
        self.window = max(len(t) for t in self.targets)  # every token adds at least one byte
        self.token_bytes = TokenBytes(tokenizer)

    def row_matches(self, ids: list[int]) -> bool:
        pieces = [self.token_bytes(t) for t in ids]
        text = b"".join(pieces)
        last_start = len(text) - len(pieces[-1])
        # an occurrence starting at or after this point ends inside the last token
        return any(text.find(t, max(0, last_start - len(t) + 1)) >= 0 for t in self.targets)

    def __call__(self, input_ids, scores, **kwargs):
        rows = input_ids[:, -self.window :].tolist()
        return torch.tensor([self.row_matches(r) for r in rows], dtype=torch.bool, device=input_ids.device)
