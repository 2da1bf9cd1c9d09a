"""Watermarking as in Kirchenbauer et al. 2023 (https://arxiv.org/abs/2306.04634), compatible with transformers'.

Before each token, a "green list" of `greenlist_ratio` of the vocabulary, drawn at random with a seed taken
from the tokens before it, gets `bias` added to its scores. The detector draws the same green lists from
the text and counts how many tokens are green: far more than `greenlist_ratio` of them (a z-score above the
threshold) means the text carries the watermark. The lists come from the same torch generator calls,
seeded the same way, as transformers', so text watermarked by either library is detected by both.
"""

import collections
import logging
from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
import torch

from .logits_process import LogitsProcessor

logger = logging.getLogger(__name__)

HASH_TABLE_SIZE = 1_000_003  # the length of selfhash's random table, part of the watermark's definition


def watermark_seed(context, hashing_key: int, seeding_scheme: str, fixed_table=None) -> int:
    """The generator seed for the green list that follows `context` (1-D ids: the last context_width tokens).

    lefthash: the key times the last token. selfhash: the smallest key * (table[t] + 1) * (table[last] + 1)
    over the context tokens t, in int64 arithmetic (which wraps, as in transformers).
    """
    if seeding_scheme == "selfhash":
        a = fixed_table[context % HASH_TABLE_SIZE] + 1
        b = fixed_table[context[-1] % HASH_TABLE_SIZE] + 1
        seed = int((hashing_key * a * b).min())
    else:
        seed = hashing_key * int(context[-1])
    return seed % (2**64 - 1)


@dataclass
class WatermarkingConfig:
    """generate()'s `watermarking_config` (a dict with these keys works too)."""

    greenlist_ratio: float = 0.25
    bias: float = 2.0
    hashing_key: int = 15485863
    seeding_scheme: str = "lefthash"
    context_width: int = 1

    @classmethod
    def from_dict(cls, config_dict: dict) -> "WatermarkingConfig":
        return cls(**config_dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def validate(self):
        problem = "Some of the keys in `watermarking_config` are defined incorrectly. `{}` should be {} but found {}"
        if self.seeding_scheme not in ("selfhash", "lefthash"):
            raise ValueError(problem.format("seeding_scheme", "[`selfhash`, `lefthash`]", self.seeding_scheme))
        if not 0.0 <= self.greenlist_ratio <= 1.0:
            raise ValueError(problem.format("greenlist_ratio", "in range between 0.0 and 1.0", self.greenlist_ratio))
        if not self.context_width >= 1:
            raise ValueError(problem.format("context_width", "a positive integer", self.context_width))

    def construct_processor(self, vocab_size: int, device) -> "WatermarkLogitsProcessor":
        return WatermarkLogitsProcessor(vocab_size=vocab_size, device=device, **self.to_dict())


class WatermarkLogitsProcessor(LogitsProcessor):
    """Add `bias` to the scores of each row's green tokens. `seeding_scheme`: "lefthash" seeds the green list
    with the last token; "selfhash" keeps, of the 40 best candidates, those green in the list seeded with
    the candidate itself appended to the last `context_width` tokens (slower, more robust)."""

    def __init__(self, vocab_size, device, greenlist_ratio: float = 0.25, bias: float = 2.0,
                 hashing_key: int = 15485863, seeding_scheme: str = "lefthash", context_width: int = 1):  # fmt: skip
        if seeding_scheme not in ("selfhash", "lefthash"):
            raise ValueError(f"seeding_scheme has to be one of [`selfhash`, `lefthash`], but found {seeding_scheme}")
        if greenlist_ratio >= 1.0 or greenlist_ratio <= 0.0:
            raise ValueError(
                f"greenlist_ratio has be in range between 0.0 and 1.0, exclusively. but found {greenlist_ratio}"
            )
        self.vocab_size = vocab_size
        self.greenlist_size = int(vocab_size * greenlist_ratio)
        self.bias = bias
        self.seeding_scheme = seeding_scheme
        self.hash_key = hashing_key
        self.context_width = context_width
        self.rng = torch.Generator(device=device)
        self.fixed_table = None
        if seeding_scheme == "selfhash":  # lefthash never reads the table: not drawn for it
            self.rng.manual_seed(hashing_key)
            self.fixed_table = torch.randperm(HASH_TABLE_SIZE, generator=self.rng, device=device)

    def greenlist_ids(self, context):
        """The green token ids that follow `context` (1-D ids)."""
        seed = watermark_seed(context[-self.context_width :], self.hash_key, self.seeding_scheme, self.fixed_table)
        self.rng.manual_seed(seed)
        return torch.randperm(self.vocab_size, device=context.device, generator=self.rng)[: self.greenlist_size]

    def selfhash_greenlist(self, context, scores):
        """Of the 40 best candidates (by `scores` (V,)), those green in the list seeded with themselves."""
        candidates = scores.sort(descending=True).indices[:40]
        green = [int(c) for c in candidates if c in self.greenlist_ids(torch.cat([context, c[None]]))]
        return torch.tensor(green, dtype=torch.long, device=scores.device)

    def __call__(self, input_ids, scores):
        if input_ids.shape[-1] < self.context_width:
            logger.warning(
                f"`input_ids` should have at least `{self.context_width}` tokens but has {input_ids.shape[-1]}. "
                "The seeding will be skipped for this generation step!"
            )
            return scores
        watermarked = scores.clone()
        for row, context in enumerate(input_ids):  # a green list per row, each from its own seed
            if self.seeding_scheme == "selfhash":
                green = self.selfhash_greenlist(context, scores[row])
            else:
                green = self.greenlist_ids(context)
            watermarked[row, green] += self.bias
        return watermarked


@dataclass
class WatermarkDetectorOutput:
    """Per row (np arrays): tokens scored, green tokens among them, their fraction, the z-score of that count,
    its one-sided p-value, the prediction (z-score above the threshold) and the confidence (1 - p-value)."""

    num_tokens_scored: np.ndarray | None = None
    num_green_tokens: np.ndarray | None = None
    green_fraction: np.ndarray | None = None
    z_score: np.ndarray | None = None
    p_value: np.ndarray | None = None
    prediction: np.ndarray | None = None
    confidence: np.ndarray | None = None


class WatermarkDetector:
    """Say whether texts (token ids) carry the watermark that generate() adds with `watermarking_config`; it
    needs the same config, device and vocabulary size (from `model_config`) as the generation did.
    `ignore_repeated_ngrams` counts each distinct n-gram once; `max_cache_size` bounds the green-list cache."""

    def __init__(self, model_config, device, watermarking_config, ignore_repeated_ngrams: bool = False,
                 max_cache_size: int = 128):  # fmt: skip
        if isinstance(watermarking_config, dict):
            watermarking_config = WatermarkingConfig.from_dict(watermarking_config)
        encoder_decoder = getattr(model_config, "is_encoder_decoder", False)
        self.bos_token_id = model_config.decoder_start_token_id if encoder_decoder else model_config.bos_token_id
        self.greenlist_ratio = watermarking_config.greenlist_ratio
        self.ignore_repeated_ngrams = ignore_repeated_ngrams
        self.processor = watermarking_config.construct_processor(model_config.vocab_size, device)
        self.is_green = lru_cache(maxsize=max_cache_size)(self._is_green)  # re-seeding and permuting is costly

    def _is_green(self, ngram: tuple) -> bool:
        """Whether the n-gram's last token is green after the tokens before it (selfhash: after all of it)."""
        ids = torch.tensor(ngram, device=self.processor.rng.device)
        context = ids if self.processor.seeding_scheme == "selfhash" else ids[:-1]
        return bool((self.processor.greenlist_ids(context) == ngram[-1]).any())

    def count_green(self, input_ids):
        """(tokens scored, green tokens) per row, as float arrays."""
        n = self.processor.context_width + (0 if self.processor.seeding_scheme == "selfhash" else 1)
        scored, green = [], []
        for row in input_ids.tolist():
            counts = collections.Counter(tuple(row[i : i + n]) for i in range(len(row) - n + 1))
            hits = {ngram: self.is_green(ngram) for ngram in counts}
            if self.ignore_repeated_ngrams:
                scored.append(len(counts))
                green.append(sum(hits.values()))
            else:
                scored.append(sum(counts.values()))
                green.append(sum(count * hits[ngram] for ngram, count in counts.items()))
        return np.array(scored, dtype=float), np.array(green, dtype=float)

    def __call__(self, input_ids, z_threshold: float = 3.0, return_dict: bool = False):
        """input_ids (B, T): the texts, best without their prompts. Returns the (B,) bool predictions, or a
        WatermarkDetectorOutput with `return_dict=True`."""
        if self.bos_token_id is not None:
            has_bos = input_ids[:, 0] == self.bos_token_id
            if bool(has_bos.any()) != bool(has_bos.all()):
                raise ValueError(
                    "Some batch contains inconsistent leading BOS token. Make sure to prepare input with the same "
                    "tokenization parameters."
                )
            if bool(has_bos[0]):
                input_ids = input_ids[:, 1:]
        if input_ids.shape[-1] - self.processor.context_width < 1:
            raise ValueError(
                "Must have at least `1` token to score after the first "
                f"min_prefix_len={self.processor.context_width} tokens required by the seeding scheme."
            )
        scored, green = self.count_green(input_ids)
        ratio = self.greenlist_ratio
        z_score = (green - ratio * scored) / np.sqrt(scored * ratio * (1 - ratio))
        prediction = z_score > z_threshold
        if not return_dict:
            return prediction
        p_value = 0.5 * torch.special.erfc(torch.as_tensor(z_score / np.sqrt(2))).numpy()
        return WatermarkDetectorOutput(num_tokens_scored=scored, num_green_tokens=green, green_fraction=green / scored,
                                       z_score=z_score, p_value=p_value, prediction=prediction,
                                       confidence=1 - p_value)  # fmt: skip
