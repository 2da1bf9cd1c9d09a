"""Decode steps through Llama-shaped decoder layers in one native call (kernels/decoder.c).

A layer qualifies by its parts, under the checkpoint names the Llama family gives them: input_layernorm,
self_attn (q_proj, k_proj, v_proj, o_proj, optionally q_norm and k_norm), post_attention_layernorm and mlp
(gate_proj, up_proj, down_proj with SiLU), and nothing else; each projection plain (Linear) or GGUF blocks
(QuantizedLinear), each norm an RMSNorm, all fp32 or all bf16 (blocks: with fp32 only). Llama, SmolLM,
Mistral, Qwen2 and Qwen3 layers do; Gemma's (more norms) and an adapter-wrapped projection do not, and run
through their forward as before.

A step qualifies when it is a plain decode step: one new token per row, in the layers' dtype, for at most 16
rows on CPU; no gradients, no hidden states or attention weights asked for; the model's own KVCache holding
the prefill's fp32 keys and values (a bf16 model's too: its forward caches them in fp32 on CPU); at most a
(B, past + 1) padding mask. Otherwise, and without the kernels
(LEANFORMERS_KERNELS=0, no compiler, LEANFORMERS_FAST_DECODE=0), the layers' forward is the eager twin.

Why: SmolLM2-135M kept in Q4_1 blocks spent ~12 of a ~19 ms step outside its products, in ~800 Python calls
and small torch ops a step; here they are one call (see decoder.c).
"""

import ctypes
import operator
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from ..generation.cache import KVCache
from ..kernels import (BF16_ROWS, FP32_ROWS, KERNEL_TYPES, MAX_MATVEC_ROWS, Decoder, DecoderLayer, DecoderWeight,
                       decode_step, kernels_available)
from .layers import FAST_CPU_DECODE, Linear, RMSNorm
from .quantized import QuantizedLinear, blocks_shape

LAYER_PARTS = {"input_layernorm", "self_attn", "post_attention_layernorm", "mlp"}
ATTENTION_PARTS = {"q_proj", "k_proj", "v_proj", "o_proj"}
MLP_PARTS = {"gate_proj", "up_proj", "down_proj"}
DENSE_KINDS = {torch.float32: FP32_ROWS, torch.bfloat16: BF16_ROWS}


def usable(t, dtype) -> bool:
    return t.dtype == dtype and t.is_cpu and t.is_contiguous()


def weight_description(module, dtype) -> DecoderWeight | None:
    """decoder.c's view of a projection of a model in `dtype`, or None where it cannot read it (decoder.c
    trusts every size it is given, so each tensor's is checked here)."""
    bias = module._parameters.get("bias")
    if type(module) in (Linear, nn.Linear):
        data = module._parameters["weight"]
        if not usable(data, dtype) or data.dim() != 2:
            return None
        kind, (rows, cols) = DENSE_KINDS[dtype], data.shape
    elif type(module) is QuantizedLinear and dtype == torch.float32 and module.type_name in KERNEL_TYPES:
        data, rows, cols = module.qweight, module.out_features, module.in_features
        kind = KERNEL_TYPES[module.type_name][0]
        if (data.shape != blocks_shape(module.type_name, rows, cols) or data.dtype != torch.uint8 or not data.is_cpu
                or not data.is_contiguous()):
            return None
    else:
        return None
    if bias is not None and (not usable(bias, dtype) or bias.shape != (rows,)):
        return None
    return DecoderWeight(kind, data.data_ptr(), None if bias is None else bias.data_ptr(), rows, cols)


def norm_weight(module, dtype, size: int) -> torch.Tensor | None:
    """An RMSNorm's weight of `size` values as decoder.c reads it: fp32 (a bf16 one widened: exact), or None."""
    if type(module) is not RMSNorm or not usable(module._parameters["weight"], dtype):
        return None
    weight = module._parameters["weight"]
    return weight.float() if weight.shape == (size,) else None


def layer_description(layer, dtype, hidden: int, head_dim: int, eps: list, kept: list) -> DecoderLayer | None:
    """decoder.c's view of one decoder layer of a model in `dtype` (the norms' epsilons appended to eps, the
    widened norm weights it points to to kept), or None."""
    attention, mlp = layer._modules.get("self_attn"), layer._modules.get("mlp")
    if set(layer._modules) != LAYER_PARTS or getattr(mlp, "act", None) is not F.silu:
        return None
    norm_parts = {"q_norm", "k_norm"} if getattr(attention, "qk_norm", False) else set()
    if set(attention._modules) != ATTENTION_PARTS | norm_parts or set(mlp._modules) != MLP_PARTS:
        return None
    weights = [weight_description(module, dtype) for module in (
        attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj, mlp.gate_proj, mlp.up_proj,
        mlp.down_proj)]
    norms = [(layer.input_layernorm, hidden), (layer.post_attention_layernorm, hidden)]
    if norm_parts:
        norms += [(attention.q_norm, head_dim), (attention.k_norm, head_dim)]
    norm_weights = [norm_weight(norm, dtype, size) for norm, size in norms]
    if any(w is None for w in weights) or any(w is None for w in norm_weights):
        return None
    eps.extend(norm.variance_epsilon for norm, _ in norms)
    kept.extend(norm_weights)
    pointers = [w.data_ptr() for w in norm_weights] + [None, None]  # no q_norm and k_norm: NULL
    return DecoderLayer(*weights, *pointers[:4], getattr(layer, "sliding_window", None) or 0)


class NativeDecoder:
    """decoder.c's description of a stack of layers, valid while the layers hold the tensors it points into,
    unchanged (`current`), and the pointers to a cache's buffers (`cache_buffers`)."""

    def __init__(self, layers):
        dicts = [held for module in layers.modules() for held in (module._modules, module._parameters, module._buffers)]
        self.structure = [(held, dict(held)) for held in dicts[0::3]]  # submodules by name
        self.slots = [(held, name) for held in dicts[1::3] + dicts[2::3] for name, t in held.items() if t is not None]
        self.tensors = [held[name] for held, name in self.slots]
        self.versions = [t._version for t in self.tensors]
        self.checked_with = None  # the cache of the last step whose structure was checked (a weak reference)
        self.buffers = None  # the cache's key and value buffers the pointers below are to
        self.decoder = None
        first_norm = getattr(layers[0], "input_layernorm", None) if len(layers) else None
        self.dtype = getattr(getattr(first_norm, "weight", None), "dtype", None)
        if self.dtype not in DENSE_KINDS:
            return
        attention = getattr(layers[0], "self_attn", None)
        heads, kv_heads, head_dim = (getattr(attention, name, None) for name in ("n_heads", "n_kv_heads", "head_dim"))
        hidden = getattr(getattr(attention, "q_proj", None), "in_features", None)
        if (not all(isinstance(n, int) and n > 0 for n in (heads, kv_heads, head_dim, hidden)) or heads % kv_heads
                or head_dim > 512 or head_dim % 2):
            return
        eps, self.norm_weights = [], []
        described = [layer_description(layer, self.dtype, hidden, head_dim, eps, self.norm_weights) for layer in layers]
        if any(d is None for d in described) or len(set(eps)) != 1:
            return
        inner = described[0].gate.rows
        shape = ((heads * head_dim, hidden), (kv_heads * head_dim, hidden), (kv_heads * head_dim, hidden),
                 (hidden, heads * head_dim), (inner, hidden), (inner, hidden), (hidden, inner))
        if any(tuple((w.rows, w.cols) for w in (d.q, d.k, d.v, d.o, d.gate, d.up, d.down)) != shape
               for d in described):
            return  # decoder.c reads every layer with these sizes
        self.layers = (DecoderLayer * len(described))(*described)
        self.decoder = Decoder(len(described), hidden, heads, kv_heads, head_dim, inner, self.dtype == torch.bfloat16,
                               eps[0], head_dim**-0.5, self.layers)

    def current(self, cache) -> bool:
        """Whether every parameter and buffer is still the tensor it was, unchanged in place (every step), and
        every submodule still where it was (an adapter put in a projection's place; checked at the first step
        on each cache: ~1,000 entries for SmolLM2, 0.4 ms, would be 4% of every step)."""
        held_now = [held.get(name) for held, name in self.slots]
        if not all(map(operator.is_, held_now, self.tensors)) or [t._version for t in self.tensors] != self.versions:
            return False
        if self.checked_with is not None and self.checked_with() is cache:
            return True
        if not all(held == parts for held, parts in self.structure):
            return False
        self.checked_with = weakref.ref(cache)
        return True

    def cache_buffers(self, cache, batch: int) -> int | None:
        """The positions `cache` holds for every layer, when decoder.c can append to its buffers in place
        (each grown first where full); else None. Pointers to the buffers, and the room they have, are kept
        while the buffers stay the same tensors."""
        layers = len(self.layers)
        if len(cache) != layers or len(set(cache.lengths)) != 1:
            return None
        past = cache.lengths[0]
        buffers = cache.keys + cache.values
        if self.buffers is not None and all(map(operator.is_, buffers, self.buffers)) and past < self.room:
            return past if self.batch == batch else None
        for layer in range(layers):
            if min(cache.keys[layer].shape[2], cache.values[layer].shape[2]) <= past:
                cache.grow(layer, past + 1)
        self.buffers, buffers = None, cache.keys + cache.values
        head_dim = self.decoder.head_dim
        shape, strides = (batch, self.decoder.kv_heads), buffers[0].stride()[:2]
        for buffer in buffers:
            if (buffer.dtype != torch.float32 or not buffer.is_cpu or buffer.shape[:2] != shape
                    or buffer.shape[3] != head_dim or buffer.stride() != (*strides, head_dim, 1)):
                return None
        pointers = ctypes.c_void_p * layers
        self.pointers = (pointers(*[k.data_ptr() for k in cache.keys]), pointers(*[v.data_ptr() for v in cache.values]),
                         *strides)
        self.buffers, self.batch, self.room = buffers, batch, min(buffer.shape[2] for buffer in buffers)
        return past


DECODERS = weakref.WeakKeyDictionary()  # layers (nn.ModuleList) -> NativeDecoder


def native_decoder(layers, cache) -> NativeDecoder | None:
    decoder = DECODERS.get(layers)
    if decoder is None or not decoder.current(cache):
        decoder = DECODERS[layers] = NativeDecoder(layers)
    return decoder if decoder.decoder is not None else None


def native_decode_step(layers, x, cache, cos, signed_sin, attention_mask):
    """The layers' output for a decode step x (B, 1, hidden), computed by decoder.c (the cache appended to),
    or None where the step or the layers do not qualify (the caller then runs the layers' forward)."""
    batch = x.shape[0]
    if (not FAST_CPU_DECODE or x.dim() != 3 or x.shape[1] != 1 or not 1 <= batch <= MAX_MATVEC_ROWS
            or x.dtype not in DENSE_KINDS or not x.is_cpu or torch.is_grad_enabled() or layers.training
            or type(cache) is not KVCache or not kernels_available()):
        return None
    decoder = native_decoder(layers, cache)
    if decoder is None or decoder.dtype != x.dtype or x.shape[2] != decoder.decoder.hidden:
        return None  # inputs_embeds of another width: the layers' forward raises its error
    past = decoder.cache_buffers(cache, batch)
    if past is None or cos.shape != (batch, 1, 1, decoder.decoder.head_dim):
        return None
    if attention_mask is not None and attention_mask.shape != (batch, past + 1):
        return None
    keep = None if attention_mask is None else attention_mask.bool().contiguous()
    hidden = x.reshape(batch, -1).to(torch.float32, copy=True)  # written in place; bf16 widened exactly
    decode_step(decoder.decoder, hidden, *decoder.pointers, past, cos.reshape(batch, -1).float().contiguous(),
                signed_sin.reshape(batch, -1).float().contiguous(), keep)
    cache.lengths = [past + 1] * len(decoder.layers)
    return hidden.to(x.dtype).view_as(x)
