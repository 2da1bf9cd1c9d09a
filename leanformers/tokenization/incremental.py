"""IncrementalDecoder: the text of a growing sequence of ids, piece by piece, for streaming."""

from .tokenizer import PreTrainedTokenizer, to_id_list


class IncrementalDecoder:
    """Text of a growing sequence of ids, piece by piece, for streaming.

    `push(ids)` returns the text the new ids complete. It holds text back while it ends in an incomplete
    UTF-8 character (a Chinese character or emoji spread over several byte-level tokens decodes to U+FFFD
    until its last byte arrives), so no piece ever carries half a character. Only a short window of ids is
    decoded each time: ids from the previous emission on, compared with the text they already gave, which
    also keeps word-boundary spaces (WordPiece "##", SentencePiece "▁") right. `flush()` returns what is left.
    The pieces joined equal `tokenizer.decode(all_ids)`.
    """

    def __init__(self, tokenizer: PreTrainedTokenizer, skip_special_tokens: bool = False, **decode_kwargs):
        self.tokenizer = tokenizer
        self.decode_kwargs = {"skip_special_tokens": skip_special_tokens, **decode_kwargs}
        self.ids: list[int] = []
        self.prefix_offset = 0  # start of the window that is decoded again
        self.read_offset = 0  # ids up to here have been emitted

    def _decode(self, ids) -> str:
        return self.tokenizer.decode(ids, **self.decode_kwargs)

    def push(self, token_ids) -> str:
        ids = to_id_list(token_ids)
        self.ids.extend([ids] if isinstance(ids, int) else ids)
        seen = self._decode(self.ids[self.prefix_offset: self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        if len(text) <= len(seen) or text.endswith("\ufffd"):
            return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        return text[len(seen):]

    def flush(self) -> str:
        """The rest of the text, even an incomplete character (as U+FFFD, the way decode() shows it)."""
        seen = self._decode(self.ids[self.prefix_offset: self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(seen):]
