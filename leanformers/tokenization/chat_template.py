"""Chat templates: compiled in jinja2's immutable sandbox with the helpers transformers gives templates,
conversations checked and made plain data, the spans and token masks of assistant replies (from
{% generation %} blocks, or found message by message), and the cut after a final message that is continued.
"""

import contextvars
import functools
import json
import re
from datetime import datetime


def _template_error(message):
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson escapes HTML characters, which chat templates must not do.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


@functools.lru_cache(maxsize=32)
def compile_chat_template(template: str):
    """A chat template compiled in jinja2's immutable sandbox, with the helpers transformers gives templates."""
    import jinja2
    from jinja2 import nodes
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """`{% generation %}...{% endgeneration %}` marks assistant text; rendering keeps the text as is."""

        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

        def _render(self, caller):
            text = caller()
            # While spans are being tracked, fence the block so its place in the rendered chat can be found.
            return f"{GENERATION_START}{text}{GENERATION_END}" if TRACK_GENERATION.get() else text

    class Namespace(jinja2.utils.Namespace):
        """namespace() that refuses underscore names, so templates cannot reach Python internals through it."""

        def __init__(*args, **kwargs):
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationBlock, loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _template_error
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = Namespace
    env.globals["dict"] = TemplateDict()
    return env.from_string(template)


class TemplateDict:
    """`dict(...)` for templates: builds plain dicts without exposing the dict type itself."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


# Private-use characters that fence {% generation %} output while its character spans are tracked.
GENERATION_START, GENERATION_END = "\U000f0002", "\U000f0003"
TRACK_GENERATION = contextvars.ContextVar("track_generation", default=False)


def has_generation_blocks(template: str) -> bool:
    return re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def render_tracking_generation(compiled, **variables) -> tuple[str, list[tuple[int, int]]]:
    """Render, and return the [start, end) characters of each {% generation %} block's output."""
    token = TRACK_GENERATION.set(True)
    try:
        fenced = compiled.render(**variables)
    finally:
        TRACK_GENERATION.reset(token)
    pieces = re.split(f"({GENERATION_START}|{GENERATION_END})", fenced)
    text, spans, start = [], [], None
    length = 0
    for piece in pieces:
        if piece == GENERATION_START:
            start = length
        elif piece == GENERATION_END:
            spans.append((start, length))
        else:
            text.append(piece)
            length += len(piece)
    return "".join(text), spans


def message_texts(message: dict) -> list[str]:
    """The text a message carries: its content string, or the text of its content blocks."""
    content = message.get("content")
    if isinstance(content, str):
        return [content] if content else []
    if isinstance(content, list):
        return [b["text"] for b in content if isinstance(b, dict) and isinstance(b.get("text"), str) and b["text"]]
    return []


def assistant_spans_by_message(render, messages: list[dict], rendered: str, end_markers: list[str]):
    """Character spans of the assistant replies in `rendered`, for templates without {% generation %} blocks.

    Each assistant message's region is what rendering the conversation up to it adds to rendering the
    conversation before it; its content is looked up inside that region (the template writes the header
    first, so the last occurrence is the reply). The end-of-turn token the template writes right after the
    reply (<|im_end|>, <|eot_id|>, </s>, ...) belongs to the span: the model has to learn to produce it.
    When a template renders earlier messages differently once later ones follow, the search continues
    from the previous reply instead.
    """
    from jinja2.exceptions import TemplateError

    spans, cursor = [], 0
    for i, message in enumerate(messages):
        if message.get("role") != "assistant" or not message_texts(message):
            continue
        start, end, in_region = cursor, len(rendered), False
        try:
            before = render(messages[:i]) if i else ""
            upto = render(messages[: i + 1])
            if rendered.startswith(upto) and upto.startswith(before) and len(before) >= cursor:
                start, end, in_region = len(before), len(upto), True
        except TemplateError:
            pass  # the template refuses a partial conversation; search from the previous reply
        found = locate_texts(rendered, message_texts(message), start, end, from_the_end=in_region)
        if found is None:
            raise ValueError(
                f"message {i} (assistant): its content does not appear in the rendered chat, so the assistant "
                "mask cannot be built; use a template whose assistant turns are marked with "
                "{% generation %}...{% endgeneration %}"
            )
        at, stop = found
        marker = next((m for m in end_markers if rendered.startswith(m, stop)), None)
        stop += len(marker) if marker else 0
        spans.append((at, stop))
        cursor = stop
    return spans


def locate_texts(rendered, texts, start, end, from_the_end):
    """[first, last) characters of `texts` appearing in order in rendered[start:end], or None."""
    for variant in (texts, [t.strip() for t in texts]):
        if not all(variant):
            continue
        positions = []
        if from_the_end:
            limit = end
            for text in reversed(variant):
                at = rendered.rfind(text, start, limit)
                if at < 0:
                    break
                positions.insert(0, (at, at + len(text)))
                limit = at
        else:
            cursor = start
            for text in variant:
                at = rendered.find(text, cursor, end)
                if at < 0:
                    break
                positions.append((at, at + len(text)))
                cursor = at + len(text)
        if len(positions) == len(variant):
            return positions[0][0], positions[-1][1]
    return None


def token_mask_from_spans(offsets, spans) -> list[int]:
    """1 for every token whose characters overlap a span (a span cut by truncation keeps its remaining tokens)."""
    mask = [0] * len(offsets)
    span_index = 0
    for token_index, (token_start, token_end) in enumerate(offsets):
        while span_index < len(spans) and token_start >= spans[span_index][1]:
            span_index += 1
        if span_index == len(spans):
            break
        if token_end > spans[span_index][0]:
            mask[token_index] = 1
    return mask


def plain_template_data(value):
    """A copy of `value` built from JSON types only, so a template sees no object with methods to abuse."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, dict):
        return {plain_template_data(k): plain_template_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_template_data(v) for v in value]
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):  # numpy / torch scalars
        return plain_template_data(value.item())
    return f"<{type(value).__name__}>"


def check_conversation(conversation, index=None) -> list[dict]:
    """Messages as plain dicts without None values; each must be a dict with a string 'role'."""
    where = "conversation" if index is None else f"conversation {index}"
    if not isinstance(conversation, (list, tuple)):
        raise TypeError(f"{where} must be a list of messages (dicts with 'role' and 'content'), "
                        f"got {type(conversation).__name__}")
    messages = []
    for i, message in enumerate(conversation):
        if not isinstance(message, dict):
            raise TypeError(f"{where}, message {i}: expected a dict with 'role' and 'content', "
                            f"got {type(message).__name__}: {message!r}")
        if not isinstance(message.get("role"), str):
            raise ValueError(f"{where}, message {i} has no 'role' (a string such as 'user', 'assistant', "
                             f"'system'); its keys are {sorted(message)}")
        if message.get("content") is None and not message.get("tool_calls"):
            raise ValueError(f"{where}, message {i} ({message['role']}) has no 'content' (text, or a list of content "
                             f"blocks) and no 'tool_calls'; its keys are {sorted(message)}")
        message = plain_template_data({k: v for k, v in message.items() if v is not None})
        reasoning = next((message[k] for k in REASONING_FIELDS if k in message), None)
        if reasoning is not None:  # templates read reasoning_content, gpt-oss ones read thinking
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        messages.append(message)
    return messages


REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


CONTINUE_TAG = "CONTINUE_FINAL_MESSAGE_TAG "


def tag_final_message(messages: list[dict], field: str):
    """Append a marker to the last message's text so the rendered chat can be cut right after it."""
    if not messages:
        raise ValueError("continue_final_message is set but the conversation is empty")
    final = messages[-1].get(field)
    if isinstance(final, str):
        messages[-1][field] = final + CONTINUE_TAG
        return final
    if isinstance(final, list):
        for block in reversed(final):
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                text = block["text"]
                block["text"] = text + CONTINUE_TAG
                return text
    raise ValueError(f"continue_final_message is set but the final message has no text in {field!r} to continue")


def cut_after_final_message(rendered: str, final_text: str) -> str:
    at = rendered.rfind(CONTINUE_TAG.strip())
    if at < 0 or final_text.strip() not in rendered:
        raise ValueError("continue_final_message is set but the chat template dropped the final message's text; "
                         f"rendered chat:\n{rendered}")
    if rendered[at: at + len(CONTINUE_TAG)] == CONTINUE_TAG:
        return rendered[:at]
    return rendered[:at].rstrip()  # the template trimmed trailing space after the marker
