"""Building blocks shared by the model families: RMSNorm, rotary embedding,
attention masks from `attention_mask`, and attention on SDPA.

The KV cache is used only through `cache.update(layer_idx, k, v) -> (k, v)`.
"""

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..generation.cache import KVCache

ACTIVATIONS = {
    "silu": F.silu,
    "swish": F.silu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
}


def get_activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x):
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, self.weight.shape, self.weight, self.variance_epsilon)  # one fused op
        # Normalise in fp32 whatever the weights' dtype, as the reference does.
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * x.to(dtype)


# -- packed weights for CPU decoding ---------------------------------------------------------

# Decoding runs one token per row through every weight: the speed is how fast the weights
# stream from memory. oneDNN's blocked weight layout streams about twice as fast as the
# plain (out, in) layout torch's default kernel reads, so decode steps on CPU (fp32, bf16) use
# packed copies of the linear weights (built on first use, rebuilt when a weight changes;
# they cost one extra copy of those weights). Prefill, training and other devices use the
# weights as they are. Set to False to turn the packed path off.
PACKED_CPU_DECODE = (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
                     and os.environ.get("LEANFORMERS_PACKED_DECODE", "1") != "0")


# bf16 only where the CPU has native bf16 instructions; elsewhere oneDNN would emulate them slowly.
PACKED_DTYPES = (torch.float32,) + ((torch.bfloat16,) if PACKED_CPU_DECODE and getattr(
    torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)() else ())


def packed_decode_applies(x, cache) -> bool:
    return (PACKED_CPU_DECODE and cache is not None and x.shape[1] == 1 and x.device.type == "cpu"
            and x.dtype in PACKED_DTYPES and not torch.is_grad_enabled())


class PackedLinears:
    """Linear layers that read the same input, applied as one matmul over their weights
    concatenated and packed in oneDNN's layout. Not a module: nothing of it is saved."""

    def __init__(self, *linears: nn.Linear):
        self.linears = linears
        self.splits = [linear.out_features for linear in linears]
        self.version = None

    def __call__(self, x, split: bool = True):
        version = [(p.data_ptr(), p._version) for l in self.linears for p in (l.weight, l.bias) if p is not None]
        if version != self.version:
            with torch.no_grad():
                weight = torch.cat([l.weight for l in self.linears]) if len(self.linears) > 1 else self.linears[0].weight
                self.weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
                biases = [l.bias for l in self.linears]
                self.bias = None if biases[0] is None else torch.cat(biases).detach()
            self.version = version
        y = torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        return y.split(self.splits, dim=-1) if split and len(self.splits) > 1 else y


# -- rotary position embedding -------------------------------------------------------


def rope_inv_freq(rope: dict, head_dim: int, max_position_embeddings: int, seq_len: int | None = None):
    """Inverse frequencies (head_dim/2,) for a rope_parameters dict; seq_len matters for 'dynamic' only."""
    kind = rope.get("rope_type", "default")
    base = rope["rope_theta"]
    dim = int(head_dim * rope.get("partial_rotary_factor", 1.0))
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    if kind == "dynamic":
        factor = rope["factor"]
        seq_len = max(seq_len or 0, max_position_embeddings)
        base = base * ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    inv_freq = 1.0 / (base**exponents)
    if kind == "linear":
        inv_freq = inv_freq / rope["factor"]
    elif kind == "llama3":
        factor, low, high = rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"]
        old_context = rope.get("original_max_position_embeddings", max_position_embeddings)
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_context / low, inv_freq / factor, inv_freq)
        smooth = (old_context / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_context / high) & (wavelen <= old_context / low)
        inv_freq = torch.where(medium, smoothed, scaled)
    elif kind not in ("default", "dynamic"):
        raise ValueError(f"rope_type {kind!r} is not supported; use default, linear, dynamic or llama3")
    return inv_freq


class RotaryEmbedding(nn.Module):
    def __init__(self, rope: dict, head_dim: int, max_position_embeddings: int):
        super().__init__()
        self.rope = rope
        self.head_dim = head_dim
        self.max_position_embeddings = max_position_embeddings
        # Not in checkpoints, so it is computed here even when the model is built on meta to be loaded.
        device = torch.get_default_device()
        with torch.device("cpu" if device.type == "meta" else device):
            inv_freq = rope_inv_freq(rope, head_dim, max_position_embeddings)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, position_ids, dtype):
        """cos and signed sin of shape (B, T, 1, head_dim) for position_ids (B, T), for apply_rotary."""
        inv_freq = self.inv_freq
        if self.rope.get("rope_type") == "dynamic":
            seq_len = int(position_ids.max()) + 1
            if seq_len > self.max_position_embeddings:
                inv_freq = rope_inv_freq(self.rope, self.head_dim, self.max_position_embeddings, seq_len).to(inv_freq.device)
        freqs = position_ids[:, :, None, None].float() * inv_freq.float()  # (B, T, 1, D/2)
        cos, sin = freqs.cos(), freqs.sin()
        return torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype)


def apply_rotary(x, cos, signed_sin):
    """Rotate x (B, T, H, D) by position: x * cos + rotate_half(x) * sin, where rotate_half(x) =
    cat(-x2, x1) is written as roll(x) = cat(x2, x1) times a sin whose first half is negated."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * signed_sin


# -- masks ------------------------------------------------------------------------------


def build_attention_mask(attention_mask, q_len: int, kv_len: int, causal: bool = True, device=None):
    """Boolean mask (B, 1, q_len, kv_len), True where a query may attend, or None when
    SDPA can be told `is_causal` (no padding, no past) or needs no mask at all.

    attention_mask (B, kv_len) marks real tokens with 1. Query i sits at key
    position kv_len - q_len + i. A query whose keys are all masked (a pad
    position in a left-padded row, an all-padding row) gets a zero output from
    SDPA (torch >= 2.5), as in transformers, not NaN.
    """
    if attention_mask is not None and attention_mask.dim() == 4:
        return attention_mask.bool()
    if attention_mask is not None and q_len > 1 and bool(attention_mask.all()):
        attention_mask = None  # no padding: let SDPA use its causal kernel
    if attention_mask is None:
        if not causal or q_len == 1 or q_len == kv_len:
            return None
        attention_mask = torch.ones(1, kv_len, dtype=torch.bool, device=device)
    device = device or attention_mask.device
    keep = attention_mask[:, None, None, :].bool()  # (B, 1, 1, kv_len)
    if causal and q_len > 1:
        q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
        keep = keep & (torch.arange(kv_len, device=device)[None, :] <= q_pos)  # (B, 1, q, kv)
    return keep


def attention(q, k, v, mask, causal: bool, scale: float | None = None, dropout: float = 0.0):
    """Scaled dot-product attention; q (B, H, Tq, D), k/v (B, Hkv, Tk, D) with H a multiple of Hkv."""
    is_causal = causal and mask is None and q.shape[2] > 1 and q.shape[2] == k.shape[2]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal,
                                          scale=scale, enable_gqa=k.shape[1] != q.shape[1])


def attention_with_weights(q, k, v, mask, causal: bool, scale: float | None = None):
    """The explicit path, for output_attentions: returns (output, weights (B, H, Tq, Tk))."""
    if k.shape[1] != q.shape[1]:
        groups = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(groups, dim=1)
        v = v.repeat_interleave(groups, dim=1)
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-1, -2)) * scale
    if mask is None and causal and q.shape[2] > 1:
        q_len, k_len = q.shape[2], k.shape[2]
        mask = torch.ones(q_len, k_len, dtype=torch.bool, device=q.device).tril(k_len - q_len)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = scores.float().softmax(-1).to(q.dtype)
    return weights @ v, weights


# -- the start and end of a decoder forward (Llama, GPT-2) -----------------------------------


def check_token_ids(input_ids, vocab_size: int):
    if input_ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
        raise TypeError(f"input_ids must hold integer token ids, not {input_ids.dtype}")
    if input_ids.numel():
        low, high = input_ids.aminmax()
        if int(high) >= vocab_size or int(low) < 0:
            raise ValueError(f"input_ids holds ids outside the vocabulary [0, {vocab_size})")


def position_ids_from_mask(attention_mask, past_length: int, length: int):
    """Positions that skip left padding: the running count of real tokens, minus one."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp_(min=0)[:, past_length : past_length + length]


def start_decoder_forward(model, embed, input_ids, inputs_embeds, attention_mask, position_ids, cache, use_cache):
    """Embeddings (B, T, C), the KV cache (a new one when use_cache asks and none is given),
    position ids (B, T) that skip left padding, and how many tokens the cache held before."""
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids or inputs_embeds")
    if inputs_embeds is None:
        check_token_ids(input_ids, model.config.vocab_size)
        inputs_embeds = embed(input_ids)
    use_cache = use_cache if use_cache is not None else (model.config.use_cache and not model.training)
    if use_cache and cache is None:
        cache = KVCache()
    B, T, _ = inputs_embeds.shape
    past = cache.get_seq_length() if cache is not None else 0
    if attention_mask is not None and attention_mask.dim() == 2 and attention_mask.shape[-1] != past + T:
        raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} tokens, but the cache holds {past} "
                         f"and the input {T}: it must cover both")
    if position_ids is None:
        if attention_mask is not None and attention_mask.dim() == 2:
            position_ids = position_ids_from_mask(attention_mask, past, T)
        else:
            position_ids = torch.arange(past, past + T, device=inputs_embeds.device).expand(B, T)
    return inputs_embeds, (cache if use_cache else None), position_ids, past


def keep_last(hidden, logits_to_keep):
    """The positions whose logits are wanted: the last `logits_to_keep` (0 = all), or given indices."""
    if isinstance(logits_to_keep, int):
        return hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:]
    return hidden[:, logits_to_keep]


def causal_lm_loss(logits, labels, ignore_index: int = -100):
    """Mean cross-entropy of each position predicting the next label; -100 labels are ignored."""
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the input's {tuple(logits.shape[:-1])}")
    shifted = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    return F.cross_entropy(logits.float().flatten(0, -2), shifted.flatten().to(logits.device), ignore_index=ignore_index)
