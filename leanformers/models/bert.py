"""BERT: config, blocks (embeddings, self-attention, feed-forward), base model with pooler, heads.

Parameter names are the Hugging Face checkpoint names (`bert.encoder.layer.0.attention.self.query.weight`).
Bidirectional attention on SDPA; padding is masked from `attention_mask`; positions are absolute.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..config import PretrainedConfig
from .base import PreTrainedModel
from .heads import (QuestionAnsweringHead, TokenClassificationHead, check_integer_labels,
                    classifier_dropout, sequence_classification_loss)
from .layers import (attention, attention_with_weights, build_attention_mask, checkpointed, embed_token_ids,
                     get_activation, keep_last)
from .outputs import (BaseModelOutputWithPoolingAndCrossAttentions, MaskedLMOutput, MultipleChoiceModelOutput,
                      SequenceClassifierOutput)


class BertConfig(PretrainedConfig):
    model_type = "bert"
    defaults = dict(
        vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
        hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
        type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0, use_cache=True,
        classifier_dropout=None, is_decoder=False, add_cross_attention=False, tie_word_embeddings=True,
    )

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) is not a multiple of num_attention_heads "
                             f"({self.num_attention_heads})")
        position_type = getattr(self, "position_embedding_type", "absolute")
        if position_type not in (None, "absolute"):
            raise ValueError(f"position_embedding_type={position_type!r} is not supported; only 'absolute' is")
        if self.is_decoder or self.add_cross_attention:
            raise ValueError("BERT as a decoder (is_decoder / add_cross_attention) is not supported; "
                             "leanformers implements the encoder")


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, inputs_embeds, token_type_ids, position_ids):
        x = inputs_embeds + self.token_type_embeddings(token_type_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))  # (B, T, C)


class BertSelfAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x, mask, output_attentions=False):
        B, T, C = x.shape
        q, k, v = (proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
                   for proj in (self.query, self.key, self.value))
        if output_attentions:
            out, weights = attention_with_weights(q, k, v, mask, causal=False)
        else:
            dropout = self.dropout if self.training else 0.0
            out, weights = attention(q, k, v, mask, causal=False, dropout=dropout), None
        return out.transpose(1, 2).reshape(B, T, C), weights


class BertResidualOutput(nn.Module):
    """dense -> dropout -> add the residual -> LayerNorm (BERT's post-norm), as `*.output` in checkpoints."""

    def __init__(self, config: BertConfig, in_features: int):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertResidualOutput(config, config.hidden_size)

    def forward(self, x, mask, output_attentions=False):
        out, weights = self.self(x, mask, output_attentions)
        return self.output(out, x), weights


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = get_activation(config.hidden_act)

    def forward(self, x):
        return self.act(self.dense(x))


class BertLayer(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertResidualOutput(config, config.intermediate_size)

    def forward(self, x, mask, output_attentions=False):
        x, weights = self.attention(x, mask, output_attentions)
        return self.output(self.intermediate(x), x), weights


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    """tanh(dense(hidden state of the first token, [CLS]))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, C)


class BertPredictionHeadTransform(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = get_activation(config.hidden_act)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.act(self.dense(x)))


class BertLMPredictionHead(nn.Module):
    """The decoder's weight is tied to the word embeddings; its bias is `predictions.bias`."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x):
        # The bias is added in place: a second (B, T, V) tensor would cost fill-mask ~8% of its time.
        return self.decoder(self.transform(x)).add_(self.bias)  # (B, T, V)


class BertOnlyMLMHead(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)


POOLER_KEYS = ("pooler.dense.weight", "pooler.dense.bias")


class BertPreTrainedModel(PreTrainedModel):
    config_class = BertConfig
    base_model_prefix = "bert"
    # Older checkpoints saved the position-id buffer.
    ignored_checkpoint_keys = ("embeddings.position_ids",)
    # A masked-LM checkpoint has no pooler: a class with one initializes it, with a warning, as transformers does.
    optional_checkpoint_keys = POOLER_KEYS

    def init_weights_of(self, module):
        super().init_weights_of(module)
        if isinstance(module, BertLMPredictionHead):
            nn.init.zeros_(module.bias)


class BertModel(BertPreTrainedModel):
    def __init__(self, config: BertConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        if not add_pooling_layer:
            self.ignored_checkpoint_keys = self.ignored_checkpoint_keys + POOLER_KEYS
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.word_embeddings

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, output_attentions=None, output_hidden_states=None, return_dict=None, **kwargs):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = embed_token_ids(self.embeddings.word_embeddings, input_ids)
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        B, T, _ = inputs_embeds.shape
        device = inputs_embeds.device
        if position_ids is None:
            if T > self.config.max_position_embeddings:
                raise ValueError(f"the input is {T} tokens long, but this BERT model has position embeddings for "
                                 f"max_position_embeddings={self.config.max_position_embeddings} only; truncate it "
                                 f"(tokenizer(..., truncation=True, max_length={self.config.max_position_embeddings}))")
            position_ids = torch.arange(T, device=device).expand(B, T)
        if token_type_ids is None:
            token_type_ids = torch.zeros(B, T, dtype=torch.long, device=device)
        if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape != (B, T):
            raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)} does not match the "
                             f"input's {(B, T)}")
        mask = build_attention_mask(attention_mask, T, T, causal=False, device=device)

        x = self.embeddings(inputs_embeds, token_type_ids, position_ids)
        all_hidden, all_attentions = [x], []
        for layer in self.encoder.layer:
            x, weights = checkpointed(self, layer)(x, mask, output_attentions)
            all_hidden.append(x)
            all_attentions.append(weights)
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=x,
            pooler_output=self.pooler(x) if self.pooler is not None else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


class BertForMaskedLM(BertPreTrainedModel):
    ignored_checkpoint_keys = BertPreTrainedModel.ignored_checkpoint_keys + POOLER_KEYS

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        self.post_init()

    def get_output_embeddings(self):
        return self.cls.predictions.decoder

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, logits_to_keep=0, **kwargs):
        """logits_to_keep, as transformers' causal LMs take it (its BERT does not): 0 scores every position,
        n the last n, a 1D tensor of positions those. The vocabulary projection is most of an MLM forward,
        and fill-mask wants it at the masks only."""
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.cls.predictions(keep_last(out.last_hidden_state, logits_to_keep))  # (B, T or kept, V)
        loss = None
        if labels is not None:
            check_integer_labels("labels", labels, logits.shape[:-1])
            loss = F.cross_entropy(logits.float().flatten(0, -2), labels.flatten().to(logits.device), ignore_index=-100)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


class BertForSequenceClassification(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        out = self.bert(input_ids, attention_mask, token_type_ids, position_ids, inputs_embeds,
                        output_attentions=output_attentions, output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output))  # (B, num_labels)
        loss = sequence_classification_loss(logits, labels, self.config) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


class BertForMultipleChoice(BertPreTrainedModel):
    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                inputs_embeds=None, labels=None, output_attentions=None, output_hidden_states=None,
                return_dict=None, **kwargs):
        first = input_ids if input_ids is not None else inputs_embeds
        rank = 3 if input_ids is not None else 4
        if first is None or first.dim() != rank:
            shape = "(batch, num_choices, seq_len)" + (", hidden_size" if rank == 4 else "")
            raise ValueError(f"{type(self).__name__} needs {'input_ids' if rank == 3 else 'inputs_embeds'} of "
                             f"shape {shape}, got {None if first is None else tuple(first.shape)}")
        B, choices = first.shape[:2]

        def flat(t):  # (B, choices, T, ...) -> (B * choices, T, ...)
            return t.flatten(0, 1) if t is not None else None

        out = self.bert(flat(input_ids), flat(attention_mask), flat(token_type_ids), flat(position_ids),
                        flat(inputs_embeds), output_attentions=output_attentions,
                        output_hidden_states=output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output)).view(B, choices)  # (B, choices)
        loss = None
        if labels is not None:
            check_integer_labels("labels", labels, (B,))
            loss = F.cross_entropy(logits.float(), labels.to(logits.device))
        return MultipleChoiceModelOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                         attentions=out.attentions)


class BertForTokenClassification(TokenClassificationHead, BertPreTrainedModel):
    ignored_checkpoint_keys = BertPreTrainedModel.ignored_checkpoint_keys + POOLER_KEYS

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


class BertForQuestionAnswering(QuestionAnsweringHead, BertPreTrainedModel):
    ignored_checkpoint_keys = BertPreTrainedModel.ignored_checkpoint_keys + POOLER_KEYS

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.bert = BertModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()
