"""Streamers: generate() calls `put(prompt_ids)`, then `put(new_token_ids)` once per step, then `end()`.

TextStreamer decodes the tokens seen so far and emits only the text that can
no longer change: whole words, CJK characters, and never a partial UTF-8
character (a decode ending in U+FFFD waits for the next token).
TextIteratorStreamer hands the same text pieces to another thread through a
queue, so generate() can run in a background thread while the caller iterates;
AsyncTextIteratorStreamer hands them to an asyncio event loop (a server's), to be
read with `async for`.

With stop strings (given to the streamer, or set by generate() from its
`stop_strings`), text that may be the start of a stop string is held back
until the next tokens tell, and nothing from a stop string on is emitted.
"""

import asyncio
import unicodedata
from abc import ABC, abstractmethod
from queue import Queue

REPLACEMENT_CHAR = "\ufffd"


class BaseStreamer(ABC):
    """What generate() streams to; a subclass that lacks put or end cannot be instantiated."""

    @abstractmethod
    def put(self, value):
        """Receive the prompt ids (first call), then each step's new token ids."""

    @abstractmethod
    def end(self):
        """Generation has finished."""


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

    def __init__(self, tokenizer, skip_prompt: bool = False, stop_strings=None, **decode_kwargs):
        self.tokenizer = tokenizer
        self.skip_prompt = skip_prompt
        self.decode_kwargs = decode_kwargs
        self.stop_strings: tuple[str, ...] = ()
        self.stopped = False  # a stop string was reached: nothing more is emitted until end()
        if stop_strings:
            self.set_stop_strings(stop_strings)
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
        if self.stopped:
            return
        self.token_cache.extend(value.tolist())
        text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
        if text.endswith(REPLACEMENT_CHAR):
            end = self.print_len  # the last token ends inside a UTF-8 character: wait for the rest of it
        elif text.endswith("\n"):
            end = len(text)  # a line is complete
        else:
            pending = text[self.print_len :]
            if pending and is_cjk(pending[-1]):
                end = len(text)
            elif all(ch.isspace() or unicodedata.category(ch)[0] in "LMN" for ch in pending):
                end = len(text)  # letters, marks, digits and spaces do not change when more tokens come
            else:
                end = max(self.print_len, text.rfind(" ") + 1)  # a symbol may still merge: up to the last space
        if self.stop_strings:
            end = self.stop_string_cut(text, end)
        printable = text[self.print_len : end]
        if end == len(text) and text.endswith("\n") and not self.stopped:
            # Restart the cache from the last token, which keeps the decoding context (a following word's
            # leading space) for the next line.
            self.token_cache = self.token_cache[-1:]
            self.print_len = len(self.tokenizer.decode(self.token_cache, **self.decode_kwargs))
        else:
            self.print_len = end
        self.on_finalized_text(printable)

    def set_stop_strings(self, stop_strings):
        """Hold back text that may start one of `stop_strings`; emit nothing from a stop string on."""
        if isinstance(stop_strings, str):
            stop_strings = [stop_strings]
        self.stop_strings = tuple(stop_strings)

    def stop_string_cut(self, text: str, end: int) -> int:
        """Where emitting must stop: at a stop string (and then for good), or before a possible start of one."""
        hits = [i for i in (text.find(stop, self.print_len) for stop in self.stop_strings) if i >= 0]
        if hits:
            self.stopped = True
            return min(hits)
        longest = max(map(len, self.stop_strings))
        for start in range(max(self.print_len, len(text) - longest + 1), min(end, len(text))):
            tail = text[start:]
            if any(stop.startswith(tail) for stop in self.stop_strings):
                return start
        return end

    def end(self):
        """Emit whatever is left (up to a stop string) and finish the stream."""
        printable = ""
        if self.token_cache and not self.stopped:
            text = self.tokenizer.decode(self.token_cache, **self.decode_kwargs)
            end = self.stop_string_cut(text, len(text)) if self.stop_strings else len(text)
            if not self.stopped:
                end = len(text)  # what was held back did not become a stop string
            printable = text[self.print_len : end]
        self.token_cache = []
        self.print_len = 0
        self.next_tokens_are_prompt = True
        self.stopped = False
        self.on_finalized_text(printable, stream_end=True)

    def on_finalized_text(self, text: str, stream_end: bool = False):
        print(text, flush=True, end=None if stream_end else "")


class TextIteratorStreamer(TextStreamer):
    """Iterate over the generated text pieces from another thread; `timeout` (seconds) bounds each wait."""

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, stop_strings=None,
                 **decode_kwargs):  # fmt: skip
        super().__init__(tokenizer, skip_prompt, stop_strings=stop_strings, **decode_kwargs)
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


class AsyncTextIteratorStreamer(TextStreamer):
    """Iterate with `async for` over the text pieces that generate(), run in another thread, produces.

    Create it inside the event loop that reads it (it binds to the running loop); `timeout` (seconds)
    bounds each wait, then asyncio.TimeoutError (TimeoutError from Python 3.11 on) is raised.
    """

    def __init__(self, tokenizer, skip_prompt: bool = False, timeout: float | None = None, stop_strings=None,
                 **decode_kwargs):  # fmt: skip
        super().__init__(tokenizer, skip_prompt, stop_strings=stop_strings, **decode_kwargs)
        self.text_queue: asyncio.Queue = asyncio.Queue()
        self.stop_signal = None
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()

    def on_finalized_text(self, text: str, stream_end: bool = False):
        # generate() runs in another thread: an asyncio.Queue may only be touched from its loop's thread
        self.loop.call_soon_threadsafe(self.text_queue.put_nowait, text)
        if stream_end:
            self.loop.call_soon_threadsafe(self.text_queue.put_nowait, self.stop_signal)

    def __aiter__(self):
        return self

    async def __anext__(self):
        value = await asyncio.wait_for(self.text_queue.get(), self.timeout)
        if value is self.stop_signal:
            raise StopAsyncIteration
        return value
