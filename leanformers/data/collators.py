"""Data collators: a list of examples (dicts of ids) -> one batch of padded tensors.

Padding goes through the tokenizer passed in (`tokenizer.pad`), so its pad_token_id and
padding_side decide the layout. Language-model labels mask padding *by position*
(attention_mask == 0), never by token id: with pad == eos, masking every EOS id would teach
the model never to stop.
"""

from collections.abc import Mapping

import numpy as np
import torch

IGNORE_INDEX = -100


def _as_dicts(features) -> list[dict]:
    """Examples as plain dicts; bare id lists become {"input_ids": ids}."""
    out = []
    for f in features:
        if isinstance(f, Mapping):
            out.append({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f.items()})
        else:
            out.append({"input_ids": f.tolist() if hasattr(f, "tolist") else list(f)})
    return out


def _to_tensor(values):
    if isinstance(values[0], torch.Tensor):
        return torch.stack(values)
    if isinstance(values[0], np.ndarray):
        return torch.from_numpy(np.stack(values))
    return torch.tensor(values)


def default_data_collator(features: list, return_tensors: str = "pt") -> dict:
    """Stack equal-length examples into tensors; "label"/"label_ids" become "labels"."""
    if return_tensors != "pt":
        raise ValueError(f"only return_tensors='pt' is supported, got {return_tensors!r}")
    if not isinstance(features[0], Mapping):
        features = [vars(f) for f in features]
    first = features[0]
    batch = {}
    for key in ("label", "label_ids"):
        if key in first and first[key] is not None:
            values = [f[key] for f in features]
            value = values[0].item() if isinstance(values[0], torch.Tensor) and values[0].dim() == 0 else values[0]
            dtype = torch.long if isinstance(value, (int, np.integer)) else torch.float
            if isinstance(values[0], torch.Tensor):
                batch["labels"] = torch.stack(values).to(dtype)
            else:
                batch["labels"] = torch.tensor(np.asarray(values), dtype=dtype)
    for key, value in first.items():
        if key in ("label", "label_ids") or value is None or isinstance(value, str):
            continue
        try:
            batch[key] = _to_tensor([f[key] for f in features])
        except (ValueError, RuntimeError) as err:
            raise ValueError(f"cannot stack {key!r} across the batch ({err}); rows of different lengths need "
                             "DataCollatorWithPadding") from None
    return batch


def _rename_labels(batch: dict) -> dict:
    for key in ("label", "label_ids"):
        if key in batch:
            batch["labels"] = batch.pop(key)
    return batch


class DataCollatorWithPadding:
    """Pad input_ids / attention_mask / token_type_ids with the tokenizer; keep labels as they are."""

    def __init__(self, tokenizer, padding=True, max_length=None, pad_to_multiple_of=None, return_tensors="pt"):
        self.tokenizer = tokenizer
        self.padding = padding
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.return_tensors = return_tensors

    def __call__(self, features: list) -> dict:
        batch = self.tokenizer.pad(_as_dicts(features), padding=self.padding, max_length=self.max_length,
                                   pad_to_multiple_of=self.pad_to_multiple_of, return_tensors=self.return_tensors)
        return _rename_labels(dict(batch))


class DataCollatorForSeq2Seq:
    """Pad inputs with the tokenizer and `labels` with -100 (label_pad_token_id) to the longest label."""

    def __init__(self, tokenizer, model=None, padding=True, max_length=None, pad_to_multiple_of=None,
                 label_pad_token_id=IGNORE_INDEX, return_tensors="pt"):
        self.tokenizer = tokenizer
        self.padding = padding
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_pad_token_id = label_pad_token_id
        self.return_tensors = return_tensors

    def __call__(self, features: list) -> dict:
        features = _as_dicts(features)
        labels = [f.pop("labels") for f in features] if "labels" in features[0] else None
        batch = dict(self.tokenizer.pad(features, padding=self.padding, max_length=self.max_length,
                                        pad_to_multiple_of=self.pad_to_multiple_of, return_tensors=self.return_tensors))
        if labels is not None:
            target = max(len(row) for row in labels)
            if self.padding == "max_length" and self.max_length is not None:
                target = max(target, self.max_length)
            if self.pad_to_multiple_of and target % self.pad_to_multiple_of:
                target += self.pad_to_multiple_of - target % self.pad_to_multiple_of
            padded = []
            for row in labels:
                fill = [self.label_pad_token_id] * (target - len(row))
                padded.append(list(row) + fill if self.tokenizer.padding_side == "right" else fill + list(row))
            batch["labels"] = torch.tensor(padded, dtype=torch.long) if self.return_tensors == "pt" else padded
        return batch


class DataCollatorForLanguageModeling:
    """Pad, then build labels: masked-token targets (mlm=True) or the inputs themselves (mlm=False).

    mlm=True picks mlm_probability of the non-special, non-padding tokens; of those 80% become
    the mask token, 10% a random token, 10% stay; labels are -100 elsewhere. The random draws
    come from `generator` (or a torch.Generator seeded with `seed`), so a seed fixes the masks.
    mlm=False: labels = input_ids with -100 where attention_mask is 0 (padding by position).
    Labels already present (e.g. a prompt-masked SFT example) are padded with -100 and kept.
    """

    def __init__(self, tokenizer, mlm=True, mlm_probability=0.15, mask_replace_prob=0.8, random_replace_prob=0.1,
                 pad_to_multiple_of=None, return_tensors="pt", seed=None, generator=None):
        if mlm and tokenizer.mask_token is None:
            raise ValueError("mlm=True needs a tokenizer with a mask token; use mlm=False for causal language models")
        if not 0 <= mask_replace_prob + random_replace_prob <= 1:
            raise ValueError("mask_replace_prob + random_replace_prob must be within [0, 1]")
        self.tokenizer = tokenizer
        self.mlm = mlm
        self.mlm_probability = mlm_probability
        self.mask_replace_prob = mask_replace_prob
        self.random_replace_prob = random_replace_prob
        self.pad_to_multiple_of = pad_to_multiple_of
        self.return_tensors = return_tensors
        if generator is None and seed is not None:
            generator = torch.Generator().manual_seed(seed)
        self.generator = generator

    def __call__(self, features: list) -> dict:
        features = _as_dicts(features)
        labels = [f.pop("labels") for f in features] if "labels" in features[0] else None
        special = [f.pop("special_tokens_mask") for f in features] if "special_tokens_mask" in features[0] else None
        batch = dict(self.tokenizer.pad(features, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                                        return_attention_mask=True, return_tensors="pt"))
        input_ids, attention = batch["input_ids"], batch["attention_mask"].bool()
        if labels is not None:
            width = input_ids.shape[1]
            rows = []
            for row in labels:
                fill = [IGNORE_INDEX] * (width - len(row))
                rows.append(list(row) + fill if self.tokenizer.padding_side == "right" else fill + list(row))
            batch["labels"] = torch.tensor(rows, dtype=torch.long)
        elif self.mlm:
            if special is not None:
                width = input_ids.shape[1]
                special_mask = torch.ones_like(input_ids, dtype=torch.bool)
                for i, row in enumerate(special):
                    start = 0 if self.tokenizer.padding_side == "right" else width - len(row)
                    special_mask[i, start:start + len(row)] = torch.tensor(row, dtype=torch.bool)
            else:
                special_mask = torch.isin(input_ids, torch.tensor(self.tokenizer.all_special_ids))
            batch["input_ids"], batch["labels"] = self.mask_tokens(input_ids.clone(), special_mask | ~attention)
        else:
            batch["labels"] = input_ids.masked_fill(~attention, IGNORE_INDEX)
        return batch

    def mask_tokens(self, inputs: torch.Tensor, no_mask: torch.Tensor):
        """(inputs with masks applied, labels) for MLM; `no_mask` marks special and padding tokens."""
        labels = inputs.clone()
        probability = torch.full(inputs.shape, self.mlm_probability).masked_fill(no_mask, 0.0)
        masked = torch.bernoulli(probability, generator=self.generator).bool()
        labels[~masked] = IGNORE_INDEX
        replaced = torch.bernoulli(torch.full(inputs.shape, self.mask_replace_prob), generator=self.generator).bool()
        replaced &= masked
        inputs[replaced] = self.tokenizer.convert_tokens_to_ids(self.tokenizer.mask_token)
        remaining = 1 - self.mask_replace_prob
        if self.random_replace_prob > 0 and remaining > 0:
            randomized = torch.bernoulli(torch.full(inputs.shape, self.random_replace_prob / remaining),
                                         generator=self.generator).bool() & masked & ~replaced
            words = torch.randint(len(self.tokenizer), inputs.shape, dtype=inputs.dtype, generator=self.generator)
            inputs[randomized] = words[randomized]
        return inputs, labels
