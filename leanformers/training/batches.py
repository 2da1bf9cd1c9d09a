"""What the Trainer feeds the model: the columns its forward() takes, each epoch's order of examples,
batches of their indices, and (index, example) pairs so that a collator failure can name the examples
it failed on."""

import inspect

import torch
from torch import nn

from .lora import PeftModel


def unwrap(model: nn.Module) -> nn.Module:
    """The model under DistributedDataParallel and LoRA wrappers (whose forward() says what it takes)."""
    model = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return model.base_model if isinstance(model, PeftModel) else model


def forward_parameters(model: nn.Module) -> set:
    return {name for name, p in inspect.signature(unwrap(model).forward).parameters.items()
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def default_label_names(model: nn.Module) -> list:
    """transformers' rule: the forward arguments with 'label' in the name, or a QA head's two positions."""
    params = forward_parameters(model)
    if {"start_positions", "end_positions"} <= params:
        return ["start_positions", "end_positions"]
    return [name for name in inspect.signature(unwrap(model).forward).parameters if "label" in name]


def epoch_batches(num_examples: int, batch_size: int, epoch: int, seed: int, shuffle: bool, rank: int = 0,
                  world_size: int = 1, drop_last: bool = False) -> list[list[int]]:
    """This process's batches of example indices for one epoch. The order depends only on (seed, epoch);
    with several processes the order is padded by wrapping to a multiple of world_size and each takes
    every world_size-th index (as torch's DistributedSampler does)."""
    order = (torch.randperm(num_examples, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
             if shuffle else list(range(num_examples)))
    if world_size > 1:
        order += order[:(-len(order)) % world_size]
        order = order[rank::world_size]
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    return [b for b in batches if len(b) == batch_size] if drop_last else batches


class IndexedExamples(torch.utils.data.Dataset):
    """(index, example) pairs, so a collator failure can name the examples it failed on."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return index, self.dataset[index]

    def __getitems__(self, indices):
        fetch = getattr(self.dataset, "__getitems__", None)
        examples = fetch(indices) if fetch else [self.dataset[i] for i in indices]
        return list(zip(indices, examples, strict=True))


def stream_batches(dataset, batch_size: int, rank: int, world_size: int, skip_batches: int, drop_last: bool):
    """Batches of (index, example) from an iterable dataset, read in this process; this rank's examples are
    every world_size-th one, and the first skip_batches batches are read past (a stream cannot seek)."""
    pending = []
    for index, example in enumerate(dataset):
        if index % world_size != rank:
            continue
        pending.append((index, example))
        if len(pending) == batch_size:
            if skip_batches:
                skip_batches -= 1
            else:
                yield pending
            pending = []
    if pending and not drop_last and not skip_batches:
        yield pending


def input_tokens(batch: dict) -> int:
    if "attention_mask" in batch and batch["attention_mask"].dim() == 2:
        return int(batch["attention_mask"].sum())
    return batch["input_ids"].numel() if "input_ids" in batch else 0
