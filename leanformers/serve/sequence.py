"""One sequence the server generates: its sampling settings, how its next token is picked from the model's
logits, when it is done, and the text and log-probabilities it hands to the request that asked for it.

A Sequence is built from generation's pieces: the logits processors (temperature, top-p, and OpenAI's
presence and frequency penalties) with the sampler and the sequence's own torch.Generator, so that a seed
gives the same tokens whatever else runs in the batch; the stop-string criteria; and a TextStreamer whose
text (held back while it may still grow into a stop string, or end inside a character) is collected for
the next update instead of printed. The scheduler owns the model and steps many sequences as one batch;
a Sequence only ever sees its own row of logits.
"""

from dataclasses import dataclass, field

import torch

from ..generation import (
    GenerationConfig,
    StopStringCriteria,
    TextStreamer,
    apply_presence_frequency_penalty,
    build_logits_processors,
    sample_next_token,
)

# JSON has no -inf: a token the model rules out is reported with this log-probability (as vLLM does).
LOGPROB_FLOOR = -9999.0


@dataclass(frozen=True)
class SamplingParams:
    """What a request asks of each of its sequences (OpenAI's fields, checked by the routes)."""

    max_tokens: int
    temperature: float = 1.0  # 0 picks the most likely token (greedy)
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # None: no log-probabilities; k: each token's and its k best alternatives'
    prompt_logprobs: bool = False  # the same for the prompt's tokens (completions' echo)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0


@dataclass
class TokenLogprob:
    token_id: int
    logprob: float | None  # None for a prompt's first token, which nothing predicts
    top: list[tuple[int, float]] | None  # (token id, log-probability) of the best alternatives, most likely first


@dataclass
class Update:
    """What one sequence produced since its last update; the last one has `finish_reason` or `error`."""

    index: int  # the choice this sequence is, within its request
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)  # the tokens generated since the last update
    prompt_logprobs: list[TokenLogprob] | None = None  # in the first update, when the request asks
    finish_reason: str | None = None  # "stop" (end of sequence token or stop string) or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0  # every generated token, the end of sequence token included
    error: str | None = None


class CollectedText(TextStreamer):
    """A TextStreamer that keeps the text it would print, for the sequence's next update."""

    def __init__(self, tokenizer, stop: tuple[str, ...]):
        super().__init__(tokenizer, stop_strings=stop or None, skip_special_tokens=True)
        self.pieces: list[str] = []

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.pieces.append(text)

    def take(self) -> str:
        text, self.pieces = "".join(self.pieces), []
        return text


def token_logprob(logprobs, token_id: int, alternatives: int) -> TokenLogprob:
    """The log-probability of `token_id` and of the `alternatives` best tokens, from logprobs (V,)."""
    top = []
    if alternatives:
        values, ids = logprobs.topk(alternatives)
        top = [(i, max(v, LOGPROB_FLOOR)) for i, v in zip(ids.tolist(), values.tolist(), strict=True)]
    return TokenLogprob(token_id, max(float(logprobs[token_id]), LOGPROB_FLOOR), top)


class Sequence:
    """A prompt being continued. `deliver(update)` is called from the scheduler's thread; `cancel()` may be
    called from any thread, and the scheduler drops the sequence before its next step."""

    def __init__(self, prompt_ids: list[int], params: SamplingParams, tokenizer, eos_token_ids, deliver,
                 index: int = 0):  # fmt: skip
        self.params, self.index, self.deliver = params, index, deliver
        self.eos_token_ids = frozenset(eos_token_ids)
        self.prompt_length = len(prompt_ids)
        self.ids = torch.zeros(1, self.prompt_length + params.max_tokens, dtype=torch.long)  # prompt, then tokens
        self.ids[0, : self.prompt_length] = torch.tensor(prompt_ids, dtype=torch.long)
        self.length = self.prompt_length
        self.sampling = params.temperature > 0
        self.generator = None
        if self.sampling:
            self.generator = torch.Generator()
            if params.seed is None:
                self.generator.seed()
            else:  # each choice of a request draws its own numbers, the same ones whatever runs beside it
                self.generator.manual_seed((params.seed + index) % 2**64)
        penalties = []
        if params.presence_penalty or params.frequency_penalty:
            penalties.append(lambda ids, scores: apply_presence_frequency_penalty(
                scores, ids[:, self.prompt_length :], params.presence_penalty, params.frequency_penalty))
        config = GenerationConfig(do_sample=self.sampling, temperature=params.temperature if self.sampling else None,
                                  top_p=params.top_p if self.sampling else None)
        self.processors = build_logits_processors(config, self.prompt_length, user_processors=penalties)
        self.stop_criteria = StopStringCriteria(tokenizer, params.stop) if params.stop else None
        self.text = CollectedText(tokenizer, params.stop)
        self.pending_logprobs: list[TokenLogprob] = []
        self.prompt_logprobs = None
        self.cancelled = False
        self.done = False

    @property
    def last_token(self) -> int:
        return int(self.ids[0, self.length - 1])

    def cancel(self):
        self.cancelled = True

    def record_prompt_logprobs(self, logits):
        """Each prompt token's log-probability given the ones before it, from the prefill's logits (1, P, V)."""
        logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1)  # (P - 1, V): position t predicts token t + 1
        first, *tokens = self.ids[0, : self.prompt_length].tolist()
        alternatives = self.params.logprobs or 0
        self.prompt_logprobs = [TokenLogprob(first, None, None)] + [
            token_logprob(row, token, alternatives) for row, token in zip(logprobs, tokens, strict=True)]

    def advance(self, logits) -> bool:
        """Pick the next token from this sequence's raw logits (1, V) float32 and deliver what it adds to the
        text; returns whether the sequence is done."""
        scores = self.processors(self.ids[:, : self.length], logits) if self.processors else logits
        token = int(sample_next_token(scores, self.generator)[0] if self.sampling else scores[0].argmax())
        if self.params.logprobs is not None:
            logprobs = torch.log_softmax(logits[0], dim=-1)
            self.pending_logprobs.append(token_logprob(logprobs, token, self.params.logprobs))
        self.ids[0, self.length] = token
        self.length += 1
        finish_reason = None
        if token in self.eos_token_ids:
            finish_reason = "stop"  # the end of sequence token is counted, not shown
        else:
            self.text.put(self.ids[0, self.length - 1 : self.length])
            if self.stop_criteria is not None and bool(self.stop_criteria(self.ids[:, : self.length], None)[0]):
                finish_reason = "stop"
        if finish_reason is None and self.length == self.ids.shape[1]:
            finish_reason = "length"
        if finish_reason is not None:
            self.text.end()
            self.done = True
        text = self.text.take()
        if text or finish_reason is not None:
            update = Update(self.index, text, self.pending_logprobs, self.prompt_logprobs, finish_reason)
            if finish_reason is not None:
                update.prompt_tokens, update.completion_tokens = self.prompt_length, self.length - self.prompt_length
            self.pending_logprobs, self.prompt_logprobs = [], None
            self.deliver(update)
        return self.done
