"""Layers whose weights stay in GGUF's quantized blocks, and the functions that put them into a model.

A QuantizedLinear holds its weight (out_features, in_features) as `qweight`, the file's blocks for each
row: (out_features, bytes per row) uint8, 4-8x smaller than fp32. A decode step (at most 16 rows of
input) runs the native dequantize-and-dot kernel over the blocks (kernels/); more rows (a prefill) and
the eager path dequantize the weight a tile of rows at a time into a plain matmul, so the whole model is
never held in fp32. A QuantizedEmbedding dequantizes only the rows it looks up; a tied output layer shares
its blocks.
"""

import numpy as np
import torch
from torch import nn

from ..kernels import KERNEL_TYPES, dequantize_rows, quantized_matvec

TILE_ROWS = 1024  # weight rows dequantized at once for a matmul over many tokens (4 MB at 1,024 columns)
QUANTIZE_TYPES = ("Q8_0", "Q4_0")  # what quantize() writes, with the gguf package's reference quantizer


def blocks_shape(type_name: str, rows: int, columns: int) -> tuple[int, int]:
    if type_name not in KERNEL_TYPES:
        raise ValueError(f"no quantized kernel for GGUF type {type_name}; kept quantized: {', '.join(KERNEL_TYPES)}")
    _, weights_per_block, block_bytes = KERNEL_TYPES[type_name]
    if columns % weights_per_block:
        raise ValueError(f"{type_name} rows hold blocks of {weights_per_block} weights; {columns} columns do not split")
    return rows, columns // weights_per_block * block_bytes


class QuantizedLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, type_name: str, bias: bool = False):
        super().__init__()
        self.in_features, self.out_features, self.type_name = in_features, out_features, type_name
        self.register_buffer("qweight", torch.empty(blocks_shape(type_name, out_features, in_features), dtype=torch.uint8))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, type={self.type_name}"

    def dequantized_weight(self, start: int = 0, stop: int | None = None) -> torch.Tensor:
        return dequantize_rows(self.qweight, self.type_name, self.in_features, start=start, stop=stop)

    def forward(self, x):  # x (..., in_features)
        flat = x.reshape(-1, self.in_features)
        y = None
        if x.dtype == torch.float32 and x.is_cpu and not (torch.is_grad_enabled() and x.requires_grad):
            y = quantized_matvec(self.qweight, self.type_name, flat)
        if y is None:  # gradients flow to x through the plain matmuls
            y = torch.cat([flat @ self.dequantized_weight(start, start + TILE_ROWS).to(x.dtype).T
                           for start in range(0, self.out_features, TILE_ROWS)], dim=-1)
        if self.bias is not None:
            y = y + self.bias
        return y.view(*x.shape[:-1], self.out_features)


class QuantizedEmbedding(nn.Module):
    """Token embeddings from blocks; embed_scale multiplies them (Gemma's sqrt(hidden_size), in fp32)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, type_name: str, padding_idx=None,
                 embed_scale: float = 1.0, plain_class=nn.Embedding):
        super().__init__()
        self.plain_class = plain_class  # what dequantize_model puts back (Gemma's scaled embedding)
        self.num_embeddings, self.embedding_dim, self.type_name = num_embeddings, embedding_dim, type_name
        self.padding_idx, self.embed_scale = padding_idx, embed_scale
        self.register_buffer("qweight", torch.empty(blocks_shape(type_name, num_embeddings, embedding_dim),
                                                    dtype=torch.uint8))

    def extra_repr(self):
        return f"{self.num_embeddings}, {self.embedding_dim}, type={self.type_name}"

    def forward(self, input_ids):  # ids outside the table raise IndexError in dequantize_rows, as nn.Embedding does
        rows = dequantize_rows(self.qweight, self.type_name, self.embedding_dim, rows=input_ids)
        rows = rows.view(*input_ids.shape, self.embedding_dim)
        return rows * self.embed_scale if self.embed_scale != 1.0 else rows


def replace_module(model: nn.Module, name: str, module: nn.Module):
    parent_name, _, child = name.rpartition(".")
    model.get_submodule(parent_name)._modules[child] = module


def quantized_twin(module: nn.Module, type_name: str) -> nn.Module:
    if isinstance(module, nn.Embedding):
        # Gemma's scaled embedding multiplies by its factor rounded to fp32, the dtype of these rows
        scale = float(np.float32(getattr(module, "embed_scale", 1.0)))
        return QuantizedEmbedding(module.num_embeddings, module.embedding_dim, type_name, module.padding_idx, scale,
                                  type(module))
    if isinstance(module, nn.Linear):
        return QuantizedLinear(module.in_features, module.out_features, type_name, bias=module.bias is not None)
    raise ValueError(f"a {type(module).__name__} cannot hold quantized blocks")


def use_quantized_weights(model, quantized: dict, state_dict: dict):
    """In a model built on meta: each layer whose weight `quantized` holds ({name: (blocks, type name)})
    becomes its quantized twin, and the blocks go into state_dict as <layer>.qweight. An output layer
    tied to quantized input embeddings shares their blocks."""
    modules = dict(model.named_modules())
    with torch.device("meta"):
        for name, (blocks, type_name) in quantized.items():
            layer = name.removesuffix(".weight")
            if layer not in modules:
                raise ValueError(f"the GGUF file has a weight {name} that {type(model).__name__} does not expect")
            replace_module(model, layer, quantized_twin(modules[layer], type_name))
            state_dict[f"{layer}.qweight"] = blocks
        embedding, output = model.get_input_embeddings(), model.get_output_embeddings()
        if getattr(model.config, "tie_word_embeddings", False) and isinstance(embedding, QuantizedEmbedding) \
                and isinstance(output, nn.Linear):
            names = {module: name for name, module in model.named_modules()}
            replace_module(model, names[output], quantized_twin(output, embedding.type_name))
            state_dict[f"{names[output]}.qweight"] = state_dict[f"{names[embedding]}.qweight"]


def quantize(model, type_name: str = "Q8_0"):
    """Quantize the linear layers of a loaded fp32 model in place to Q8_0 or Q4_0 blocks (the gguf package's
    reference quantizer), except an output layer tied to the input embeddings. Returns the model."""
    import gguf

    type_name = type_name.upper()
    if type_name not in QUANTIZE_TYPES:
        raise ValueError(f"quantize() writes {' or '.join(QUANTIZE_TYPES)}, not {type_name!r}")
    tied = model.get_output_embeddings() if getattr(model.config, "tie_word_embeddings", False) else None
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear) or module is tied or module.in_features % KERNEL_TYPES[type_name][1]:
            continue
        weight = module.weight.detach().float().cpu().numpy()
        blocks = gguf.quants.quantize(weight, gguf.GGMLQuantizationType[type_name])
        twin = QuantizedLinear(module.in_features, module.out_features, type_name, bias=module.bias is not None)
        twin.qweight = torch.from_numpy(np.ascontiguousarray(blocks))
        if module.bias is not None:
            twin.bias = nn.Parameter(module.bias.detach().float().clone())
        replace_module(model, name, twin)
    return model


def dequantize_model(model):
    """Replace every quantized layer by a plain one holding its fp32 weights (what save_pretrained needs)."""
    from .layers import Linear

    for name, module in list(model.named_modules()):
        if isinstance(module, QuantizedLinear):
            plain = Linear(module.in_features, module.out_features, bias=module.bias is not None)
            plain.weight = nn.Parameter(module.dequantized_weight())
            if module.bias is not None:
                plain.bias = module.bias
        elif isinstance(module, QuantizedEmbedding):
            plain = module.plain_class(module.num_embeddings, module.embedding_dim, module.padding_idx)
            plain.weight = nn.Parameter(dequantize_rows(module.qweight, module.type_name, module.embedding_dim))
        else:
            continue
        replace_module(model, name, plain)
    model.tie_weights()
    return model


def is_quantized(model) -> bool:
    return any(isinstance(m, (QuantizedLinear, QuantizedEmbedding)) for m in model.modules())
