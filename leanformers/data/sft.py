"""Fine-tuning data recipes: datasets -> model inputs (input_ids, labels, ...).

- group_texts / lm_blocks: raw text -> fixed-length blocks, EOS between documents, remainder
  dropped, with a train/validation split (the GPT-2 recipe).
- tokenize_prompt_completion: OpenAI legacy {"prompt", "completion"} -> prompt masked with -100,
  built by tokenizing prompt and completion separately (never by searching for the prompt in
  the ids), EOS appended so the model learns to stop.
- tokenize_messages: OpenAI chat {"messages": [...]} -> labels only on assistant turns (and not
  on those with weight 0), from per-message pieces of the rendered chat template.
- pack_examples / packed_attention_mask / DataCollatorForPacking: several examples in one block,
  a block-diagonal causal mask (B, 1, T, T) so they never see each other, per-example positions.
"""

import torch

from .arrow_dataset import Dataset
from .collators import IGNORE_INDEX
from .dataset_dict import DatasetDict

CHAT_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
TEMPLATE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token; the recipes append one so the model learns to stop")
    return tokenizer.eos_token_id


# -- (a) raw text -> blocks -------------------------------------------------------------------------------
def group_texts(batch: dict, tokenizer, block_size: int, text_column: str = "text", keep_remainder: bool = False) -> dict:
    """One batch of documents -> blocks of block_size tokens; EOS after each document, the remainder
    dropped (or, with keep_remainder, kept as a shorter last block: evaluation scores every token)."""
    eos = _eos_id(tokenizer)
    ids = []
    for ids_of_doc in tokenizer(batch[text_column], add_special_tokens=False)["input_ids"]:
        ids.extend(ids_of_doc)
        ids.append(eos)
    usable = len(ids) if keep_remainder else len(ids) // block_size * block_size
    blocks = [ids[i:i + block_size] for i in range(0, usable, block_size)]
    return {"input_ids": blocks, "attention_mask": [[1] * len(block) for block in blocks],
            "labels": [list(b) for b in blocks]}


def lm_blocks(dataset, tokenizer, block_size: int = 128, text_column: str = "text", validation_size=0.05,
              seed: int = 0, batch_size: int = 1000, skip_empty: bool = True, num_proc=None) -> DatasetDict:
    """A text dataset (e.g. load_dataset("text", ...)["train"]) -> {"train", "validation"} of blocks."""
    if isinstance(dataset, DatasetDict):
        dataset = dataset["train"]
    if skip_empty:
        dataset = dataset.filter(lambda texts: [bool(t.strip()) for t in texts], input_columns=text_column,
                                 batched=True, batch_size=batch_size)
    blocks = dataset.map(group_texts, batched=True, batch_size=batch_size, remove_columns=dataset.column_names,
                         fn_kwargs=dict(tokenizer=tokenizer, block_size=block_size, text_column=text_column),
                         num_proc=num_proc)
    if len(blocks) < 2:
        raise ValueError(f"the text gives {len(blocks)} block(s) of {block_size} tokens; need at least 2 to split "
                         "off a validation set (use a smaller block_size or more text)")
    split = blocks.train_test_split(test_size=validation_size, seed=seed)
    return DatasetDict({"train": split["train"], "validation": split["test"]})


# -- (b) prompt / completion -------------------------------------------------------------------------------
def tokenize_prompt_completion(example: dict, tokenizer, max_length: int | None = None,
                               prompt_loss_weight: float = 0.0) -> dict:
    """input_ids = prompt ids + completion ids + EOS; labels -100 on the prompt.

    With prompt_loss_weight > 0 the prompt keeps its labels and `loss_weights` holds
    prompt_loss_weight on prompt positions and 1.0 on the completion.
    """
    for key in ("prompt", "completion"):
        if not isinstance(example.get(key), str):
            raise ValueError(f"a prompt/completion example needs a string {key!r}; got keys {sorted(example)}")
    prompt = tokenizer(example["prompt"], add_special_tokens=True)["input_ids"]
    completion = tokenizer(example["completion"], add_special_tokens=False)["input_ids"] + [_eos_id(tokenizer)]
    input_ids = prompt + completion
    if prompt_loss_weight:
        labels = list(input_ids)
        weights = [float(prompt_loss_weight)] * len(prompt) + [1.0] * len(completion)
    else:
        labels = [IGNORE_INDEX] * len(prompt) + completion
        weights = None
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
        weights = weights[:max_length] if weights else None
    out = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}
    if weights is not None:
        out["loss_weights"] = weights
    return out


def prompt_completion_dataset(dataset, tokenizer, max_length=None, prompt_loss_weight=0.0, num_proc=None):
    return dataset.map(tokenize_prompt_completion, remove_columns=dataset.column_names, num_proc=num_proc,
                       fn_kwargs=dict(tokenizer=tokenizer, max_length=max_length,
                                      prompt_loss_weight=prompt_loss_weight))


# -- (c) chat messages -------------------------------------------------------------------------------------
def check_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {'role', 'content'} dicts")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise ValueError(f"messages[{i}] must be a dict with a 'role', got {message!r}")
        if message["role"] not in CHAT_ROLES:
            raise ValueError(f"messages[{i}] has unknown role {message['role']!r}; expected one of {CHAT_ROLES}")
        if message.get("weight", 1) not in (0, 1):
            raise ValueError(f"messages[{i}] has weight {message['weight']!r}; OpenAI's format allows 0 or 1")
    if not any(m["role"] == "assistant" for m in messages):
        raise ValueError("the conversation has no assistant message, so there is nothing to train on")
    return messages


def render_pieces(messages: list[dict], tokenizer, chat_template=None) -> list[tuple[str, bool]]:
    """(text, trained) pieces whose concatenation is the rendered conversation.

    Rendering the conversation one message longer at a time gives each message's exact span;
    an assistant message is split into its header (the generation prompt, not trained), its
    content and end-of-turn token (trained unless weight 0), and trailing whitespace (not trained).
    """
    messages = check_messages(messages)
    plain = [{k: v for k, v in m.items() if k in TEMPLATE_KEYS} for m in messages]

    def render(upto, generation_prompt=False):
        return tokenizer.apply_chat_template(plain[:upto], tokenize=False, chat_template=chat_template,
                                             add_generation_prompt=generation_prompt)

    pieces, done = [], ""
    for i, message in enumerate(messages):
        full = render(i + 1)
        start = render(i, generation_prompt=True) if message["role"] == "assistant" and i > 0 else done
        if not full.startswith(start) or not start.startswith(done):
            raise ValueError("the chat template does not render a conversation as a prefix of the longer one "
                             f"(at messages[{i}]), so per-message spans cannot be cut from it")
        if message["role"] == "assistant":
            body = full[len(start):]
            content = body.rstrip()
            pieces += [(start[len(done):], False), (content, message.get("weight", 1) == 1),
                       (body[len(content):], False)]
        else:
            pieces.append((full[len(done):], False))
        done = full
    return [(text, trained) for text, trained in pieces if text]


def tokenize_messages(example, tokenizer, max_length: int | None = None, chat_template=None) -> dict:
    """{"messages": [...]} (or the list itself) -> input_ids, attention_mask, labels on assistant turns."""
    messages = example["messages"] if isinstance(example, dict) else example
    input_ids, labels = [], []
    for text, trained in render_pieces(messages, tokenizer, chat_template):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
    if max_length is not None:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return {"input_ids": input_ids, "attention_mask": [1] * len(input_ids), "labels": labels}


def chat_dataset(dataset, tokenizer, max_length=None, chat_template=None, num_proc=None):
    return dataset.map(tokenize_messages, remove_columns=dataset.column_names, num_proc=num_proc,
                       fn_kwargs=dict(tokenizer=tokenizer, max_length=max_length, chat_template=chat_template))


# -- (d) packing -------------------------------------------------------------------------------------------
def pack_examples(examples, block_size: int, pad_token_id: int = 0) -> dict:
    """Examples ({"input_ids", "labels"?}) -> blocks of block_size holding several examples each.

    Greedy first fit in order. Each block has input_ids, labels (-100 on padding and on each
    example's first token, which no earlier token of the same example predicts),
    position_ids restarting at 0 per example, and sequence_ids (0, 1, ... per example, -1 on
    padding) from which packed_attention_mask builds the block-diagonal mask.
    """
    rows = examples.to_list() if isinstance(examples, Dataset) else list(examples)
    blocks = []
    current = None
    for n, row in enumerate(rows):
        ids = list(row["input_ids"])
        labels = list(row.get("labels", ids))
        if len(ids) > block_size:
            raise ValueError(f"example {n} has {len(ids)} tokens, more than block_size={block_size}; truncate it first")
        if current is None or len(current["input_ids"]) + len(ids) > block_size:
            current = {"input_ids": [], "labels": [], "position_ids": [], "sequence_ids": []}
            blocks.append(current)
        seq = current["sequence_ids"][-1] + 1 if current["sequence_ids"] else 0
        current["input_ids"] += ids
        current["labels"] += [IGNORE_INDEX] + labels[1:]
        current["position_ids"] += list(range(len(ids)))
        current["sequence_ids"] += [seq] * len(ids)
    for block in blocks:
        fill = block_size - len(block["input_ids"])
        block["input_ids"] += [pad_token_id] * fill
        block["labels"] += [IGNORE_INDEX] * fill
        block["position_ids"] += [0] * fill
        block["sequence_ids"] += [-1] * fill
    return {key: [b[key] for b in blocks] for key in ("input_ids", "labels", "position_ids", "sequence_ids")}


def packed_attention_mask(sequence_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) example ids -> (B, 1, T, T) bool, True where a query may attend: same example, causal.
    A padding position (-1) attends only to itself, so no row is empty."""
    t = sequence_ids.shape[-1]
    same = sequence_ids[:, :, None] == sequence_ids[:, None, :]  # (B, T, T)
    causal = torch.ones(t, t, dtype=torch.bool, device=sequence_ids.device).tril()
    mask = same & causal & (sequence_ids[:, :, None] >= 0)
    mask |= torch.eye(t, dtype=torch.bool, device=sequence_ids.device)
    return mask[:, None]


class DataCollatorForPacking:
    """Packed blocks -> tensors with the 4-D block-diagonal attention_mask and position_ids."""

    def __call__(self, features: list) -> dict:
        batch = {key: torch.tensor([list(f[key]) for f in features], dtype=torch.long)
                 for key in ("input_ids", "labels", "position_ids", "sequence_ids")}
        batch["attention_mask"] = packed_attention_mask(batch.pop("sequence_ids"))
        return batch
