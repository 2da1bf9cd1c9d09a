"""OpenAI's request bodies in: each field checked for its type and range, prompts tokenized, and the
sequences' sampling settings out. Anything wrong is an ApiError naming the field, which the routes answer
in OpenAI's error shape, {"error": {"message", "type", "param", "code"}}.
"""

import json
from dataclasses import dataclass

from .sequence import SamplingParams

MAX_CHOICES = 128  # OpenAI's bound on n
MAX_LOGPROBS = 20  # alternatives per token, as OpenAI's top_logprobs
MAX_STOP_STRINGS = 4
# top_p=0 is allowed and means "the most likely token only": a tiny top_p does that (top-p keeps one token).
TOP_P_FLOOR = 1e-9
COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat runs to the end of the context
# Fields of OpenAI's API that this server does not implement: refused rather than silently ignored.
UNSUPPORTED_FIELDS = ("best_of", "suffix", "logit_bias", "tools", "functions", "response_format", "audio",
                      "modalities", "prediction")
TYPE_NAMES = {int: "an integer", float: "a number", bool: "a boolean", str: "a string", list: "an array",
              dict: "an object"}


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error",
                 code: str | None = None, headers: dict | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code
        self.headers = headers

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def parse_json(raw: bytes) -> dict:
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the request body is not valid JSON: {err}") from None
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object, got {type(body).__name__}")
    return body


def is_a(value, kind) -> bool:
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, kind) or (kind is float and isinstance(value, int))


def get(body: dict, name: str, kinds, default=None, low=None, high=None):
    """body[name] checked to be one of `kinds` (int, float, bool, str, list, dict, or a tuple of them) and,
    for numbers, within [low, high]; `default` when it is absent or null."""
    value = body.get(name)
    if value is None:
        return default
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not any(is_a(value, kind) for kind in kinds):
        expected = " or ".join(TYPE_NAMES[kind] for kind in kinds)
        raise ApiError(400, f"'{name}' must be {expected}, got {json.dumps(value)[:80]}", param=name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ApiError(400, f"'{name}' must be between {low} and {high}, got {value}", param=name)
    return value


@dataclass
class ServedModel:
    """What the routes check requests against: the model's name, tokenizer and limits."""

    name: str
    tokenizer: object
    context: int  # the model's context window, prompt and generated tokens together
    max_tokens_limit: int  # the most new tokens one sequence may ask for
    eos_token_ids: frozenset


@dataclass
class GenerationJob:
    """A checked completion or chat request: its prompts (token ids) and how to continue each."""

    prompts: list[list[int]]
    prompt_texts: list[str]
    params: list[SamplingParams]  # one per prompt (the default max_tokens depends on the prompt's length)
    n: int
    stream: bool
    include_usage: bool
    echo: bool = False


def check_model(body: dict, served: str):
    model = get(body, "model", str)
    if model is None:
        raise ApiError(400, "you must provide a model parameter", param="model")
    if model != served:
        raise ApiError(400, f"The model `{model}` does not exist: this server serves `{served}`",
                       param="model", code="model_not_found")


def check_unsupported(body: dict):
    for name in UNSUPPORTED_FIELDS:
        if body.get(name) is not None:
            raise ApiError(400, f"'{name}' is not supported by this server", param=name)


def stop_strings(body: dict) -> tuple[str, ...]:
    stop = get(body, "stop", (str, list), default=[])
    stop = [stop] if isinstance(stop, str) else stop
    if len(stop) > MAX_STOP_STRINGS or not all(isinstance(s, str) and s for s in stop):
        raise ApiError(400, f"'stop' must be a non-empty string or up to {MAX_STOP_STRINGS} of them, got "
                       f"{json.dumps(stop)[:80]}", param="stop")
    return tuple(stop)


def max_new_tokens(body: dict, names: tuple, prompt_length: int, model: ServedModel, default: int | None) -> int:
    """The new tokens a sequence may generate: the request's first field of `names` that is set, else
    `default` (None: to the end of the context), checked against the limit and the context."""
    name, asked = next(((n, get(body, n, int)) for n in names if body.get(n) is not None), (names[0], None))
    if asked is not None and asked <= 0:
        raise ApiError(400, f"'{name}' must be at least 1, got {asked}", param=name)
    if asked is not None and asked > model.max_tokens_limit:
        raise ApiError(400, f"'{name}' is {asked}, above this server's limit of {model.max_tokens_limit}", param=name)
    if prompt_length >= model.context:
        raise ApiError(400, f"This model's maximum context length is {model.context} tokens, but the prompt has "
                       f"{prompt_length} tokens: shorten it", param="messages" if "max_completion_tokens" in names
                       else "prompt", code="context_length_exceeded")
    room = model.context - prompt_length
    if asked is None:
        return min(room, model.max_tokens_limit, default or room)
    if asked > room:
        raise ApiError(400, f"This model's maximum context length is {model.context} tokens, but the prompt has "
                       f"{prompt_length} tokens and '{name}' asks for {asked} more: ask for at most {room}",
                       param=name, code="context_length_exceeded")
    return asked


def common_settings(body: dict) -> dict:
    """The sampling fields completions and chat share, as SamplingParams keywords."""
    seed = get(body, "seed", int)
    return dict(
        temperature=get(body, "temperature", float, default=1.0, low=0, high=2),
        top_p=max(get(body, "top_p", float, default=1.0, low=0, high=1), TOP_P_FLOOR),
        stop=stop_strings(body),
        seed=seed,
        presence_penalty=get(body, "presence_penalty", float, default=0.0, low=-2, high=2),
        frequency_penalty=get(body, "frequency_penalty", float, default=0.0, low=-2, high=2),
    )


def stream_settings(body: dict) -> tuple[bool, bool]:
    stream = get(body, "stream", bool, default=False)
    options = get(body, "stream_options", dict, default={})
    if options and not stream:
        raise ApiError(400, "'stream_options' is only allowed when 'stream' is true", param="stream_options")
    return stream, get(options, "include_usage", bool, default=False)


def is_token_ids(value) -> bool:
    return isinstance(value, list) and bool(value) and all(is_a(t, int) for t in value)


def completion_prompts(body: dict, tokenizer) -> tuple[list[list[int]], list[str]]:
    """`prompt`: a string, an array of token ids, or an array of either: the token ids and text of each."""
    prompt = body.get("prompt")
    items = prompt if isinstance(prompt, list) and prompt and not is_token_ids(prompt) else [prompt]
    prompts, texts = [], []
    for item in items:
        if isinstance(item, str):
            prompts.append(tokenizer(item).input_ids)
            texts.append(item)
        elif is_token_ids(item):
            if not all(0 <= t < len(tokenizer) for t in item):
                raise ApiError(400, f"'prompt' holds token ids outside the vocabulary [0, {len(tokenizer)})",
                               param="prompt")
            prompts.append(item)
            texts.append(tokenizer.decode(item))
        else:
            raise ApiError(400, "'prompt' must be a string, an array of token ids, or an array of strings or of "
                           f"arrays of token ids, got {json.dumps(prompt)[:80]}", param="prompt")
        if not prompts[-1]:
            raise ApiError(400, "'prompt' is empty: give at least one token of text", param="prompt")
    return prompts, texts


def parse_completion(body: dict, model: ServedModel) -> GenerationJob:
    check_model(body, model.name)
    check_unsupported(body)
    prompts, texts = completion_prompts(body, model.tokenizer)
    logprobs = get(body, "logprobs", int, low=0, high=MAX_LOGPROBS)
    echo = get(body, "echo", bool, default=False)
    settings = common_settings(body)
    n = get(body, "n", int, default=1, low=1, high=MAX_CHOICES)
    stream, include_usage = stream_settings(body)
    params = [SamplingParams(max_tokens=max_new_tokens(body, ("max_tokens",), len(p), model,
                                                       COMPLETIONS_DEFAULT_MAX_TOKENS),
                             logprobs=logprobs, prompt_logprobs=echo and logprobs is not None, **settings)
              for p in prompts]
    return GenerationJob(prompts, texts, params, n, stream, include_usage, echo)


def message_text(content, index: int) -> str:
    """A message's content: a string, or a list of text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(part["text"] for part in content)
    raise ApiError(400, f"messages[{index}].content must be a string or an array of text parts "
                   "({'type': 'text', 'text': ...}); this server reads text only", param=f"messages[{index}].content")


def chat_prompt(body: dict, tokenizer) -> list[int]:
    messages = get(body, "messages", list)
    if not messages:
        raise ApiError(400, "'messages' must be a non-empty array of messages", param="messages")
    conversation = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise ApiError(400, f"messages[{i}] must be an object with a string 'role'", param=f"messages[{i}]")
        conversation.append({"role": message["role"], "content": message_text(message.get("content"), i)})
    try:
        return tokenizer.apply_chat_template(conversation, add_generation_prompt=True, return_dict=False)
    except Exception as err:  # the template's own checks (roles out of order, ...) are the request's fault
        raise ApiError(400, f"the chat template cannot render these messages: {err}", param="messages") from None


def parse_chat(body: dict, model: ServedModel) -> GenerationJob:
    check_model(body, model.name)
    check_unsupported(body)
    prompt = chat_prompt(body, model.tokenizer)
    wants_logprobs = get(body, "logprobs", bool, default=False)
    top_logprobs = get(body, "top_logprobs", int, low=0, high=MAX_LOGPROBS)
    if top_logprobs is not None and not wants_logprobs:
        raise ApiError(400, "'top_logprobs' needs 'logprobs' set to true", param="top_logprobs")
    settings = common_settings(body)
    n = get(body, "n", int, default=1, low=1, high=MAX_CHOICES)
    stream, include_usage = stream_settings(body)
    max_tokens = max_new_tokens(body, ("max_completion_tokens", "max_tokens"), len(prompt), model, None)
    params = SamplingParams(max_tokens=max_tokens, logprobs=(top_logprobs or 0) if wants_logprobs else None,
                            **settings)
    return GenerationJob([prompt], [""], [params], n, stream, include_usage)


def parse_embeddings(body: dict, served: str) -> tuple[list[str], str]:
    """The texts to embed and the encoding of the vectors ("float" lists or "base64" float32 bytes)."""
    check_model(body, served)
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
        raise ApiError(400, "'input' must be a non-empty string or an array of non-empty strings", param="input")
    encoding = get(body, "encoding_format", str, default="float")
    if encoding not in ("float", "base64"):
        raise ApiError(400, f"'encoding_format' must be 'float' or 'base64', got {encoding!r}", param="encoding_format")
    if body.get("dimensions") is not None:
        raise ApiError(400, "'dimensions' is not supported: the embedding model has a fixed size", param="dimensions")
    return texts, encoding
