"""Llama family: Llama, SmolLM, Mistral, and Qwen2-style attention biases, through the config.

Reads top to bottom: config, blocks (attention, MLP, decoder layer), base model, heads.
Parameter names are the Hugging Face checkpoint names.
"""

from torch import nn

from ..config import PretrainedConfig
from .base import PreTrainedModel
from .heads import LastTokenClassificationHead, QuestionAnsweringHead, TokenClassificationHead, classifier_dropout
from .layers import (Linear, RMSNorm, RotaryEmbedding, apply_rotary, build_attention_mask, cached_attention,
                     causal_lm_head, gated_mlp, get_activation, run_decoder_layers, start_decoder_forward)
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
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                             f"({self.num_attention_heads})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) is not a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        if self.rope_parameters["rope_type"] == "llama3":
            self.rope_parameters.setdefault("original_max_position_embeddings", self.max_position_embeddings)

    @property
    def rope_theta(self):
        return self.rope_parameters["rope_theta"]

    @property
    def rope_scaling(self):
        return None if self.rope_parameters["rope_type"] == "default" else self.rope_parameters


class LlamaAttention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.dropout = config.attention_dropout
        bias = config.attention_bias
        self.q_proj = Linear(config.hidden_size, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = Linear(config.hidden_size, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = Linear(self.n_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(self, x, cos, sin, mask, cache, output_attentions=False):
        B, T, _ = x.shape
        H, Hkv, D = self.n_heads, self.n_kv_heads, self.head_dim
        q = apply_rotary(self.q_proj(x).view(B, T, H, D), cos, sin).transpose(1, 2)  # (B, H, T, D)
        k = apply_rotary(self.k_proj(x).view(B, T, Hkv, D), cos, sin).transpose(1, 2)  # (B, Hkv, T, D)
        v = self.v_proj(x).view(B, T, Hkv, D).transpose(1, 2)  # (B, Hkv, T, D)
        out, weights = cached_attention(q, k, v, mask, cache, self.layer_idx, output_attentions,
                                        dropout=self.dropout if self.training else 0.0)  # (B, T, H * D)
        return self.o_proj(out), weights


class LlamaMLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.gate_proj = Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.up_proj = Linear(config.hidden_size, config.intermediate_size, bias=config.mlp_bias)
        self.down_proj = Linear(config.intermediate_size, config.hidden_size, bias=config.mlp_bias)
        self.act = get_activation(config.hidden_act)

    def forward(self, x):
        return gated_mlp(self.act, self.gate_proj(x), self.up_proj(x), self.down_proj)


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
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
        mask = build_attention_mask(attention_mask, T, past + T, causal=True, device=inputs_embeds.device)
        cos, sin = self.rotary_emb(position_ids, inputs_embeds.dtype)
        return run_decoder_layers(self, self.layers, inputs_embeds, self.norm, cache, output_hidden_states,
                                  output_attentions, lambda layer, x: layer(x, cos, sin, mask, cache, output_attentions))


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
