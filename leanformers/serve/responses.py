"""OpenAI's response bodies and stream chunks, assembled from the sequences' updates.

Token strings are the bytes each token adds to the text (generation's TokenBytes), read as UTF-8; a
token that ends inside a character shows U+FFFD there, and its `bytes` (chat) are exact. A completion's
`text_offset` counts characters into the choice's text (the prompt's, with echo, then the completion's).
"""

import time
import uuid
from dataclasses import dataclass, field

from ..generation.stopping_criteria import TokenBytes
from .sequence import TokenLogprob, Update


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


@dataclass
class ChoiceState:
    """One choice of a response as its updates arrive: the text so far and the tokens' log-probabilities.
    With echo, the prompt's text (and log-probabilities, when asked) come first."""

    index: int
    echo_text: str = ""  # not yet sent
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    offset: int = 0  # text_offset of the next token
    finish_reason: str | None = None
    completion_tokens: int = 0

    def add(self, update: Update) -> tuple[str, list[TokenLogprob]]:
        """Take an update; returns the text and log-probabilities it adds to this choice."""
        text, self.echo_text = self.echo_text + update.text, ""
        entries = (update.prompt_logprobs or []) + update.logprobs
        self.text += text
        self.logprobs += entries
        if update.finish_reason is not None:
            self.finish_reason, self.completion_tokens = update.finish_reason, update.completion_tokens
        return text, entries


class ResponseBuilder:
    """The bodies and chunks of one response: completions' (`chat=False`) or chat's."""

    def __init__(self, model_name: str, token_bytes: TokenBytes, chat: bool):
        self.model_name, self.token_bytes, self.chat = model_name, token_bytes, chat
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def token_text(self, token_id: int) -> str:
        return self.token_bytes(token_id).decode("utf-8", errors="replace")

    def completion_logprobs(self, choice: ChoiceState, entries: list[TokenLogprob]) -> dict:
        """Legacy completions' logprobs object for `entries`, whose text_offset continues the choice's."""
        tokens = [self.token_text(entry.token_id) for entry in entries]
        offsets = []
        for token in tokens:
            offsets.append(choice.offset)
            choice.offset += len(token)
        top = [None if e.top is None else {self.token_text(t): lp for t, lp in e.top} for e in entries]
        return {"tokens": tokens, "token_logprobs": [e.logprob for e in entries], "top_logprobs": top,
                "text_offset": offsets}

    def chat_logprobs(self, entries: list[TokenLogprob]) -> dict:
        def described(token_id: int, logprob: float) -> dict:
            raw = self.token_bytes(token_id)
            return {"token": raw.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(raw)}

        return {"content": [{**described(e.token_id, e.logprob),
                             "top_logprobs": [described(t, lp) for t, lp in e.top]} for e in entries]}

    def logprobs(self, choice: ChoiceState, entries: list[TokenLogprob], wanted: bool):
        if not wanted:
            return None
        return self.chat_logprobs(entries) if self.chat else self.completion_logprobs(choice, entries)

    def body(self, choices: list[ChoiceState], prompt_tokens: int, wants_logprobs: bool) -> dict:
        """The whole (not streamed) response."""
        rendered = []
        for choice in choices:
            choice.offset = 0
            logprobs = self.logprobs(choice, choice.logprobs, wants_logprobs)
            content = ({"message": {"role": "assistant", "content": choice.text}} if self.chat
                       else {"text": choice.text})
            rendered.append({"index": choice.index, **content, "logprobs": logprobs,
                             "finish_reason": choice.finish_reason})
        completion_tokens = sum(choice.completion_tokens for choice in choices)
        return {"id": self.id, "object": self.object, "created": self.created, "model": self.model_name,
                "choices": rendered, "usage": usage(prompt_tokens, completion_tokens)}

    def chunk(self, choices: list[dict], include_usage: bool) -> dict:
        chunk = {"id": self.id, "object": self.object + (".chunk" if self.chat else ""), "created": self.created,
                 "model": self.model_name, "choices": choices}
        if include_usage:
            chunk["usage"] = None  # as OpenAI: every chunk has the field, only the last one fills it
        return chunk

    def role_chunk(self, index: int, include_usage: bool) -> dict:
        """Chat streams open each choice with the assistant's role."""
        delta = {"role": "assistant", "content": ""}
        return self.chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}], include_usage)

    def update_chunk(self, choice: ChoiceState, text: str, entries: list[TokenLogprob], wants_logprobs: bool,
                     include_usage: bool) -> dict:  # fmt: skip
        """The chunk that streams what an update added to `choice` (after choice.add)."""
        logprobs = self.logprobs(choice, entries, wants_logprobs)
        finish = choice.finish_reason
        if self.chat:
            content = {"delta": {"content": text} if text or finish is None else {}}
        else:
            content = {"text": text}
        return self.chunk([{"index": choice.index, **content, "logprobs": logprobs, "finish_reason": finish}],
                          include_usage)

    def usage_chunk(self, prompt_tokens: int, choices: list[ChoiceState]) -> dict:
        chunk = self.chunk([], include_usage=False)
        chunk["usage"] = usage(prompt_tokens, sum(choice.completion_tokens for choice in choices))
        return chunk
