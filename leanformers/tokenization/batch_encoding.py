"""What a tokenizer returns: BatchEncoding, a dict (input_ids, attention_mask, ...) with attribute access
and the Rust encodings' token / word / character maps, and the lists in it made into torch or numpy tensors.
"""

from typing import NamedTuple


def to_tensor(value, tensor_type: str, key: str):
    """A (nested) list of numbers as a torch or numpy array, or a clear error when rows differ in length."""
    if isinstance(value, list) and value and isinstance(value[0], list) and len({len(v) for v in value}) > 1:
        raise ValueError(
            f"cannot make a tensor of {key!r}: its sequences have different lengths "
            f"({sorted({len(v) for v in value})}); pass padding=True (and truncation=True) to get equal lengths"
        )
    if tensor_type == "pt":
        import torch

        if isinstance(value, torch.Tensor):
            return value
        try:
            return torch.tensor(value)
        except (TypeError, ValueError):
            text = first_text(value)
            if text is None:
                raise
            # Typically a dataset's text column left in the examples a collator pads.
            raise ValueError(
                f"Unable to create tensor: the column `{key}` holds text ({text!r}), not numbers. Remove the "
                f"columns the model does not take before batching (dataset.remove_columns([{key!r}])), or let the "
                "Trainer drop them (TrainingArguments(remove_unused_columns=True), its default)."
            ) from None
    import numpy as np

    return np.asarray(value)


def first_text(value):
    """The first string in a (nested) list, or None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return next((text for text in map(first_text, value) if text is not None), None)
    return None


def check_tensor_type(return_tensors):
    if return_tensors not in (None, "pt", "np"):
        raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")


class CharSpan(NamedTuple):
    """Characters [start, end) of a text."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """Tokens [start, end) of an encoding."""

    start: int
    end: int


class BatchEncoding(dict):
    """What a tokenizer returns: a dict (input_ids, attention_mask, ...) with attribute access.

    `encodings` keeps the Rust `tokenizers.Encoding` per sequence (tokens, offsets, word ids).
    """

    def __init__(self, data=None, encodings=None, tensor_type=None):
        super().__init__(data or {})
        self._encodings = encodings
        if tensor_type is not None:
            self.convert_to_tensors(tensor_type)

    def __getattr__(self, name):
        if name.startswith("__") or name == "_encodings":
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no {name!r}; it holds {list(self.keys())}") from None

    def __getitem__(self, item):
        if isinstance(item, str):
            return super().__getitem__(item)
        if isinstance(item, int) and self._encodings is not None:
            return self._encodings[item]
        if isinstance(item, slice):
            return {key: value[item] for key, value in self.items()}
        raise KeyError(item)

    def __getstate__(self):
        return {"data": dict(self), "encodings": self._encodings}

    def __setstate__(self, state):
        self.update(state["data"])
        self._encodings = state["encodings"]

    def __reduce__(self):
        return (BatchEncoding, (dict(self), self._encodings))

    @property
    def encodings(self):
        return self._encodings

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding(batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, the index of the word it came from (None for special and padding tokens)."""
        return self._encoding(batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token, 0 or 1 for the first or second text of a pair (None for special tokens)."""
        return self._encoding(batch_index).sequence_ids

    @property
    def is_fast(self) -> bool:
        return self._encodings is not None

    @property
    def n_sequences(self) -> int | None:
        return None if self._encodings is None else self._encodings[0].n_sequences

    @staticmethod
    def _batch_and_index(batch_or_index, index):
        return (batch_or_index, index) if index is not None else (0, batch_or_index)

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        """The (start, end) characters of a token in its text, or None for special and padding tokens."""
        batch_index, token_index = self._batch_and_index(batch_or_token_index, token_index)
        span = self._encoding(batch_index).token_to_chars(token_index)
        return CharSpan(*span) if span is not None else None

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0):
        """The index of the token holding a character of the text (or of the pair's second text), or None."""
        batch_index, char_index = self._batch_and_index(batch_or_char_index, char_index)
        return self._encoding(batch_index).char_to_token(char_index, sequence_index)

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None):
        batch_index, token_index = self._batch_and_index(batch_or_token_index, token_index)
        return self._encoding(batch_index).token_to_word(token_index)

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None):
        batch_index, token_index = self._batch_and_index(batch_or_token_index, token_index)
        return self._encoding(batch_index).token_to_sequence(token_index)

    def word_to_tokens(self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0):
        """The (start, end) tokens of a word, or None when the word produced no token."""
        batch_index, word_index = self._batch_and_index(batch_or_word_index, word_index)
        span = self._encoding(batch_index).word_to_tokens(word_index, sequence_index)
        return TokenSpan(*span) if span is not None else None

    def word_to_chars(self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0):
        batch_index, word_index = self._batch_and_index(batch_or_word_index, word_index)
        span = self._encoding(batch_index).word_to_chars(word_index, sequence_index)
        return CharSpan(*span) if span is not None else None

    def char_to_word(self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0):
        batch_index, char_index = self._batch_and_index(batch_or_char_index, char_index)
        return self._encoding(batch_index).char_to_word(char_index, sequence_index)

    def _encoding(self, batch_index):
        if self._encodings is None:
            raise ValueError("this BatchEncoding was not made by a tokenizer, so it has no tokens or word ids")
        return self._encodings[batch_index]

    def convert_to_tensors(self, tensor_type):
        check_tensor_type(tensor_type)
        if tensor_type is not None:
            for key, value in self.items():
                self[key] = to_tensor(value, tensor_type, key)
        return self

    def to(self, device):
        """Move every tensor to `device` (a string, torch.device or int); other values are kept."""
        import torch

        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device)
        return self
