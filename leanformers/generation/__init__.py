"""Generation: GenerationConfig, logits processors, KV cache, the decode loop, streamers, generate()."""

from .cache import KVCache
from .config import GENERATION_CONFIG_NAME, GLOBAL_DEFAULTS, GenerationConfig
from .logits_process import (
    LogitsProcessorList,
    apply_min_length,
    apply_min_new_tokens,
    apply_min_p,
    apply_no_repeat_ngram,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    apply_typical_p,
    build_logits_processors,
    sample_next_token,
    suppress_tokens,
)
from .streamers import BaseStreamer, TextIteratorStreamer, TextStreamer
from .utils import (
    DecodeStep,
    EosTokenCriteria,
    GenerateDecoderOnlyOutput,
    GenerationMixin,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteria,
    StoppingCriteriaList,
    decode_steps,
)

__all__ = [
    "BaseStreamer",
    "DecodeStep",
    "EosTokenCriteria",
    "GENERATION_CONFIG_NAME",
    "GLOBAL_DEFAULTS",
    "GenerateDecoderOnlyOutput",
    "GenerationConfig",
    "GenerationMixin",
    "KVCache",
    "LogitsProcessorList",
    "MaxLengthCriteria",
    "MaxTimeCriteria",
    "StoppingCriteria",
    "StoppingCriteriaList",
    "TextIteratorStreamer",
    "TextStreamer",
    "apply_min_length",
    "apply_min_new_tokens",
    "apply_min_p",
    "apply_no_repeat_ngram",
    "apply_repetition_penalty",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
    "apply_typical_p",
    "build_logits_processors",
    "decode_steps",
    "sample_next_token",
    "suppress_tokens",
]
