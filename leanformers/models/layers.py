"""Building blocks shared by the model families: RMSNorm, rotary embedding,
attention masks from `attention_mask`, and attention on SDPA.

The KV cache is used only through `cache.update(layer_idx, k, v) -> (k, v)`.
"""

import contextlib
import functools
import math
import operator
import os
import warnings
import weakref

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..generation.cache import KVCache
from ..kernels import DENSE_TYPES, MAX_MATVEC_ROWS, dense_matvec, kernels_available
from .outputs import BaseModelOutputWithPast

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


def trains_plainly(x) -> bool:
    """Whether a training computation on x can run through one of the Functions below: gradients on and
    no autocast (which would pick each op's dtype inside the Function but not in its backward)."""
    return torch.is_grad_enabled() and not torch.is_autocast_enabled(x.device.type)


def gated_mlp(act, gate, up, down_proj: nn.Module):
    """down_proj(act(gate) * up), the gated MLP's output; silu's, when it trains, through SiluGatedLinear."""
    if (act is F.silu and trains_plainly(gate) and type(down_proj) in (nn.Linear, Linear)
            and (gate.requires_grad or up.requires_grad or down_proj.weight.requires_grad)):
        drop_decode_copies(down_proj)
        return SiluGatedLinear.apply(gate, up, down_proj.weight, down_proj.bias)
    return down_proj(act(gate) * up)


class SiluGatedLinear(torch.autograd.Function):
    """F.linear(silu(gate) * up, weight, bias) keeping only gate and up (and the weight) for the backward
    pass, which recomputes silu(gate) * up. Autograd's own graph also keeps silu(gate) and the product,
    two more (B, T, intermediate_size) activations per layer (SmolLM2-135M at 4 x 256 tokens: 377 MB of the
    1,311 MB its step keeps for the backward), for two more elementwise passes in the backward."""

    @staticmethod
    def forward(ctx, gate, up, weight, bias):
        ctx.save_for_backward(gate, up, weight)
        return F.linear(F.silu(gate).mul_(up), weight, bias)

    @staticmethod
    def backward(ctx, grad):  # grad (B, T, C)
        # Written in place where it can be: each fresh (B, T, intermediate_size) tensor costs its page faults.
        gate, up, weight = ctx.saved_tensors
        needs_gate, needs_up, needs_weight, needs_bias = ctx.needs_input_grad
        silu = F.silu(gate)
        grad_bias = grad.flatten(0, -2).sum(0) if needs_bias else None
        grad_product = grad @ weight  # (B, T, intermediate_size)
        grad_gate = None
        if needs_gate:
            grad_gate = grad_product * up
            torch.ops.aten.silu_backward.grad_input(grad_gate, gate, grad_input=grad_gate)
        grad_up = grad_product.mul_(silu) if needs_up else None
        grad_weight = grad.flatten(0, -2).T @ silu.mul_(up).flatten(0, -2) if needs_weight else None
        return grad_gate, grad_up, grad_weight, grad_bias


class RMSNormFunction(torch.autograd.Function):
    """F.rms_norm(x, weight) in fp32 keeping only x for the backward pass, which recomputes the rest in
    fewer passes over x than autograd's graph of rms_norm takes; that graph also keeps x / rms(x), one more
    activation the size of x per norm (SmolLM2-135M at 4 x 256 tokens: 144 MB)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        ctx.save_for_backward(x, weight)
        ctx.eps = eps
        return F.rms_norm(x, weight.shape, weight, eps)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        C = x.shape[-1]
        rstd = torch.linalg.vector_norm(x, dim=-1, keepdim=True).square_().div_(C).add_(ctx.eps).rsqrt_()  # (..., 1)
        normed = x * rstd
        grad_x = grad_weight = scratch = None  # scratch: grad * normed, then grad_x in the same memory
        if ctx.needs_input_grad[1]:
            scratch = grad * normed
            grad_weight = scratch.flatten(0, -2).sum(0)
        if ctx.needs_input_grad[0]:
            grad_normed = torch.mul(grad, weight, out=scratch)
            # d/dx of x * rstd(x): rstd * (g - normed * mean(g * normed))
            dot = torch.linalg.vecdot(grad_normed, normed, dim=-1).unsqueeze_(-1)
            grad_x = grad_normed.addcmul_(normed, dot, value=-1 / C).mul_(rstd)
        return grad_x, grad_weight, None


def rms_norm(x, weight, eps: float):
    """F.rms_norm(x, weight) of fp32 x and weight; through RMSNormFunction when it trains."""
    if trains_plainly(x) and (x.requires_grad or weight.requires_grad):
        out = RMSNormFunction.apply(x, weight, eps)
        if RecomputedNormOutputs.active is not None:
            RecomputedNormOutputs.active.note(out, x, weight, eps)
        return out
    return F.rms_norm(x, weight.shape, weight, eps)  # one fused op


class NormRecipe:
    """How to compute a norm's output again from what RMSNormFunction keeps anyway (x and the weight)."""

    def __init__(self, out, x, weight, eps):
        self.output = weakref.ref(out)  # while it lives, its memory holds no other tensor
        self.x, self.weight, self.eps, self.value = x, weight, eps, None

    def recompute(self):
        if self.value is None:  # once for all the layers that kept it (q, k and v read the same norm)
            with torch.no_grad():
                self.value = F.rms_norm(self.x, self.weight.shape, self.weight, self.eps)
        return self.value


class RecomputedNormOutputs(torch.autograd.graph.saved_tensors_hooks):
    """While decoder layers train: an RMSNorm's output that a later op keeps for the backward pass (every
    linear layer after a norm keeps its input, for its weight's gradient or a LoRA adapter's) is kept as a
    NormRecipe instead and computed again, bit for bit, when the backward pass needs it. That drops two
    (B, T, hidden) activations per layer from what a step holds (SmolLM2-135M at 4 x 256 tokens: 141 MB of
    ~810 MB) for one more norm per layer in the backward pass (~1 ms each)."""

    active = None  # the instance rms_norm reports to, while one is entered

    def __init__(self):
        self.recipes = {}  # output storage address -> NormRecipe, for this forward pass
        super().__init__(self.pack, self.unpack)

    def __enter__(self):
        RecomputedNormOutputs.active = self
        return super().__enter__()

    def __exit__(self, *exc):
        RecomputedNormOutputs.active, self.recipes = None, {}
        return super().__exit__(*exc)

    def note(self, out, x, weight, eps):
        self.recipes[out.untyped_storage().data_ptr()] = NormRecipe(out, x, weight, eps)

    def pack(self, t):
        if t.layout != torch.strided or not self.recipes:
            return t
        recipe = self.recipes.get(t.untyped_storage().data_ptr())
        if recipe is None or recipe.output() is None:
            return t  # not a norm's output, or its memory now holds another tensor
        return recipe, t.shape, t.stride(), t.storage_offset()  # t: the output or a view of it (flattened)

    @staticmethod
    def unpack(packed):
        if isinstance(packed, torch.Tensor):
            return packed
        recipe, shape, stride, offset = packed
        return recipe.recompute().as_strided(shape, stride, offset)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x):
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return rms_norm(x, self.weight, self.variance_epsilon)
        # As the reference: normalise in fp32 (rms_norm upcasts), round to x's dtype, then scale by the weight.
        return self.weight * F.rms_norm(x, self.weight.shape, None, self.variance_epsilon)


# -- linear layers for CPU decoding --------------------------------------------------------------

# A decode step reads every weight once for one token per row: its speed is how fast the weights
# stream through the matmul kernels. Measured on a 2-core CPU, torch's fp32 matrix-vector kernel
# streams ~12 GB/s: it runs on one core. The native kernel (kernels/matvec.c, "native") reads fp32
# and bf16 weights as they are, at up to 16 rows, on every core, at what the memory gives (~29 GB/s
# on SmolLM2's 113 MB output layer, where torch's reads 12 and a torch sum 30), and reads sibling
# layers' weights (q/k/v, gate/up) in one call. Without it (no C compiler, LEANFORMERS_KERNELS=0),
# with the weight's rows cut into one block per core, a batched matmul runs the blocks side by side
# at ~21 GB/s ("split", one fp32 row); for several rows, and for bf16, only oneDNN's blocked layout
# streams fast (~20 GB/s, against ~9 and ~12), so those steps use packed copies of the weights
# ("packed": built on the first such step, rebuilt when a weight changes, dropped by a training
# forward; one extra copy of the linear weights), as do steps of more than 16 rows. Prefill, training
# and other devices use the plain kernels, which are transformers' own: their logits match to the
# last bits (the lm_head of a prefill that keeps only the last position's logits sees one row per
# sequence, and takes the fast path). LEANFORMERS_FAST_DECODE=0 turns every fast path off. The choice
# is made inside `Linear`, so a model file only builds its layers from it and calls them. The price,
# measured in one process against fused calls written into the model file: the 7 module calls a layer
# makes and their checks cost a SmolLM2-135M decode step 4% (fp32, bf16 batch 8) to 10% (bf16, one row).
FAST_CPU_DECODE = os.environ.get("LEANFORMERS_FAST_DECODE", "1") != "0"
PACKED_DTYPES = ((torch.float32,) if torch.backends.mkldnn.is_available() else ()) + (
    # bf16 only where the CPU has native bf16 instructions; elsewhere oneDNN would emulate them slowly.
    (torch.bfloat16,) if getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)() else ())


def decode_path(x, weight) -> str | None:
    """How a linear layer runs on x: "native", "split", "packed", or None (plainly). Only decode steps,
    one token per row (B, 1, C) on CPU without gradients, take a fast path."""
    if not (x.dim() == 3 and x.shape[1] == 1 and FAST_CPU_DECODE and not torch.is_grad_enabled() and x.is_cpu
            and x.dtype == weight.dtype):
        return None
    if (x.shape[0] <= MAX_MATVEC_ROWS and x.dtype in DENSE_TYPES and weight.is_contiguous()
            and kernels_available()):
        return "native"
    if x.shape[0] == 1 and x.dtype == torch.float32:
        return "split"
    return "packed" if x.dtype in PACKED_DTYPES else None


def split_rows_linear(x, weight, bias):
    """x (1, 1, in) @ weight.T as one batched matmul over blocks of the weight's rows, one block per core."""
    blocks = torch.get_num_threads()
    out_features, in_features = weight.shape
    if blocks == 1 or out_features % blocks:
        return F.linear(x, weight, bias)
    y = torch.matmul(x.reshape(1, 1, in_features), weight.view(blocks, -1, in_features).mT)  # (blocks, 1, out/blocks)
    y = y.view(1, 1, out_features)
    return y if bias is None else y.add_(bias)


def parameter_versions(layers) -> list:
    """What changes when a layer's parameter is replaced or modified in place. Reads _parameters
    directly: nn.Module.__getattr__ would cost more than the check is worth, every step."""
    return [(p.data_ptr(), p._version) for layer in layers for p in layer._parameters.values() if p is not None]


class PackedCopy:
    """Linear layers' weights (and biases) concatenated and packed in oneDNN's layout, applied as one
    matmul. Not a module: nothing of it is saved. `refresh(layers)` rebuilds it when a weight changed."""

    def __init__(self):
        self.version = self.weight = self.bias = None

    def refresh(self, layers: list):
        version = parameter_versions(layers)
        if version == self.version:
            return
        with torch.no_grad():
            weights = [layer.weight.detach() for layer in layers]
            self.weight = torch.ops.mkldnn._reorder_linear_weight(torch.cat(weights) if len(weights) > 1 else weights[0], None)
            biases = [layer.bias for layer in layers]
            self.bias = None if biases[0] is None else torch.cat(biases).detach()
        self.splits = [layer.out_features for layer in layers]
        self.version = version

    def clear(self):
        if self.version is not None:
            self.version = self.weight = self.bias = None

    def __call__(self, x):
        return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")

    def __reduce__(self):  # a copied or pickled model builds its own copy on its first decode step
        return PackedCopy, ()


class Linear(nn.Linear):
    """nn.Linear (same parameters, same checkpoint names) whose CPU decode steps run on faster kernels
    (see decode_path): "native" on the weights as they are, else "split" for one fp32 row, "packed" for
    several rows and for bf16. A packed copy is built on the first such step, rebuilt when the weight
    changes and dropped by a forward with gradients on. Sibling layers that read the same input (q/k/v,
    gate/up; see link_sibling_linears) share one native call, or one packed copy and one matmul."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.packed = PackedCopy()
        self.siblings = None

    def forward(self, x):
        siblings = self.siblings
        if siblings is not None and siblings.input is x:
            out = siblings.outputs.pop(self, None)  # computed by a sibling's call on this same input
            if out is not None:
                return out
        params = self._parameters  # not self.weight: nn.Module.__getattr__ is slow for every call of a step
        path = decode_path(x, params["weight"])
        if path == "split":
            return split_rows_linear(x, params["weight"], params["bias"])
        if path is not None and siblings is not None:
            out = siblings.output(self, x, path)
            if out is not None:
                return out
        if path == "native":
            out = dense_matvec([params["weight"]], [params["bias"]], x.reshape(x.shape[0], -1))
            if out is not None:
                return out[0].unsqueeze(1)
        if path == "packed":
            self.packed.refresh([self])
            return self.packed(x)
        if torch.is_grad_enabled():
            self.drop_packed_copies()
        return F.linear(x, params["weight"], params["bias"])

    def drop_packed_copies(self):
        """Training: a packed copy would only hold memory until the next decode step."""
        self.packed.clear()
        if self.siblings is not None:
            self.siblings.packed.clear()


def drop_decode_copies(layer: nn.Module):
    """What a Linear's forward does with gradients on, for training code that reads its weight without
    calling it (the gated MLP's down projection, the loss over the vocabulary)."""
    if isinstance(layer, Linear) and torch.is_grad_enabled():
        layer.drop_packed_copies()


class SiblingLinears:
    """Linear layers of one module that read the same input (q_proj, k_proj, v_proj): on a native or
    packed decode step the first of them called computes all their outputs in one call and keeps the
    others' until they are called with that same input. The layers are looked up on the owner by name
    each time, so a layer replaced there (an adapter wrapping it, say) is seen: the others then run alone."""

    def __init__(self, owner: nn.Module, names: tuple):
        self.owner, self.names = owner, names
        self.lookup = operator.itemgetter(*names)  # the layers, from the owner's _modules
        self.packed = PackedCopy()
        self.layers, self.input, self.outputs = None, None, {}

    def __reduce__(self):
        return SiblingLinears, (self.owner, self.names)

    def output(self, layer: Linear, x, path: str):
        """layer(x) from the shared call on `path` ("native" or "packed"), or None when the siblings cannot
        share one (any more)."""
        layers = self.lookup(self.owner._modules)
        if layers != self.layers:  # the first call, or a sibling was replaced on the owner
            if layer not in layers or not all(type(sibling) is Linear for sibling in layers):
                self.packed.clear()
                return None
            self.layers = layers
        if path == "native":
            params = [sibling._parameters for sibling in layers]
            outputs = dense_matvec([p["weight"] for p in params], [p["bias"] for p in params],
                                   x.reshape(x.shape[0], -1))
            if outputs is None:
                return None
            outputs = [out.unsqueeze(1) for out in outputs]
        else:
            self.packed.refresh(layers)
            outputs = self.packed(x).split_with_sizes(self.packed.splits, dim=-1)
        self.input, self.outputs = x, dict(zip(layers, outputs))
        return self.outputs.pop(layer)


# Names of sibling linear layers in Hugging Face decoders: they read the same input.
SIBLING_LINEAR_NAMES = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def link_sibling_linears(model: nn.Module):
    """Let each group of sibling Linear layers in `model` share one native call, or one packed copy, on decode
    steps."""
    for module in model.modules():
        for names in SIBLING_LINEAR_NAMES:
            layers = [module._modules.get(name) for name in names]
            if all(type(layer) is Linear for layer in layers):
                siblings = SiblingLinears(module, names)
                for layer in layers:
                    layer.siblings = siblings


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
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin)


# -- masks ------------------------------------------------------------------------------


def build_attention_mask(attention_mask, q_len: int, kv_len: int, causal: bool = True, device=None,
                         sliding_window: int | None = None):
    """Boolean mask (B, 1, q_len, kv_len), True where a query may attend, or None when
    SDPA can be told `is_causal` (no padding, no past) or needs no mask at all.

    attention_mask (B, kv_len) marks real tokens with 1. Query i sits at key
    position kv_len - q_len + i. A query whose keys are all masked (a pad
    position in a left-padded row, an all-padding row) gets a zero output from
    SDPA (torch >= 2.5), as in transformers, not NaN. With a sliding_window, a
    query at position q sees only the keys at positions q - sliding_window + 1 .. q
    (positions in the cache, padding included, as transformers counts them).
    """
    keep = build_attention_mask(attention_mask, q_len, kv_len, causal, device) if sliding_window else None
    if sliding_window and kv_len > sliding_window and not (attention_mask is not None and attention_mask.dim() == 4):
        device = device or attention_mask.device
        q_pos = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
        k_pos = torch.arange(kv_len, device=device)[None, :]
        window = (k_pos <= q_pos) & (k_pos > q_pos - sliding_window)  # (q, kv)
        return window[None, None] if keep is None else keep & window
    if sliding_window:
        return keep
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


def cached_attention(q, k, v, mask, cache, layer_idx: int, output_attentions: bool, scale: float | None = None,
                     dropout: float = 0.0):
    """Causal attention of q (B, H, T, D) over the cached keys and values plus k, v (B, Hkv, T, D), which
    are appended to the cache. Returns (output (B, T, H * D) in q's dtype, weights (B, H, T, S) or None).

    In bf16 inference on CPU, keys and values are cached and attended in fp32: torch's bf16 attention
    kernel there costs ~76 us a layer per decode step against ~30 in fp32. A cache's buffers take the
    dtype of the first keys it holds; later ones are converted as they are copied in.
    """
    dtype = q.dtype
    if (dtype == torch.bfloat16 and q.is_cpu and not torch.is_grad_enabled()
            and (cache is None or cache.get_seq_length(layer_idx) == 0)):
        k, v = k.float(), v.float()
    if cache is not None:
        k, v = cache.update(layer_idx, k, v)
    q = q.to(k.dtype)
    if output_attentions:
        out, weights = attention_with_weights(q, k, v, mask, causal=True, scale=scale)
        weights = weights.to(dtype)
    else:
        out, weights = attention(q, k, v, mask, causal=True, scale=scale, dropout=dropout), None
    B, H, T, D = q.shape
    return out.to(dtype).transpose(1, 2).reshape(B, T, H * D), weights


# -- the start and end of a decoder forward (Llama, GPT-2) -----------------------------------


def embed_token_ids(embedding: nn.Embedding, input_ids):
    """embedding(input_ids), refusing ids outside the table with a clear error. On CPU the lookup
    finds them itself (no extra pass over the ids each step); on other devices a bad id would be a
    device-side assert, so the ids are checked first."""
    if input_ids.dtype not in (torch.long, torch.int):
        raise TypeError(f"input_ids must hold integer token ids (int64 or int32), not {input_ids.dtype}")
    vocab_size = embedding.num_embeddings
    if input_ids.device.type == "cpu":
        try:
            return embedding(input_ids)
        except IndexError:
            pass
    else:
        low, high = input_ids.aminmax() if input_ids.numel() else (0, 0)
        if int(high) < vocab_size and int(low) >= 0:
            return embedding(input_ids)
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
        inputs_embeds = embed_token_ids(embed, input_ids)
    use_cache = use_cache if use_cache is not None else (model.config.use_cache and not model.training)
    if use_cache and checkpointing(model):  # the backward's recompute of a layer would write its keys again
        warnings.warn("use_cache=True is incompatible with gradient checkpointing while training; setting "
                      "use_cache=False")
        use_cache = False
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


def checkpointing(model) -> bool:
    """Whether the model's layers run under activation checkpointing (gradient_checkpointing_enable) in this
    forward: only when a backward can follow, i.e. training with grad enabled."""
    return model.gradient_checkpointing and model.training and torch.is_grad_enabled()


def checkpointed(model, function):
    """`function`, or, while checkpointing(model), `function` whose activations are recomputed in backward
    instead of kept (torch restores the RNG state by default, so dropout draws the same masks again)."""
    if not checkpointing(model):
        return function
    return functools.partial(checkpoint, function, **model.gradient_checkpointing_kwargs)


def run_decoder_layers(model, layers, x, final_norm, cache, output_hidden_states: bool, output_attentions: bool,
                       run_layer, run_all=None):
    """x (B, T, C) through each layer (`run_layer(layer, x) -> (x, attention weights)`, checkpointed when
    the model checkpoints its layers), then final_norm; the hidden states and attention weights are
    collected when asked for. `run_all(x)`, when given and neither is asked for, runs every layer at once
    where it can (a native decode step, models/native_decode.py), else returns None."""
    if run_all is not None and not output_hidden_states and not output_attentions:
        out = run_all(x)
        if out is not None:
            return BaseModelOutputWithPast(last_hidden_state=final_norm(out), cache=cache)
    recompute_norms = trains_plainly(x) and not checkpointing(model) and RecomputedNormOutputs.active is None
    run_layer = checkpointed(model, run_layer)
    all_hidden, all_attentions = [], []
    with RecomputedNormOutputs() if recompute_norms else contextlib.nullcontext():
        for layer in layers:
            if output_hidden_states:
                all_hidden.append(x)
            x, weights = run_layer(layer, x)
            if output_attentions:
                all_attentions.append(weights)
        x = final_norm(x)
    if output_hidden_states:
        all_hidden.append(x)
    return BaseModelOutputWithPast(
        last_hidden_state=x,
        cache=cache,
        hidden_states=tuple(all_hidden) if output_hidden_states else None,
        attentions=tuple(all_attentions) if output_attentions else None,
    )


def keep_last(hidden, logits_to_keep):
    """The positions whose logits are wanted: the last `logits_to_keep` (0 = all), or given indices."""
    if isinstance(logits_to_keep, int):
        return hidden if logits_to_keep == 0 else hidden[:, -logits_to_keep:]
    return hidden[:, logits_to_keep]


def causal_lm_loss(logits, labels, ignore_index: int = -100, reduction: str = "mean", num_items_in_batch=None):
    """Cross-entropy of each position predicting the next label (mean, or sum); -100 labels are ignored.

    With num_items_in_batch (the Trainer's count of scored tokens over a whole accumulated batch) the
    sum is divided by it, so the micro-batches' gradients add up to the large batch's.
    """
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the input's {tuple(logits.shape[:-1])}")
    shifted = F.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    if num_items_in_batch is not None:
        reduction = "sum"
    loss = F.cross_entropy(logits.float().flatten(0, -2), shifted.flatten().to(logits.device), ignore_index=ignore_index,
                           reduction=reduction)
    if num_items_in_batch is not None:
        loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
    return loss


# Rows of logits linear_cross_entropy holds at once: a block of 2**24 values (64 MB in fp32), 341 rows of a
# 49,152-token vocabulary. Each block reads the (V, C) weight twice and its gradient once more: measured on
# 1,024 rows (2 cores, AVX-512), 341-row blocks take 0.90x the time of the full logits' loss, 170-row ones 1.04x.
LOSS_BLOCK_ELEMENTS = 1 << 24


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of logits = hidden @ weight.T against targets, a block of rows at a time, so the
    (N, V) logits never exist at once. Each block's gradients are computed in the forward pass, while its
    logits are at hand, and kept (N x C and V x C, the size of the inputs); the backward pass only scales
    them by the incoming gradient, in place, so it can run once (no retain_graph)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, grad_enabled):  # hidden (N, C), weight (V, C), targets (N,) all scored
        rows = max(1, LOSS_BLOCK_ELEMENTS // weight.shape[0])
        # needs_input_grad says True under torch.no_grad() too: an evaluation would pay for gradients unasked.
        grad_hidden = torch.empty_like(hidden) if grad_enabled and ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros_like(weight) if grad_enabled and ctx.needs_input_grad[1] else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], rows):
            h, t = hidden[start : start + rows], targets[start : start + rows]
            logits = F.linear(h, weight).float()  # (n, V), in fp32 as causal_lm_loss; turned into the gradient in place
            target_logits = logits.gather(1, t[:, None])
            peak = logits.amax(dim=-1, keepdim=True)
            exps = logits.sub_(peak).exp_()
            sums = exps.sum(dim=-1, keepdim=True)
            loss += (sums.log() + peak - target_logits).sum()  # -log softmax at the target
            if grad_hidden is None and grad_weight is None:
                continue
            grad = exps.div_(sums)  # softmax, minus one at the target: d(loss) / d(logits)
            grad[torch.arange(len(t), device=t.device), t] -= 1
            grad = grad.to(weight.dtype)
            if grad_hidden is not None:
                torch.mm(grad, weight, out=grad_hidden[start : start + rows])
            if grad_weight is not None:
                grad_weight.addmm_(grad.T, h)
        ctx.grads = (grad_hidden, grad_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        if ctx.grads is None:
            raise RuntimeError("linear_cross_entropy's gradients were handed out by an earlier backward pass; "
                               "it cannot run backward twice (retain_graph)")
        grads, ctx.grads = ctx.grads, None
        return *(None if g is None else g.mul_(grad_loss) for g in grads), None, None


def linear_cross_entropy(hidden, weight, labels, ignore_index: int = -100, num_items_in_batch=None):
    """causal_lm_loss(F.linear(hidden, weight), labels) (mean, or sum / num_items_in_batch) without the
    logits (B, T, V): hidden (B, T, C) goes through LinearCrossEntropy a block of rows at a time, and only
    the rows whose next label is scored are computed at all (a prompt masked with -100 costs nothing here).
    On an accelerator, picking those rows costs one host sync."""
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the input's {tuple(hidden.shape[:-1])}")
    targets = F.pad(labels, (0, 1), value=ignore_index)[..., 1:].flatten().to(hidden.device)
    scored = (targets != ignore_index).nonzero().squeeze(1)
    device = hidden.device.type
    if torch.is_autocast_enabled(device):  # F.linear's inputs as autocast would cast them, their gradients cast back
        dtype = torch.get_autocast_dtype(device)
        hidden, weight = hidden.to(dtype), weight.to(dtype)
    with torch.autocast(device, enabled=False):
        loss = LinearCrossEntropy.apply(hidden.flatten(0, -2).index_select(0, scored), weight, targets[scored],
                                        torch.is_grad_enabled())
    return loss / torch.as_tensor(len(scored) if num_items_in_batch is None else num_items_in_batch, device=loss.device)


def causal_lm_head(lm_head: nn.Module, hidden, labels=None, logits_to_keep=0, num_items_in_batch=None,
                   skip_logits: bool = False, softcap: float | None = None):
    """(loss or None, logits or None) of a causal LM's head over the last hidden states (B, T, C).

    skip_logits=True (it needs labels) returns the loss without logits, from linear_cross_entropy: no
    (B, T, V) logits, log-probabilities or gradients of them are held (SmolLM2-135M at 4 x 256 tokens: 201 MB
    each, the largest tensors of its training step). A head that is not a plain bias-free linear layer (one
    wrapped by an adapter), or logits soft-capped to (-softcap, softcap) by softcap * tanh(logits / softcap)
    (Gemma), computes its logits as usual, the loss over them, and drops them.
    """
    if skip_logits and labels is None:
        raise ValueError("skip_logits=True returns only the loss, so it needs labels")
    if skip_logits and softcap is None and isinstance(lm_head, nn.Linear) and lm_head.bias is None:
        drop_decode_copies(lm_head)
        return linear_cross_entropy(hidden, lm_head.weight, labels, num_items_in_batch=num_items_in_batch), None
    logits = lm_head(keep_last(hidden, logits_to_keep))  # (B, T, V)
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    loss = None if labels is None else causal_lm_loss(logits, labels, num_items_in_batch=num_items_in_batch)
    return loss, None if skip_logits else logits
