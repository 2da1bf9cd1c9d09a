"""Pipeline: what every task shares. An input goes through three stages:

    preprocess(input)              -> features: one or more dicts of token ids (a long QA context gives
                                      several, zero-shot one per candidate label), plus keys of their own
    forward(features)              -> per feature, the model's outputs for it (one padded forward per batch)
    postprocess(outputs, input)    -> the task's result for that input

A task file holds only its preprocess and postprocess (and forward, when it is not one model call, as
in text generation). Inputs are taken batch_size at a time: a list's sorted by length first (64 batches
at a time), so that a batch holds little padding; a generator's as they come, each batch's results
yielded when it is done. The results come in the inputs' order.
"""

import itertools
from collections.abc import Iterable, Iterator, Mapping

import torch

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# A list's inputs are sorted by length this many batches at a time, which bounds the features held at once.
WINDOW_BATCHES = 64


def resolve_device(device) -> torch.device:
    """transformers' device argument: None or -1 for the CPU, a GPU index, or a name / torch.device."""
    if device is None or device == -1:
        return torch.device("cpu")
    if isinstance(device, int):
        return torch.device("cuda", device)
    return torch.device(device)


def default_device(model=None) -> torch.device:
    """Where a pipeline given no device runs, as in transformers: the first GPU when torch sees one (a model
    on the CPU is moved there); a model already on an accelerator stays where it is."""
    if model is not None and model.device.type != "cpu":
        return model.device
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def check_top_k(top_k):
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer (or None for all), got {top_k!r}")


def left_padded(rows: list[list[int]], fill: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists as (B, T) ids and attention mask, padded on the left so every row ends at the last
    column, where a causal LM continues it. Padding is masked, so any `fill` id will do."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row):] = 1
    return ids, mask


def check_text(text, what: str = "input"):
    if not isinstance(text, str):
        raise TypeError(f"the {what} must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"the {what} is an empty string")


class Pipeline:
    """A task subclass sets `task`, `parameters` (the call arguments it takes, with their defaults) and
    defines preprocess(item, **params) -> features and postprocess(outputs, item, **params) -> result."""
    task = ""
    parameters: dict = {}
    # Outputs of shape (B, T) that hold one value per token; (B, T, ...) always does. A shape test alone
    # would cut a (B, H) pooler output or (B, num_labels) logits whose size happens to equal T.
    token_outputs: tuple = ()
    # Inputs run shortest first (see run). A task whose results depend on which inputs share a batch, and
    # where in it, by more than rounding (sampled text generation) keeps their order.
    sort_by_length = True

    def __init__(self, model, tokenizer=None, device=None, batch_size=None, **defaults):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = resolve_device(device) if device is not None else default_device(model)
        if self.device != model.device:
            self.model.to(self.device)
        self.batch_size = batch_size
        self.defaults = self.checked(defaults)

    def checked(self, params: dict) -> dict:
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise TypeError(f"the {self.task} pipeline takes no argument(s) {', '.join(unknown)}; it takes "
                            f"{', '.join(self.parameters) or 'none'}")
        if "top_k" in params:
            check_top_k(params["top_k"])
        return params

    def padded(self, features: list[dict]) -> dict:
        """The features' model inputs as one padded batch of tensors on the pipeline's device."""
        names = [n for n in MODEL_INPUTS if n in features[0]]
        batch = self.tokenizer.pad([{n: f[n] for n in names} for f in features], return_tensors="pt")
        return {n: t.to(self.device) for n, t in batch.items()}

    def forward(self, features: list[dict], **params) -> list[dict]:
        """One padded forward; each feature gets its rows of every output, cut back to its own length."""
        batch = self.padded(features)
        with torch.inference_mode():
            outputs = self.model(**batch)
        width = batch["input_ids"].shape[1]
        left = self.tokenizer.padding_side == "left"
        per_feature = []
        for i, feature in enumerate(features):
            length = len(feature["input_ids"])
            span = slice(width - length, width) if left else slice(0, length)
            rows = {name: value[i, span] if value.dim() > 2 or name in self.token_outputs else value[i]
                    for name, value in outputs.items() if torch.is_tensor(value)}
            per_feature.append({**feature, **{k: v.float().cpu() for k, v in rows.items()}})
        return per_feature

    # -- running inputs through the three stages ------------------------------------------------------
    def __call__(self, inputs, batch_size=None, **params):
        given = {**self.defaults, **self.checked(params)}
        params = {**self.parameters, **given, "given": set(given)}
        size = batch_size or self.batch_size or 1
        if isinstance(inputs, Iterator):
            return self.run(inputs, size, params, window=size)
        if isinstance(inputs, (str, Mapping)) or not isinstance(inputs, Iterable):
            return self.single_result(next(self.run([inputs], size, params, window=1)), params, inputs)
        return list(self.run(inputs, size, params, window=size * WINDOW_BATCHES))

    def single_result(self, result, params, item):
        """What a call with one input (not a list) returns; some tasks wrap it as transformers does."""
        return result

    def run(self, inputs: Iterable, batch_size: int, params: dict, window: int):
        """The inputs' results, in their order. The inputs are read and preprocessed `window` at a time, and
        a window's are run batch_size at a time from the shortest to the longest, so that a batch pads its
        texts to about the same length (run in the given order, as transformers does, a third of the
        benchmark's tokens were padding). A result equals that of a run in the given order up to float
        rounding. A generator's window is one batch, its results yielded as each batch is done."""
        inputs = iter(inputs)
        while items := list(itertools.islice(inputs, window)):
            prepared = [(item, self.preprocess(item, **params)) for item in items]
            order = list(range(len(items)))
            if self.sort_by_length:
                order.sort(key=lambda i: max((len(f["input_ids"]) for f in prepared[i][1]), default=0))
            results = [None] * len(items)
            for start in range(0, len(items), batch_size):
                chosen = order[start:start + batch_size]
                group = self.run_group([prepared[i] for i in chosen], batch_size, params)
                for i, result in zip(chosen, group, strict=True):
                    results[i] = result
            yield from results

    def run_group(self, prepared: list[tuple], batch_size: int, params: dict) -> list:
        """Results of (input, features) pairs: their features forward batch_size at a time."""
        flat = [f for _, fs in prepared for f in fs]
        outputs = []
        for start in range(0, len(flat), batch_size):
            outputs += self.forward(flat[start:start + batch_size], **params)
        results, start = [], 0
        for item, fs in prepared:
            results.append(self.postprocess(outputs[start:start + len(fs)], item, **params))
            start += len(fs)
        return results
