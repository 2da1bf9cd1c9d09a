"""GGUF tensor types -> float32 torch tensors: one small function per block family, vectorized over blocks.

ggml stores a quantized row as blocks of bytes; a block holds `block_size` weights in `type_size` bytes
(ggml-common.h). Each function below takes a (n_blocks, type_size) uint8 tensor and returns the
(n_blocks, block_size) float32 weights, computing in the same order as ggml's reference dequantizer
(the `gguf` package's numpy twin of it), so the results agree bit for bit. Sizes and type names come
from the `gguf` package; the IQ (grid-codebook), ternary and FP4 types are left to its numpy code.
"""

import warnings

import numpy as np
import torch

QK_K = 256  # weights in a K-quant super-block


def read_f16(blocks, start):
    """The fp16 field at byte `start` of every block, as (n_blocks, 1) float32."""
    return blocks[:, start:start + 2].contiguous().view(torch.float16).float()


def split_bits(packed, width):
    """Bytes (..., n) -> (..., 8 // width, n): the `width`-bit fields of every byte, lowest first. (One
    shift per field: a broadcast shift over a tensor of shifts is several times slower in torch.)"""
    mask = (1 << width) - 1
    return torch.stack([(packed >> shift) & mask for shift in range(0, 8, width)], dim=-2)


def nibbles(qs):
    """Bytes (..., n) -> (..., 2n) 4-bit values: all low nibbles first, then all high nibbles (ggml's order)."""
    return split_bits(qs, 4).flatten(-2)


def bits(packed, count):
    """Bytes (n_blocks, count // 8) -> (n_blocks, count) single bits, least significant bit first."""
    return split_bits(packed.unsqueeze(-1), 1).reshape(packed.shape[0], count)


def dequantize_f16(blocks):
    # numpy's conversion: about twice torch's speed here, and it keeps signalling NaNs' payloads as
    # ggml does (torch quiets them)
    return torch.from_numpy(blocks.numpy().view(np.float16).astype(np.float32))


def dequantize_bf16(blocks):
    # bf16 is the top half of an fp32: shift the 16 bits up
    return (blocks.contiguous().view(torch.int16).int() << 16).view(torch.float32)


def dequantize_q4_0(blocks):
    # d: fp16 | qs: 16 bytes, 32 nibbles q; x = d * (q - 8)
    q = nibbles(blocks[:, 2:]).to(torch.int8) - 8
    return read_f16(blocks, 0) * q


def dequantize_q4_1(blocks):
    # d: fp16 | m: fp16 | qs: 16 bytes, 32 nibbles q; x = d * q + m
    return read_f16(blocks, 0) * nibbles(blocks[:, 4:]) + read_f16(blocks, 2)


def five_bit(qh, qs):
    """Q5 quants: 4 low bits from the nibbles of qs, the fifth bit of weight j is bit j of qh."""
    return nibbles(qs) | (bits(qh, 32) << 4)


def dequantize_q5_0(blocks):
    # d: fp16 | qh: 4 bytes (32 fifth bits) | qs: 16 bytes of nibbles; x = d * (q - 16)
    q = five_bit(blocks[:, 2:6], blocks[:, 6:]).to(torch.int8) - 16
    return read_f16(blocks, 0) * q


def dequantize_q5_1(blocks):
    # d: fp16 | m: fp16 | qh: 4 bytes | qs: 16 bytes; x = d * q + m
    return read_f16(blocks, 0) * five_bit(blocks[:, 4:8], blocks[:, 8:]) + read_f16(blocks, 2)


def dequantize_q8_0(blocks):
    # d: fp16 | qs: 32 int8; x = q * d
    return blocks[:, 2:].contiguous().view(torch.int8) * read_f16(blocks, 0)


def dequantize_q8_k(blocks):
    # d: fp32 | qs: 256 int8 | bsums: 16 int16 (sums for dot products, unused here); x = q * d
    d = blocks[:, :4].contiguous().view(torch.float32)
    return blocks[:, 4:4 + QK_K].contiguous().view(torch.int8) * d


def crumbs(qs, group):
    """Bytes (n_blocks, k * group) -> 2-bit values: for each run of `group` bytes, bits 0-1 of all of
    them, then bits 2-3, 4-5, 6-7 (ggml's order), as (n_blocks, k, 4, group)."""
    return split_bits(qs.reshape(qs.shape[0], -1, group), 2)


def dequantize_q2_k(blocks):
    # scales: 16 bytes (low nibble scale, high nibble min, per 16 weights) | qs: 64 bytes of 2-bit q
    # | d: fp16 | dmin: fp16; x = d * scale * q - dmin * min
    n = blocks.shape[0]
    scales = blocks[:, :16]
    dl = (read_f16(blocks, 80) * (scales & 0x0F).float()).reshape(n, 16, 1)
    ml = (read_f16(blocks, 82) * (scales >> 4).float()).reshape(n, 16, 1)
    q = crumbs(blocks[:, 16:80], 32).reshape(n, 16, 16)
    return (dl * q - ml).reshape(n, QK_K)


def dequantize_q3_k(blocks):
    # hmask: 32 bytes (third bits) | qs: 64 bytes of 2-bit q | scales: 12 bytes (16 6-bit scales) | d: fp16
    # x = d * (scale - 32) * (q - 4 where the hmask bit is 0)
    n = blocks.shape[0]
    scales = blocks[:, 96:108]
    # 6-bit scales: low 4 bits from the nibbles of bytes 0-7, high 2 bits from the crumbs of bytes 8-11
    low = nibbles(scales[:, :8])
    high = crumbs(scales[:, 8:], 4).reshape(n, 16)
    scale = (low | (high << 4)).to(torch.int8) - 32
    dl = (read_f16(blocks, 108) * scale.float()).reshape(n, 16, 1)
    ql = crumbs(blocks[:, 32:96], 32).reshape(n, 16, 16)
    qh = (split_bits(blocks[:, :32], 1) ^ 1).reshape(n, 16, 16)  # the offset of 4 applies where the bit is 0
    q = ql.to(torch.int8) - (qh << 2).to(torch.int8)
    return (dl * q).reshape(n, QK_K)


def k_scales_and_mins(blocks):
    """Q4_K/Q5_K: 12 bytes -> 8 6-bit scales and 8 6-bit mins. Bytes 0-3 hold scales 0-3 (and the top
    bits of scales 4-7), bytes 4-7 mins 0-3 (and the top bits of mins 4-7), bytes 8-11 the low nibbles
    of scales 4-7 (low half) and mins 4-7 (high half).
    Returns d * scale and dmin * min, (n_blocks, 8, 1) each, d and dmin being the block's first two fp16s."""
    n, scales = blocks.shape[0], blocks[:, 4:16]
    d, m, md = scales[:, 0:4], scales[:, 4:8], scales[:, 8:12]
    sc = torch.cat([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return (read_f16(blocks, 0) * sc.float()).reshape(n, 8, 1), (read_f16(blocks, 2) * mn.float()).reshape(n, 8, 1)


def dequantize_q4_k(blocks):
    # d: fp16 | dmin: fp16 | scales: 12 bytes | qs: 128 bytes, per 32 bytes the nibbles of 64 weights
    # x = d * scale * q - dmin * min, per 32 weights
    n = blocks.shape[0]
    d, dm = k_scales_and_mins(blocks)
    q = nibbles(blocks[:, 16:].reshape(n, 4, 32)).reshape(n, 8, 32)
    return (d * q - dm).reshape(n, QK_K)


def dequantize_q5_k(blocks):
    # d: fp16 | dmin: fp16 | scales: 12 bytes | qh: 32 bytes, bit i of byte j is the fifth bit of
    # weight 32 * i + j | qs: 128 bytes of nibbles as in Q4_K
    n = blocks.shape[0]
    d, dm = k_scales_and_mins(blocks)
    ql = nibbles(blocks[:, 48:].reshape(n, 4, 32)).reshape(n, 8, 32)
    qh = split_bits(blocks[:, 16:48], 1)
    q = ql | (qh << 4)
    return (d * q - dm).reshape(n, QK_K)


def dequantize_q6_k(blocks):
    # ql: 128 bytes (low 4 bits, nibbles per 64 bytes) | qh: 64 bytes (high 2 bits, crumbs per 32 bytes)
    # | scales: 16 int8 | d: fp16; x = d * scale * (q - 32), a scale per 16 weights
    n = blocks.shape[0]
    scales = blocks[:, 192:208].contiguous().view(torch.int8).float()
    d = (read_f16(blocks, 208) * scales).reshape(n, 16, 1)
    ql = nibbles(blocks[:, :128].reshape(n, 2, 64)).reshape(n, 8, 32)
    qh = crumbs(blocks[:, 128:192], 32).reshape(n, 8, 32)
    q = (ql | (qh << 4)).to(torch.int8) - 32
    return (d * q.reshape(n, 16, 16)).reshape(n, QK_K)


BLOCK_DEQUANTIZERS = {
    "F32": lambda blocks: blocks.contiguous().view(torch.float32),
    "F16": dequantize_f16,
    "BF16": dequantize_bf16,
    "Q4_0": dequantize_q4_0,
    "Q4_1": dequantize_q4_1,
    "Q5_0": dequantize_q5_0,
    "Q5_1": dequantize_q5_1,
    "Q8_0": dequantize_q8_0,
    "Q2_K": dequantize_q2_k,
    "Q3_K": dequantize_q3_k,
    "Q4_K": dequantize_q4_k,
    "Q5_K": dequantize_q5_k,
    "Q6_K": dequantize_q6_k,
    "Q8_K": dequantize_q8_k,
}
# Codebook (IQ), ternary (TQ) and FP4 types: the gguf package's numpy dequantizer does the work; so it
# does for Q3_K, where it measured ~1.4x faster than dequantize_q3_k (kept, and tested, beside it).
NUMPY_TYPES = ("Q3_K", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ1_S", "IQ1_M", "IQ4_NL", "IQ4_XS",
               "TQ1_0", "TQ2_0", "MXFP4", "NVFP4")
READABLE_TYPES = tuple(dict.fromkeys([*BLOCK_DEQUANTIZERS, *NUMPY_TYPES]))
WEIGHTS_PER_CHUNK = 1 << 17  # the temporaries of one step stay in the CPU's cache


def dequantize(data: np.ndarray, type_name: str) -> torch.Tensor:
    """A GGUF tensor's bytes (numpy, as the gguf reader gives them, the last axis one row) as float32
    with the tensor's shape. A type leanformers cannot read raises ValueError naming it."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

    if type_name not in READABLE_TYPES:
        raise ValueError(f"GGUF tensor type {type_name} cannot be dequantized; leanformers reads "
                         f"{', '.join(READABLE_TYPES)}")
    qtype = GGMLQuantizationType[type_name]
    if type_name in NUMPY_TYPES:
        return torch.from_numpy(np.array(quants.dequantize(data, qtype), dtype=np.float32, order="C"))
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    raw = np.ascontiguousarray(data).view(np.uint8)
    shape = (*raw.shape[:-1], raw.shape[-1] // type_size * block_size)
    with warnings.catch_warnings():  # a read-only memory map: it is only ever read here
        warnings.simplefilter("ignore", UserWarning)
        blocks = torch.from_numpy(raw).reshape(-1, type_size)
    if block_size == 1:  # plain floats: one conversion, a copy (never a view of the file's memory map)
        out = BLOCK_DEQUANTIZERS[type_name](blocks)
        return (out.clone() if out.data_ptr() == blocks.data_ptr() else out).reshape(shape)
    out = torch.empty(blocks.shape[0], block_size, dtype=torch.float32)
    function, step = BLOCK_DEQUANTIZERS[type_name], max(1, WEIGHTS_PER_CHUNK // block_size)
    threads = torch.get_num_threads()
    # One thread: each op on a chunk is a short parallel region, and on a 2-core machine shared with
    # other work two threads made the whole 2-5x slower (measured on 10 MB tensors).
    torch.set_num_threads(1)
    try:
        for start in range(0, blocks.shape[0], step):
            out[start:start + step] = function(blocks[start:start + step])
    finally:
        torch.set_num_threads(threads)
    return out.reshape(shape)
