"""Streamers: generate() calls `put(prompt_ids)`, then `put(new_token_ids)` once per step, then `end()`.

TextStreamer decodes the tokens seen so far and emits only the text that can
no longer change: whole words, CJK characters, and never a partial UTF-8
character (a decode ending in U+FFFD waits for the next token).
TextIteratorStreamer hands the same text pieces to another thread through a
queue, so generate() can run in a background thread while the caller iterates.
"""

import unicodedata
from queue import Queue

REPLACEMENT_CHAR = "\ufffd"


class BaseStreamer:
    def put(self, value):
        raise NotImplementedError(f"{type(self).__name__} must implement put(value)")

    def end(self):
        raise NotImplementedError(f"{type(self).__name__} must implement end()")


def is_cjk(char: str) -> bool:
    """CJK ideographs are words on their own: they can be emitted as soon as they appear."""
    cp = ord(char)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


class TextStreamer(BaseStreamer):
    """Print generated text to stdout as soon as it is final. Batch size 1 only."""

    def __init__(self, tokenizer, skip_prompt: bool = False, **decode_kwargs):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.token_cache: list[int] = []  # tokens of the current line, decoded together
        self.print_len = 0  # characters of their decoding already emitted
        self.next_tokens_are_prompt = True

    def put(self, value):
        if value.dim() > 1:
            if value.shape[0] > 1:
                raise ValueError(f"{type(self).__name__} only supports batch size 1, got {value.shape[0]} rows")
            value = value[0]
        if self.skip_prompt and self.next_tokens_are_prompt:
            self.next_tokens_are_prompt = False
            return
        self.next_tokens_are_prompt = False
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith(REPLACEMENT_CHAR):
            printable = ""  # the last token ends inside a UTF-8 character: wait for the rest of it
        elif text.endswith("\n"):
            # A line is complete: emit it and restart the cache from the last token, which keeps the
            # decoding context (a following word's leading space) for the next line.
            printable = text[self.print_len :]
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        else:
            pending = text[self.print_len :]
            if pending and is_cjk(pending[-1]):
                printable = pending
            elif all(ch.isspace() or unicodedata.category(ch)[0] in "LMN" for ch in pending):
                # letters, marks, digits and spaces do not change when more tokens come
                printable = pending
            else:
                # a symbol may still merge with what follows: emit up to the last space
                printable = text[self.print_len : text.rfind(" ") + 1]
            self.print_len += len(printable)
        self.on_finalized_text(printable)

    def end(self):
        """Emit whatever is left and finish the stream."""
        printable = ""
        if self.token_cache:
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            printable = text[self.print_len :]
        self.token_cache = []
        self.print_len = 0
        self.next_tokens_are_prompt = True
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        print(text, flush=True, end=None if stream_end else "")


class TextIteratorStreamer(TextStreamer):
    """Iterate over the generated text pieces from another thread; `timeout` (seconds) bounds each wait."""

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, **decode_kwargs):
        super().__init__(tokenizer, skip_prompt, **decode_kwargs)
        self.text_queue: Queue = Queue()
        self.stop_signal = None
        self.timeout = timeout

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.text_queue.put(text, timeout=self.timeout)
        if stream_end:
            self.text_queue.put(self.stop_signal, timeout=self.timeout)

    def __iter__(self):
        return self

    def __next__(self):
        value = self.text_queue.get(timeout=self.timeout)  # raises queue.Empty after `timeout` seconds
        if value is self.stop_signal:
            raise StopIteration
        return value
