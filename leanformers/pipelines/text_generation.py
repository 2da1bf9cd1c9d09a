"""text-generation: continue prompts, or reply to chats, with the model's generate().

An input is a string or a chat (a list of {"role", "content"} messages; a list of chats is a batch of
them). Each input gives a list of num_return_sequences records, as in transformers: {"generated_text"}
holding the prompt plus the new text (return_full_text=False: the new text alone; for a chat, the chat
with the reply appended as an assistant message), or {"generated_token_ids"} with return_tensors=True.
Every generation setting (max_new_tokens, do_sample, temperature, top_k, top_p, repetition_penalty,
stop_strings, num_beams, streamer, generator, ...) goes to generate(), under transformers' pipeline
defaults (max_new_tokens=256, sampling at temperature 0.7) where neither the call nor the model's
generation config says otherwise; with return_dict_in_generate, generate()'s other outputs (scores,
logits, ...) join each record, as in transformers. A batch is left-padded into one generate() call; each
row is cut back to its own prompt and its own end, so a batched result equals the one-at-a-time result
(transformers keeps the batch's padding in generated_token_ids).
"""

import torch

from ..generation.config import FIELDS, GENERATE_ARGUMENTS
from .base import Pipeline, left_padded

# transformers' text-generation defaults, for the settings that neither the call nor the model's
# generation config sets (temperature only when sampling).
GENERATION_DEFAULTS = {"max_new_tokens": 256, "do_sample": True, "temperature": 0.7}
GENERATE_KWARGS = frozenset((*FIELDS, *GENERATE_ARGUMENTS, "generation_config", "tokenizer"))
OWN_PARAMETERS = {"return_full_text": None, "return_text": None, "return_tensors": None,
                  "clean_up_tokenization_spaces": None, "skip_special_tokens": True,
                  "continue_final_message": None, "stop_sequence": None, "add_special_tokens": None}


def is_message(item) -> bool:
    return isinstance(item, dict) and "role" in item and "content" in item


def is_chat(item) -> bool:
    return isinstance(item, (list, tuple)) and len(item) > 0 and is_message(item[0])


class Chat:
    """One conversation as one input: a plain list of messages would read as a batch of inputs."""

    def __init__(self, messages):
        self.messages = list(messages)


def messages_of(item) -> list | None:
    """The chat an input holds (wrapped, or a list of messages from a batch of chats), or None."""
    if isinstance(item, Chat):
        return item.messages
    return list(item) if is_chat(item) else None


def continues_last(messages: list, continue_final_message) -> bool:
    """transformers' default: a chat that ends with the assistant is a reply to continue, not to start."""
    if continue_final_message is None:
        return messages[-1].get("role") == "assistant"
    return continue_final_message


def output_kind(return_full_text=None, return_text=None, return_tensors=None) -> str:
    """'full', 'new' or 'tensors', from transformers' three flags (and its rules on combining them)."""
    if return_full_text is not None:
        if return_text is not None:
            raise ValueError("`return_text` is mutually exclusive with `return_full_text`")
        if return_tensors is not None:
            raise ValueError("`return_full_text` is mutually exclusive with `return_tensors`")
        return "full" if return_full_text else "new"
    if return_tensors:
        if return_text is not None:
            raise ValueError("`return_text` is mutually exclusive with `return_tensors`")
        return "tensors"
    return "full"


def cut_at_end(row: list[int], prompt_length: int, eos: set) -> list[int]:
    """The row up to its first end-of-sequence token: what generate() writes after it is padding."""
    for i in range(prompt_length, len(row)):
        if row[i] in eos:
            return row[:i + 1]
    return row


def per_row_outputs(output, rows: int) -> dict:
    """generate()'s dict output (return_dict_in_generate) as lists per returned row: tensors with a row
    dimension, and per-step tuples of them (scores, logits) stacked along the steps, as transformers adds
    them to the records."""
    extra = {}
    for key in output.keys():
        value = output[key]
        if key in ("sequences", "cache"):
            continue
        if isinstance(value, tuple) and value and torch.is_tensor(value[0]) and value[0].shape[0] == rows:
            value = torch.stack(value, dim=1)
        if torch.is_tensor(value) and value.dim() > 0 and value.shape[0] == rows:
            extra[key] = value.cpu().tolist()
    return extra


class TextGenerationPipeline(Pipeline):
    task = "text-generation"
    parameters = {**OWN_PARAMETERS, **dict.fromkeys(GENERATE_KWARGS)}
    # Prompts keep their order: a sampled text depends on the random numbers its batch draws, and a
    # streamer shows the prompts as given.
    sort_by_length = False

    def __call__(self, inputs, batch_size=None, **params):
        if is_chat(inputs):
            inputs = Chat(inputs)
        return super().__call__(inputs, batch_size=batch_size, **params)

    def checked(self, params):
        # top_k is generate()'s top-k filter here (0 turns it off), not the number of labels the base checks.
        checked = super().checked({k: v for k, v in params.items() if k != "top_k"})
        output_kind(checked.get("return_full_text"), checked.get("return_text"), checked.get("return_tensors"))
        return {**params, **checked}

    def preprocess(self, item, continue_final_message=None, add_special_tokens=None, **params):
        messages = messages_of(item)
        if messages is not None:
            continue_final_message = continues_last(messages, continue_final_message)
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=not continue_final_message,
                                                     continue_final_message=continue_final_message,
                                                     return_dict=False)
        elif isinstance(item, str):
            if not item:
                raise ValueError("the prompt is an empty string: generation needs at least one token to continue")
            options = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
            ids = self.tokenizer(item, **options)["input_ids"]
        else:
            raise TypeError(f"a text-generation input is a string or a chat (a list of {{'role', 'content'}} "
                            f"messages), got {type(item).__name__}")
        return [{"input_ids": list(ids)}]

    def generate_kwargs(self, params: dict) -> dict:
        """The call's generation settings plus transformers' pipeline defaults for those nobody set."""
        kwargs = {k: params[k] for k in params["given"] if k in GENERATE_KWARGS}
        if params.get("stop_sequence") is not None:  # transformers' older name for stop_strings
            kwargs["stop_strings"] = params["stop_sequence"]
        model_config = getattr(self.model, "generation_config", None)
        user_config = kwargs.get("generation_config")
        already_set = {**(model_config.to_diff_dict() if model_config is not None else {}),
                       **(user_config.to_diff_dict() if user_config is not None else {}), **kwargs}
        added = {k: v for k, v in GENERATION_DEFAULTS.items() if k not in already_set}
        if "max_length" in already_set:  # a default max_new_tokens would override it
            added.pop("max_new_tokens", None)
        if not {**already_set, **added}.get("do_sample"):
            added.pop("temperature", None)
        if "pad_token_id" not in already_set and self.tokenizer.pad_token_id is not None:
            added["pad_token_id"] = self.tokenizer.pad_token_id
        if already_set.get("stop_strings"):
            added["tokenizer"] = self.tokenizer
        return {**added, **kwargs}

    def end_token_ids(self, kwargs: dict) -> set:
        model_config = getattr(self.model, "generation_config", None)
        eos = kwargs.get("eos_token_id", model_config.eos_token_id if model_config is not None else None)
        return set(eos if isinstance(eos, (list, tuple)) else [] if eos is None else [eos])

    def forward(self, features, **params):
        kwargs = self.generate_kwargs(params)
        prompts = [f["input_ids"] for f in features]
        fill = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, mask = left_padded(prompts, fill)
        output = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), **kwargs)
        sequences = output if torch.is_tensor(output) else output.sequences
        extra = {} if torch.is_tensor(output) else per_row_outputs(output, sequences.shape[0])
        eos = self.end_token_ids(kwargs)
        copies, width = sequences.shape[0] // len(features), ids.shape[1]
        rows = sequences.cpu().tolist()
        per_feature = []
        for i, prompt in enumerate(prompts):
            mine = range(i * copies, (i + 1) * copies)
            generated = [cut_at_end(rows[r][width - len(prompt):], len(prompt), eos) for r in mine]
            per_feature.append({"input_ids": prompt, "sequences": generated,
                                "extra": {key: [values[r] for r in mine] for key, values in extra.items()}})
        return per_feature

    def postprocess(self, outputs, item, return_full_text=None, return_text=None, return_tensors=None,
                    clean_up_tokenization_spaces=None, skip_special_tokens=True, continue_final_message=None,
                    **params):
        kind = output_kind(return_full_text, return_text, return_tensors)
        out = outputs[0]
        prompt_length = len(out["input_ids"])
        records = []
        for i, sequence in enumerate(out["sequences"]):
            if kind == "tensors":
                record = {"generated_token_ids": sequence}
            else:
                text = self.tokenizer.decode(sequence[prompt_length:], skip_special_tokens=skip_special_tokens,
                                             clean_up_tokenization_spaces=clean_up_tokenization_spaces)
                full = kind == "full"
                record = {"generated_text": self.full_text(item, text, continue_final_message) if full else text}
            record.update({key: values[i] for key, values in out["extra"].items()})
            records.append(record)
        return records

    def full_text(self, item, text: str, continue_final_message=None):
        """The prompt with the new text: appended to a string; for a chat, a new assistant message, or the
        last message continued."""
        if isinstance(item, str):
            return item + text
        messages = messages_of(item)
        if continues_last(messages, continue_final_message):
            return messages[:-1] + [{**messages[-1], "content": messages[-1]["content"] + text}]
        return messages + [{"role": "assistant", "content": text}]
