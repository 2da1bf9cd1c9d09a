"""Native CPU kernels, compiled on first use, and the eager PyTorch twin of each.

quant.c holds matrix-vector products over GGUF quantized blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K, Q6_K)
and the dequantization of chosen rows; matvec.c the matrix-vector products over dense fp32 and bf16 weights
that decode steps run; decoder.c a whole decode step through Llama-shaped layers on those products
(models/native_decode.py describes the layers to it). All are compiled with the system C compiler (`cc`, or
$CC) into one library in the leanformers cache, under a name keyed by the sources, the compiler and this
CPU's flags, with -march=native:
the compiler picks AVX2, AVX-512 or plain C for the machine it runs on (a build that fails with it is
retried without). Bound through ctypes; OpenMP threads come from the libgomp torch has already loaded, so
the kernels and torch share one thread pool. Without a compiler, or with LEANFORMERS_KERNELS=0, the eager
twins run: the same blocks dequantized by gguf_quants.py and multiplied by torch; dense weights through
torch's own matmul (models/layers.py chooses).
"""

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path

import torch

from ..files import leanformers_cache_dir
from ..gguf_quants import BLOCK_DEQUANTIZERS

logger = logging.getLogger(__name__)

# GGUF type -> (ggml's type number, weights per block, bytes per block)
KERNEL_TYPES = {"Q8_0": (8, 32, 34), "Q4_0": (2, 32, 18), "Q4_1": (3, 32, 20), "Q5_0": (6, 32, 22),
                "Q4_K": (12, 256, 144), "Q5_K": (13, 256, 176), "Q6_K": (14, 256, 210)}
DENSE_TYPES = {torch.float32: 0, torch.bfloat16: 1}  # the weight dtypes matvec.c reads, by its number for each
MAX_MATVEC_ROWS = 16  # input rows per call: quant.c keeps one accumulator per row, matvec.c's MAX_BATCH
MAX_DENSE_WEIGHTS = 8  # weights one dense_matvec call reads: matvec.c's MAX_WEIGHTS
SOURCES = [Path(__file__).with_name(name) for name in ("quant.c", "matvec.c", "decoder.c")]
FP32_ROWS, BF16_ROWS = -1, -2  # a DecoderWeight's kind for dense rows (else ggml's type number of its blocks)


class DecoderWeight(ctypes.Structure):  # decoder.c's lf_weight
    _fields_ = [("kind", ctypes.c_int64), ("data", ctypes.c_void_p), ("bias", ctypes.c_void_p),
                ("rows", ctypes.c_int64), ("cols", ctypes.c_int64)]


class DecoderLayer(ctypes.Structure):  # lf_layer
    _fields_ = [(name, DecoderWeight) for name in ("q", "k", "v", "o", "gate", "up", "down")] + [
        (name, ctypes.c_void_p) for name in ("input_norm", "post_norm", "q_norm", "k_norm")] + [
        ("window", ctypes.c_int64)]


class Decoder(ctypes.Structure):  # lf_decoder
    _fields_ = [(name, ctypes.c_int64) for name in ("layers", "hidden", "heads", "kv_heads", "head_dim",
                                                      "intermediate", "bf16")] + [
        ("eps", ctypes.c_float), ("scale", ctypes.c_float), ("layer", ctypes.POINTER(DecoderLayer))]


def cpu_flags() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("flags"):
                return line.partition(":")[2].strip()
    return ""


def compile_library(compiler: str, target: Path, flags: list) -> bool:
    """The SOURCES built with `flags` (e.g. ["-march=native"]) into one library, target; False when the
    compiler refuses."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    result = subprocess.run([compiler, "-O3", "-fopenmp", "-ffp-contract=off", "-shared", "-fPIC", *flags,
                             *map(str, SOURCES), "-o", str(partial)], capture_output=True, text=True)
    if result.returncode != 0:
        logger.warning("leanformers: compiling %s with %s failed: %s", " and ".join(s.name for s in SOURCES),
                       flags or "no flags", result.stderr.strip()[-500:])
        return False
    os.replace(partial, target)
    return True


def bind(path: Path):
    library = ctypes.CDLL(str(path))
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    library.lf_quantized_matvec.argtypes = [ctypes.c_int, pointer, size, size, pointer, size, pointer, ctypes.c_int]
    library.lf_dequantize_rows.argtypes = [ctypes.c_int, pointer, size, pointer, size, pointer, ctypes.c_int]
    library.lf_dense_matvec.argtypes = [ctypes.c_int, size, pointer, pointer, pointer, size, pointer, size, pointer,
                                        ctypes.c_int]
    library.lf_decode_step.argtypes = [ctypes.POINTER(Decoder), pointer, size, pointer, pointer, size, size, size,
                                       pointer, pointer, pointer, ctypes.c_int]
    return library


@functools.lru_cache(maxsize=1)
def native_library():
    """The compiled kernels (ctypes), or None: LEANFORMERS_KERNELS=0, no compiler, or a failed build. Built
    for this CPU (-march=native: AVX-512, AVX2 or plain C as it has them), else with no flags at all."""
    if os.environ.get("LEANFORMERS_KERNELS", "1") == "0":
        return None
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True).stdout
    sources = b"".join(source.read_bytes() for source in SOURCES)
    key = hashlib.sha256(sources + version.encode() + cpu_flags().encode()).hexdigest()[:16]
    target = leanformers_cache_dir() / "kernels" / f"kernels-{key}.so"
    if not target.is_file() and not any(compile_library(compiler, target, flags) for flags in (["-march=native"], [])):
        return None
    return bind(target)


def kernels_available() -> bool:
    return native_library() is not None


def quantized_matvec(blocks: torch.Tensor, type_name: str, x: torch.Tensor, library=None):
    """x (B, K) fp32 @ W.T for W (N, K) held as blocks (N, bytes per row) uint8: (B, N) fp32, or None where
    the native kernel cannot run (no library, a type without a kernel, B over MAX_MATVEC_ROWS). `library`:
    another build of the kernels than this machine's (tests run each instruction set the CPU has)."""
    library = library or native_library()
    if library is None or type_name not in KERNEL_TYPES or not 1 <= x.shape[0] <= MAX_MATVEC_ROWS:
        return None
    x = x.contiguous()
    y = torch.empty(x.shape[0], blocks.shape[0], dtype=torch.float32)
    library.lf_quantized_matvec(KERNEL_TYPES[type_name][0], blocks.data_ptr(), blocks.shape[0], x.shape[1],
                                x.data_ptr(), x.shape[0], y.data_ptr(), torch.get_num_threads())
    return y


def dequantize_rows(blocks: torch.Tensor, type_name: str, in_features: int, rows: torch.Tensor | None = None,
                    start: int = 0, stop: int | None = None) -> torch.Tensor:
    """Rows of W (given ids, or start:stop) from its blocks, as (count, in_features) fp32: natively when the
    kernels are built, else by gguf_quants' torch functions (the eager twin; the same floats)."""
    library = native_library()
    if rows is None:
        rows = torch.arange(start, blocks.shape[0] if stop is None else min(stop, blocks.shape[0]))
    rows = rows.reshape(-1).long()
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= blocks.shape[0]):
        raise IndexError(f"rows outside the weight's {blocks.shape[0]}")  # the native loop would read past it
    if library is not None and type_name in KERNEL_TYPES:
        rows = rows.contiguous()
        out = torch.empty(rows.shape[0], in_features, dtype=torch.float32)
        library.lf_dequantize_rows(KERNEL_TYPES[type_name][0], blocks.data_ptr(), in_features, rows.data_ptr(),
                                   rows.shape[0], out.data_ptr(), torch.get_num_threads())
        return out
    block_bytes = KERNEL_TYPES[type_name][2]
    picked = blocks.index_select(0, rows).reshape(-1, block_bytes)
    return BLOCK_DEQUANTIZERS[type_name](picked).reshape(rows.shape[0], in_features)


def dense_matvec(weights: list, biases: list, x: torch.Tensor, library=None):
    """x (B, K) @ W.T (+ bias) for each weight W (N, K) in `weights`, its bias (N,) or None at the same place in
    `biases`, in one native call that reads each weight once: a list of (B, N) in x's dtype (views into one
    (B, sum of N) tensor), or None where the kernel cannot run (no library, B outside 1..MAX_MATVEC_ROWS, more
    than MAX_DENSE_WEIGHTS weights, a dtype not in DENSE_TYPES or unlike x's, a tensor not contiguous or not on
    the CPU). Shapes that do not fit together raise ValueError. `library`: as for quantized_matvec."""
    count = len(weights)
    if len(biases) != count:
        raise ValueError(f"{count} weights but {len(biases)} biases (None for a layer without one)")
    library = library or native_library()
    dtype = x.dtype
    if (library is None or dtype not in DENSE_TYPES or x.dim() != 2 or not x.is_cpu
            or not 1 <= count <= MAX_DENSE_WEIGHTS):
        return None
    batch, in_features = x.shape
    if not 1 <= batch <= MAX_MATVEC_ROWS or in_features == 0:
        return None
    rows = []
    for w, b in zip(weights, biases):
        if w.dtype != dtype or not w.is_cpu or not w.is_contiguous() or (
                b is not None and (b.dtype != dtype or not b.is_cpu or not b.is_contiguous())):
            return None
        if w.dim() != 2 or w.shape[1] != in_features:
            raise ValueError(f"a weight of shape {tuple(w.shape)} cannot multiply inputs of {in_features} features")
        if b is not None and b.shape != w.shape[:1]:
            raise ValueError(f"a bias of shape {tuple(b.shape)} does not fit a weight of {w.shape[0]} rows")
        rows.append(w.shape[0])
    x = x.contiguous()
    y = torch.empty(batch, sum(rows), dtype=dtype)
    pointers = ctypes.c_void_p * count
    status = library.lf_dense_matvec(
        DENSE_TYPES[dtype], count, pointers(*[w.data_ptr() for w in weights]),
        pointers(*[None if b is None else b.data_ptr() for b in biases]), (ctypes.c_int64 * count)(*rows),
        in_features, x.data_ptr(), batch, y.data_ptr(), torch.get_num_threads())
    if status != 0:
        raise RuntimeError("matvec.c refused arguments dense_matvec checked")  # the two disagree: a bug here
    return list(y.split(rows, dim=1)) if count > 1 else [y]


def decode_step(decoder: Decoder, x: torch.Tensor, keys, values, batch_stride: int, head_stride: int, past: int,
                cos: torch.Tensor, signed_sin: torch.Tensor, keep: torch.Tensor | None) -> None:
    """decoder.c's step through every layer `decoder` describes: x (B, hidden) fp32 (a bf16 model's values
    widened), the new tokens' embeddings, becomes the last layer's output, in place. keys[i] and values[i]:
    pointers to layer i's cache buffers (B, kv_heads, capacity, head_dim) fp32, their strides batch_stride
    and head_stride, holding `past` positions; the new ones go to position past. cos, signed_sin
    (B, head_dim); keep (B, past + 1) bool or None. The caller (models/native_decode.py) has checked every
    shape, dtype and layout."""
    status = native_library().lf_decode_step(
        ctypes.byref(decoder), x.data_ptr(), x.shape[0], keys, values, batch_stride, head_stride, past,
        cos.data_ptr(), signed_sin.data_ptr(), None if keep is None else keep.data_ptr(), torch.get_num_threads())
    if status != 0:
        raise RuntimeError("decoder.c refused a step native_decode checked")  # the two disagree: a bug here
