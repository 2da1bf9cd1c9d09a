"""Llama family: Llama, SmolLM, Mistral, Qwen2/2.5 and Qwen3, through the config.

The families differ only in what the config tells the shared blocks: biases on the q/k/v and output
projections, per-head RMSNorm on queries and keys (Qwen3), and a sliding attention window per layer
(Mistral; Qwen2/3 when use_sliding_window is set).

Reads top to bottom: config, blocks (attention, MLP, decoder layer), base model, heads.
Parameter names are the Hugging Face checkpoint names.
"""

from torch import nn

from ..config import PretrainedConfig
from .base import PreTrainedModel
from .heads import LastTokenClassificationHead, QuestionAnsweringHead, TokenClassificationHead, classifier_dropout
from .layers import (Linear, RMSNorm, RotaryEmbedding, apply_rotary, build_attention_mask, cached_attention,
                     causal_lm_head, gated_mlp, get_activation, run_decoder_layers, start_decoder_forward)
from .native_decode import native_decode_step
from .outputs import CausalLMOutputWithPast


class LlamaConfig(PretrainedConfig):
    model_type = "llama"
    defaults = dict(
        vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=None, head_dim=None, hidden_act="silu",
        max_position_embeddings=2048, initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True,
        pad_token_id=None, bos_token_id=1, eos_token_id=2, pretraining_tp=1, tie_word_embeddings=False,
        rope_parameters=None, attention_bias=False, attention_dropout=0.0, mlp_bias=False,
    )

    def __init__(self, **kwargs):
        # v4 spells the rope settings as rope_theta + rope_scaling; v5 as one rope_parameters dict.
        rope_theta = kwargs.pop("rope_theta", None)
        rope_scaling = kwargs.pop("rope_scaling", None)
        rope = dict(kwargs.get("rope_parameters") or {})
        rope.update(rope_scaling or {})
        if "type" in rope:
            rope.setdefault("rope_type", rope.pop("type"))
        rope.setdefault("rope_type", "default")
        rope.setdefault("rope_theta", rope_theta if rope_theta is not None else 10000.0)
        kwargs["rope_parameters"] = rope
        super().__init__(**kwargs)

    def __post_init__(self):
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.head_dim is None:  # an explicit head_dim (Qwen3) need not divide hidden_size
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                                 f"({self.num_attention_heads})")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        if self.rope_parameters["rope_type"] == "llama3":
            self.rope_parameters.setdefault("original_max_position_embeddings", self.max_position_embeddings)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """Through LlamaConfig (LlamaForCausalLM.from_pretrained), a Mistral or Qwen config.json still builds its
        own family's config, so the layers get the biases, norms and windows the checkpoint has."""
        family = FAMILY_CONFIGS.get(config_dict.get("model_type")) if cls is LlamaConfig else None
        return family.from_dict(config_dict, **kwargs) if family else super().from_dict(config_dict, **kwargs)

    # What the shared blocks read; the families below override them.
    qk_norm = False  # per-head RMSNorm on queries and keys before the rotary embedding

    @property
    def qkv_bias(self) -> bool:
        return self.attention_bias

    @property
    def output_bias(self) -> bool:
        return self.attention_bias

    def layer_window(self, layer_idx: int) -> int | None:
        """The sliding attention window of a layer, or None where it attends to every earlier token."""
        return None

    @property
    def rope_theta(self):
        return self.rope_parameters["rope_theta"]

    @property
    def rope_scaling(self):
        return None if self.rope_parameters["rope_type"] == "default" else self.rope_parameters


def sliding_layer_types(config) -> list:
    """Qwen2/3's layer_types: with use_sliding_window, the layers from max_window_layers on slide."""
    return ["sliding_attention" if config.sliding_window is not None and i >= config.max_window_layers
            else "full_attention" for i in range(config.num_hidden_layers)]


class MistralConfig(LlamaConfig):
    """Llama with a sliding attention window on every layer (None: full attention)."""

    model_type = "mistral"
    defaults = dict(
        {k: v for k, v in LlamaConfig.defaults.items() if k not in ("pretraining_tp", "attention_bias", "mlp_bias")},
        intermediate_size=14336, num_key_value_heads=8, max_position_embeddings=4096 * 32, sliding_window=4096,
    )
    qkv_bias = output_bias = False

    def layer_window(self, layer_idx):
        return self.sliding_window


class Qwen2Config(LlamaConfig):
    """Biases on q/k/v but none on the output projection; a sliding window only with use_sliding_window."""

    model_type = "qwen2"
    defaults = dict(
        MistralConfig.defaults,
        vocab_size=151936, intermediate_size=22016, num_key_value_heads=32, max_position_embeddings=32768,
        bos_token_id=None, eos_token_id=None, use_sliding_window=False, max_window_layers=28, layer_types=None,
    )
    qkv_bias, output_bias = True, False

    def __post_init__(self):
        super().__post_init__()
        self.sliding_window = self.sliding_window if self.use_sliding_window else None
        if self.layer_types is None:
            self.layer_types = sliding_layer_types(self)

    def layer_window(self, layer_idx):
        return self.sliding_window if self.layer_types[layer_idx] == "sliding_attention" else None


class Qwen3Config(Qwen2Config):
    """Qwen2 without the q/k/v biases (attention_bias sets all four), with RMSNorm per head on queries and
    keys, and a head_dim of its own."""

    model_type = "qwen3"
    defaults = dict(Qwen2Config.defaults, head_dim=128, attention_bias=False)
    qk_norm = True
    qkv_bias, output_bias = LlamaConfig.qkv_bias, LlamaConfig.output_bias  # Llama's: both follow attention_bias


FAMILY_CONFIGS = {config.model_type: config for config in (MistralConfig, Qwen2Config, Qwen3Config)}


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        bias = config.qkv_bias
        self.q_proj = Linear(config.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, config.hidden_size, bias=config.output_bias)
        self.qk_norm = config.qk_norm  # a plain attribute: hasattr on a module costs an exception per decode step
        if self.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, output_attentions=False):
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = self.q_proj(x).view(B, T, H, D)
        k = self.k_proj(x).view(B, T, Hkv, D)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rotary(q, cos, sin).transpose(1, 2)  # (B, H, T, D)
        k = apply_rotary(k, cos, sin).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        out, weights = cached_attention(q, k, v, mask, cache, self.layer_idx, output_attentions,
                                        dropout=self.dropout if self.training else 0.0)  # (B, T, H * D)
        return self.o_proj(out), weights


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        bias = getattr(config, "mlp_bias", False)  # a Llama key; the other families have no MLP biases
        self.gate_proj = Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.up_proj = Linear(config.hidden_size, config.intermediate_size, bias=bias)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=bias)
        self.act = get_activation(config.hidden_act)

    def forward(self, x):
        return gated_mlp(self.act, self.gate_proj(x), self.up_proj(x), self.down_proj)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.sliding_window = config.layer_window(layer_idx)
        self.self_attn = LlamaAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, output_attentions=False):
        attn_out, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, output_attentions)
        x = x + attn_out
        return x + self.mlp(self.post_attention_layernorm(x)), weights


class LlamaPreTrainedModel(PreTrainedModel):
    config_class = LlamaConfig
    base_model_prefix = "model"
    ignored_checkpoint_keys = ("rotary_emb.inv_freq",)


class LlamaModel(LlamaPreTrainedModel):
    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.rope_parameters, config.head_dim, config.max_position_embeddings)
        self.post_init()

    def get_input_embeddings(self):
        return self.embed_tokens

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, use_cache=None, output_hidden_states=None, output_attentions=None,
                return_dict=None, cache=None, **kwargs):
        inputs_embeds, cache, position_ids, past = start_decoder_forward(
            self, self.embed_tokens, input_ids, inputs_embeds, attention_mask, position_ids,
            cache if cache is not None else past_key_values, use_cache)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        T = inputs_embeds.shape[1]
        masks = {window: build_attention_mask(attention_mask, T, past + T, causal=True, device=inputs_embeds.device,
                                              sliding_window=window)
                 for window in {layer.sliding_window for layer in self.layers}}
        cos, sin = self.rotary_emb(position_ids, inputs_embeds.dtype)
        return run_decoder_layers(
            self, self.layers, inputs_embeds, self.norm, cache, output_hidden_states, output_attentions,
            lambda layer, x: layer(x, cos, sin, masks[layer.sliding_window], cache, output_attentions),
            run_all=lambda x: native_decode_step(self.layers, x, cache, cos, sin, attention_mask))


class LlamaForCausalLM(LlamaPreTrainedModel):
    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.lm_head = Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                output_attentions=None, logits_to_keep=0, return_dict=None, cache=None, num_items_in_batch=None,
                skip_logits=False, **kwargs):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                         past_key_values=past_key_values, cache=cache, inputs_embeds=inputs_embeds,
                         use_cache=use_cache, output_hidden_states=output_hidden_states,
                         output_attentions=output_attentions)
        loss, logits = causal_lm_head(self.lm_head, out.last_hidden_state, labels, logits_to_keep, num_items_in_batch,
                                      skip_logits)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache,
                                      hidden_states=out.hidden_states, attentions=out.attentions)


class LlamaForSequenceClassification(LastTokenClassificationHead, LlamaPreTrainedModel):
    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()


class LlamaForTokenClassification(TokenClassificationHead, LlamaPreTrainedModel):
    classifier_name = "score"

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        bias = getattr(config, "token_classification_bias", True)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=bias)
        self.post_init()


class LlamaForQuestionAnswering(QuestionAnsweringHead, LlamaPreTrainedModel):
    base_model_prefix = "transformer"  # transformers' name for this head's base model

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.transformer = LlamaModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()
