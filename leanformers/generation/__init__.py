"""Generation: GenerationConfig, logits processors, KV cache, the decode loop, streamers, generate()."""

from .beam_search import BeamSearch
from .cache import KVCache
from .config import GENERATION_CONFIG_NAME, GLOBAL_DEFAULTS, GenerationConfig
from .logits_process import (
    LogitsProcessorList,
    apply_bad_words,
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
    force_tokens,
    multinomial_draw,
    prepare_bad_words,
    sample_next_token,
    suppress_tokens,
)
from .streamers import BaseStreamer, TextIteratorStreamer, TextStreamer
from .stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
)
from .utils import (
    DecodeStep,
    GenerateBeamDecoderOnlyOutput,
    GenerateDecoderOnlyOutput,
    GenerationMixin,
    decode_steps,
)

__all__ = [
    "BaseStreamer",
    "BeamSearch",
    "DecodeStep",
    "EosTokenCriteria",
    "GENERATION_CONFIG_NAME",
    "GLOBAL_DEFAULTS",
    "GenerateBeamDecoderOnlyOutput",
    "GenerateDecoderOnlyOutput",
    "GenerationConfig",
    "GenerationMixin",
    "KVCache",
    "LogitsProcessorList",
    "MaxLengthCriteria",
    "MaxTimeCriteria",
    "StoppingCriteria",
    "StoppingCriteriaList",
    "StopStringCriteria",
    "TextIteratorStreamer",
    "TextStreamer",
    "apply_bad_words",
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
    "force_tokens",
    "multinomial_draw",
    "prepare_bad_words",
    "sample_next_token",
    "suppress_tokens",
]
