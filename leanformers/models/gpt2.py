"""GPT-2: config, blocks (Conv1D attention and MLP), base model, heads.

Parameter names are the Hugging Face checkpoint names (`transformer.h.0.attn.c_attn.weight`).
GPT-2's linear layers are "Conv1D": the weight is stored (in, out), the transpose of
nn.Linear's, and stays that way so checkpoints load and save unchanged.
"""

import torch
from torch import nn

from ..config import PretrainedConfig
from .base import PreTrainedModel
from .heads import LastTokenClassificationHead, QuestionAnsweringHead, TokenClassificationHead, classifier_dropout
from .layers import (build_attention_mask, cached_attention, causal_lm_head, get_activation,
                     run_decoder_layers, start_decoder_forward)
from .outputs import CausalLMOutputWithPast


class GPT2Config(PretrainedConfig):
    model_type = "gpt2"
    # config.json spells GPT-2's sizes n_embd, n_layer, ...; the common names are aliases of those.
    attribute_map = {"hidden_size": "n_embd", "max_position_embeddings": "n_positions",
                     "num_attention_heads": "n_head", "num_hidden_layers": "n_layer"}
    defaults = dict(
        vocab_size=50257, n_positions=1024, n_embd=768, n_layer=12, n_head=12, n_inner=None,
        activation_function="gelu_new", resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.1,
        layer_norm_epsilon=1e-5, initializer_range=0.02, summary_type="cls_index", summary_use_proj=True,
        summary_activation=None, summary_proj_to_labels=True, summary_first_dropout=0.1,
        scale_attn_weights=True, use_cache=True, bos_token_id=50256, eos_token_id=50256, pad_token_id=None,
        scale_attn_by_inverse_layer_idx=False, reorder_and_upcast_attn=False, add_cross_attention=False,
        tie_word_embeddings=True,
    )

    def __post_init__(self):
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) is not a multiple of n_head ({self.n_head})")
        if self.add_cross_attention:
            raise ValueError("GPT-2 with cross-attention (add_cross_attention=True, an encoder-decoder "
                             "setup) is not supported")


class Conv1D(nn.Module):
    """A linear layer whose weight is stored (in_features, out_features), as GPT-2 checkpoints hold it."""

    def __init__(self, out_features: int, in_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).view(*x.shape[:-1], -1)


class GPT2Attention(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.scale = self.head_dim**-0.5 if config.scale_attn_weights else 1.0
        if config.scale_attn_by_inverse_layer_idx:
            self.scale /= layer_idx + 1
        self.c_attn = Conv1D(3 * config.n_embd, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.n_embd)
        self.attn_pdrop = config.attn_pdrop
        self.resid_dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x, mask, cache, output_attentions=False):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        out, weights = cached_attention(q, k, v, mask, cache, self.layer_idx, output_attentions, scale=self.scale,
                                        dropout=self.attn_pdrop if self.training else 0.0)  # (B, T, C)
        return self.resid_dropout(self.c_proj(out)), weights


class GPT2MLP(nn.Module):
    def __init__(self, config: GPT2Config):
        super().__init__()
        inner = config.n_inner or 4 * config.n_embd
        self.c_fc = Conv1D(inner, config.n_embd)
        self.c_proj = Conv1D(config.n_embd, inner)
        self.act = get_activation(config.activation_function)
        self.dropout = nn.Dropout(config.resid_pdrop)

    def forward(self, x):
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class GPT2Block(nn.Module):
    def __init__(self, config: GPT2Config, layer_idx: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.attn = GPT2Attention(config, layer_idx)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def forward(self, x, mask, cache, output_attentions=False):
        attn_out, weights = self.attn(self.ln_1(x), mask, cache, output_attentions)
        x = x + attn_out
        return x + self.mlp(self.ln_2(x)), weights


class GPT2PreTrainedModel(PreTrainedModel):
    config_class = GPT2Config
    base_model_prefix = "transformer"
    # Older checkpoints saved the causal-mask buffers.
    ignored_checkpoint_keys = (".attn.bias", ".attn.masked_bias")

    def init_weights_of(self, module):
        super().init_weights_of(module)
        std = self.config.initializer_range
        if isinstance(module, Conv1D):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer) at init.
        if isinstance(module, (GPT2Attention, GPT2MLP)):
            nn.init.normal_(module.c_proj.weight, std=std / (2 * self.config.n_layer) ** 0.5)


class GPT2Model(GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.n_positions, config.n_embd)
        self.drop = nn.Dropout(config.embd_pdrop)
        self.h = nn.ModuleList(GPT2Block(config, i) for i in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, eps=config.layer_norm_epsilon)
        self.post_init()

    def get_input_embeddings(self):
        return self.wte

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, use_cache=None, output_hidden_states=None,
                output_attentions=None, return_dict=None, cache=None, **kwargs):
        inputs_embeds, cache, position_ids, past = start_decoder_forward(
            self, self.wte, input_ids, inputs_embeds, attention_mask, position_ids,
            cache if cache is not None else past_key_values, use_cache)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        T = inputs_embeds.shape[1]
        if past + T > self.config.n_positions:
            raise ValueError(f"the input is {past + T} tokens long ({past} cached + {T} new), but this GPT-2 model "
                             f"has position embeddings for max_position_embeddings={self.config.n_positions} only")
        x = inputs_embeds + self.wpe(position_ids)  # (B, T, C)
        if token_type_ids is not None:
            x = x + self.wte(token_type_ids)
        x = self.drop(x)
        mask = build_attention_mask(attention_mask, T, past + T, causal=True, device=x.device)

        return run_decoder_layers(self, self.h, x, self.ln_f, cache, output_hidden_states, output_attentions,
                                  lambda block, x: block(x, mask, cache, output_attentions))


class GPT2LMHeadModel(GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.post_init()

    def get_output_embeddings(self):
        return self.lm_head

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, labels=None, use_cache=None, output_hidden_states=None,
                output_attentions=None, logits_to_keep=0, return_dict=None, cache=None, num_items_in_batch=None,
                skip_logits=False, **kwargs):
        out = self.transformer(input_ids=input_ids, past_key_values=past_key_values, cache=cache,
                               attention_mask=attention_mask, token_type_ids=token_type_ids,
                               position_ids=position_ids, inputs_embeds=inputs_embeds, use_cache=use_cache,
                               output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        loss, logits = causal_lm_head(self.lm_head, out.last_hidden_state, labels, logits_to_keep, num_items_in_batch,
                                      skip_logits)
        return CausalLMOutputWithPast(loss=loss, logits=logits, cache=out.cache,
                                      hidden_states=out.hidden_states, attentions=out.attentions)


class GPT2ForSequenceClassification(LastTokenClassificationHead, GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.score = nn.Linear(config.n_embd, config.num_labels, bias=False)
        self.post_init()


class GPT2ForTokenClassification(TokenClassificationHead, GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.n_embd, config.num_labels)
        self.post_init()


class GPT2ForQuestionAnswering(QuestionAnsweringHead, GPT2PreTrainedModel):
    def __init__(self, config: GPT2Config):
        super().__init__(config)
        self.transformer = GPT2Model(config)
        self.qa_outputs = nn.Linear(config.n_embd, 2)
        self.post_init()
