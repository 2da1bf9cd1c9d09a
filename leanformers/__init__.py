"""leanformers: the transformers API, small and readable. Public names only; nothing lives here."""

from .auto import AutoConfig, AutoModel, AutoModelForCausalLM
from .config import PretrainedConfig
from .generation import GenerationConfig, KVCache, TextIteratorStreamer, TextStreamer
from .models.base import PreTrainedModel
from .models.llama import LlamaConfig, LlamaForCausalLM, LlamaModel
from .models.outputs import BaseModelOutputWithPast, CausalLMOutputWithPast, ModelOutput
from .tokenization import AutoTokenizer, BatchEncoding, PreTrainedTokenizer, PreTrainedTokenizerFast

PreTrainedConfig = PretrainedConfig

__version__ = "0.1.0"
