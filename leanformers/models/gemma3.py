"""Gemma 3 (text): a Llama-style decoder with its own norms, embedding scale and two kinds of layers.

Where it differs from llama.py, which is why it has its own file:
- RMSNorm scales by (1 + weight), the weight stored zero-centred, computed in fp32;
- the token embeddings are multiplied by sqrt(hidden_size) (rounded to the weights' dtype);
- queries and keys get a per-head RMSNorm, and the scores are scaled by query_pre_attn_scalar ** -0.5;
- each layer normalises the attention and MLP outputs too (four norms a layer), and the MLP is gated by
  gelu (tanh approximation);
- layers are local (a sliding window, their own rope base) or global, in the config's layer_types
  (five local, then one global, by default);
- the final logits are soft-capped, cap * tanh(x / cap), where the config says so. Its
  attn_logit_softcapping is kept but not applied: Gemma 3 dropped Gemma 2's capped attention scores, and
  the reference (transformers, llama.cpp) ignores the key too.

Reads top to bottom: config, blocks, base model, heads. Parameter names are the Hugging Face ones.
"""

import functools

import torch
from torch import nn

from ..config import PretrainedConfig
from .base import PreTrainedModel
from .heads import LastTokenClassificationHead
from .layers import (Linear, RotaryEmbedding, apply_rotary, build_attention_mask, cached_attention, causal_lm_head,
                     gated_mlp, get_activation, rms_norm, run_decoder_layers, start_decoder_forward)
from .outputs import CausalLMOutputWithPast

LAYER_TYPES = ("sliding_attention", "full_attention")


class Gemma3TextConfig(PretrainedConfig):
    model_type = "gemma3_text"
    defaults = dict(
        vocab_size=262_208, hidden_size=2304, intermediate_size=9216, num_hidden_layers=26, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, hidden_activation="gelu_pytorch_tanh", max_position_embeddings=131_072,
        initializer_range=0.02, rms_norm_eps=1e-6, use_cache=True, pad_token_id=0, eos_token_id=1, bos_token_id=2,
        tie_word_embeddings=True, rope_parameters=None, attention_bias=False, attention_dropout=0.0,
        query_pre_attn_scalar=256, sliding_window=4096, layer_types=None, final_logit_softcapping=None,
        attn_logit_softcapping=None, use_bidirectional_attention=False,
    )

    def __init__(self, **kwargs):
        # v4 spells the rope settings as rope_theta (global layers), rope_local_base_freq (local layers) and
        # rope_scaling (global layers only); v5 as one rope_parameters dict per layer type.
        rope = {kind: dict(params) for kind, params in (kwargs.get("rope_parameters") or {}).items()}
        global_rope = rope.setdefault("full_attention", {})
        global_rope.update(kwargs.pop("rope_scaling", None) or {})
        global_rope.setdefault("rope_theta", kwargs.pop("rope_theta", None) or 1_000_000.0)
        local_rope = rope.setdefault("sliding_attention", {})
        local_rope.setdefault("rope_theta", kwargs.pop("rope_local_base_freq", None) or 10_000.0)
        for params in rope.values():
            params.setdefault("rope_type", params.pop("type", "default"))
        kwargs["rope_parameters"] = rope
        # Older configs give the layer pattern as a number: every n-th layer is global.
        pattern = kwargs.pop("sliding_window_pattern", 6)
        if kwargs.get("layer_types") is None:
            n_layers = kwargs.get("num_hidden_layers", self.defaults["num_hidden_layers"])
            kwargs["layer_types"] = [LAYER_TYPES[(i + 1) % pattern == 0] for i in range(n_layers)]
        super().__init__(**kwargs)

    def __post_init__(self):
        if self.use_bidirectional_attention:
            raise ValueError("use_bidirectional_attention=True (EmbeddingGemma's encoder) is not supported; "
                             "leanformers runs Gemma 3 as a causal decoder")
        if len(self.layer_types) != self.num_hidden_layers or set(self.layer_types) - set(LAYER_TYPES):
            raise ValueError(f"layer_types must name one of {LAYER_TYPES} for each of the {self.num_hidden_layers} "
                             f"layers, got {self.layer_types}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")


class Gemma3RMSNorm(nn.Module):
    """RMSNorm in fp32 scaled by (1 + weight), then rounded to x's dtype: the weight is zero-centred."""

    weight_offset = 1.0

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.eps = eps

    def forward(self, x):
        return rms_norm(x.float(), self.weight.float() + self.weight_offset, self.eps).to(x.dtype)


class Gemma3TextScaledWordEmbedding(nn.Embedding):
    """Token embeddings times sqrt(hidden_size), that factor rounded to the weights' dtype first (in bf16,
    sqrt(640) = 25.30 becomes 25.25), as the reference does."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__(num_embeddings, embedding_dim, padding_idx)
        self.embed_scale = embedding_dim**0.5

    def forward(self, input_ids):
        return super().forward(input_ids) * rounded(self.embed_scale, self.weight.dtype)


@functools.lru_cache(maxsize=8)
def rounded(value: float, dtype: torch.dtype) -> float:
    return torch.tensor(value, dtype=dtype).item()


class Gemma3Attention(nn.Module):
    def __init__(self, config: Gemma3TextConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.scale = config.query_pre_attn_scalar**-0.5
        self.dropout = config.attention_dropout
        bias = config.attention_bias
        self.q_proj = Linear(config.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, config.hidden_size, bias=bias)
        self.q_norm = Gemma3RMSNorm(self.head_dim, eps=config.rms_norm_eps)
        self.k_norm = Gemma3RMSNorm(self.head_dim, eps=config.rms_norm_eps)

    def forward(self, x, cos, sin, mask, cache, output_attentions=False):
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = apply_rotary(self.q_norm(self.q_proj(x).view(B, T, H, D)), cos, sin).transpose(1, 2)  # (B, H, T, D)
        k = apply_rotary(self.k_norm(self.k_proj(x).view(B, T, Hkv, D)), cos, sin).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        out, weights = cached_attention(q, k, v, mask, cache, self.layer_idx, output_attentions, scale=self.scale,
                                        dropout=self.dropout if self.training else 0.0)
        return self.o_proj(out), weights  # out (B, T, H * D)


class Gemma3MLP(nn.Module):
    def __init__(self, config: Gemma3TextConfig):
        super().__init__()
        self.gate_proj = Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=False)
        self.act = get_activation(config.hidden_activation)

    def forward(self, x):
        return gated_mlp(self.act, self.gate_proj(x), self.up_proj(x), self.down_proj)


class Gemma3DecoderLayer(nn.Module):
    def __init__(self, config: Gemma3TextConfig, layer_idx: int):
        super().__init__()
        self.attention_type = config.layer_types[layer_idx]
        self.sliding_window = config.sliding_window if self.attention_type == "sliding_attention" else None
        self.self_attn = Gemma3Attention(config, layer_idx)
        self.mlp = Gemma3MLP(config)
        C, eps = config.hidden_size, config.rms_norm_eps
        self.input_layernorm = Gemma3RMSNorm(C, eps=eps)
        self.post_attention_layernorm = Gemma3RMSNorm(C, eps=eps)
        self.pre_feedforward_layernorm = Gemma3RMSNorm(C, eps=eps)
        self.post_feedforward_layernorm = Gemma3RMSNorm(C, eps=eps)

    def forward(self, x, cos, sin, mask, cache, output_attentions=False):
        attn_out, weights = self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, output_attentions)
        x = x + self.post_attention_layernorm(attn_out)
        return x + self.post_feedforward_layernorm(self.mlp(self.pre_feedforward_layernorm(x))), weights


class Gemma3PreTrainedModel(PreTrainedModel):
    config_class = Gemma3TextConfig
    base_model_prefix = "model"


class Gemma3TextModel(Gemma3PreTrainedModel):
    def __init__(self, config: Gemma3TextConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.embed_tokens = Gemma3TextScaledWordEmbedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(Gemma3DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = Gemma3RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = nn.ModuleDict({
            kind: RotaryEmbedding(config.rope_parameters[kind], config.head_dim, config.max_position_embeddings)
            for kind in LAYER_TYPES if kind in config.layer_types})
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
        rotations = {kind: rotary(position_ids, inputs_embeds.dtype) for kind, rotary in self.rotary_emb.items()}
        return run_decoder_layers(
            self, self.layers, inputs_embeds, self.norm, cache, output_hidden_states, output_attentions,
            lambda layer, x: layer(x, *rotations[layer.attention_type], masks[layer.sliding_window], cache,
                                   output_attentions))


class Gemma3ForCausalLM(Gemma3PreTrainedModel):
    def __init__(self, config: Gemma3TextConfig):
        super().__init__(config)
        self.model = Gemma3TextModel(config)
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
                                      skip_logits, softcap=self.config.final_logit_softcapping)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache,
                                      hidden_states=out.hidden_states, attentions=out.attentions)


class Gemma3TextForSequenceClassification(LastTokenClassificationHead, Gemma3PreTrainedModel):
    def __init__(self, config: Gemma3TextConfig):
        super().__init__(config)
        self.model = Gemma3TextModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()
