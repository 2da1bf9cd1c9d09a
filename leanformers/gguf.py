"""Everything GGUF: metadata, architecture -> config dict, tensor names, dequantization and its cache.

A GGUF file (llama.cpp's format) holds a model's hyper-parameters and tokenizer as metadata and its
weights, usually quantized, as tensors named `blk.N.attn_q.weight`. This module turns the metadata into
a Hugging Face config.json dict and the tensors into a state dict with Hugging Face names (q/k rows
un-permuted), dequantized by gguf_quants.py and cached as safetensors keyed by the file's content.
Adding an architecture or a quantization type touches this file, and the tokenizer builder
(tokenization/from_gguf.py), only. Parsing is done by the `gguf` package; nothing in the file is executed.
"""

import functools
import hashlib
import json
import os
import re
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from .files import leanformers_cache_dir, write_atomic
from .gguf_quants import dequantize
from .weights import read_safetensors, save_safetensors

GGUF_LAYER_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q_norm": "self_attn.q_norm",  # Qwen3, Gemma 3
    "attn_k_norm": "self_attn.k_norm",
}
# Gemma 3 normalises before and after both the attention and the MLP; its ffn_norm is the one before the MLP.
GEMMA3_LAYER_NAMES = {**GGUF_LAYER_NAMES, "ffn_norm": "pre_feedforward_layernorm",
                      "post_attention_norm": "post_attention_layernorm", "post_ffw_norm": "post_feedforward_layernorm"}
GGUF_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# GGUF architecture -> the transformers class its config names. Only llama.cpp's Llama converter permutes
# the q/k rows; Qwen's and Gemma's are stored as they are.
GGUF_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
                      "gemma3": "Gemma3ForCausalLM"}
GGUF_MODEL_TYPES = {"gemma3": "gemma3_text"}  # a gemma3 file holds only the text model
SUPPORTED_GGUF_ARCHITECTURES = tuple(GGUF_ARCHITECTURES)


def gguf_reader(path):
    """The gguf package's reader of a file, for its metadata (read once per file: gguf_metadata caches it)."""
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as err:
        raise OSError(f"{path} is not a readable GGUF file ({err})") from None


# GGUF metadata value types -> bytes per value; 8 is a string (u64 length + bytes), 9 an array (u32 element
# type, u64 count, the elements).
GGUF_SCALAR_BYTES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
GGUF_STRING, GGUF_ARRAY = 8, 9
GGUF_ELEMENT_TYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "I8": np.int8, "I16": np.int16,
                      "I32": np.int32, "I64": np.int64}  # the other types' tensors are read as bytes


class GGUFTensor(NamedTuple):
    name: str
    type_name: str  # GGML type: F32, Q4_1, ...
    data: np.ndarray  # as the gguf package gives it: (rows..., columns) floats, or (rows..., bytes per row) uint8


def gguf_tensors(path) -> list[GGUFTensor]:
    """A GGUF file's tensors, their data read in place: a copy-on-write memory map of the file, so a weight
    kept as its blocks costs no copy, and nothing is read until it is used. Only the header is walked; the
    gguf package's reader also turns every metadata entry into arrays (157 MB kept for SmolLM2's 49k-token
    vocabulary; seconds for Gemma 3's 262k)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quant_shape_to_byte_shape

    try:
        data = np.memmap(path, mode="c")
        buffer = memoryview(data)
        magic, _version, n_tensors, n_fields = struct.unpack_from("<4sIQQ", buffer, 0)
        if magic != b"GGUF":
            raise ValueError("no GGUF magic number")
        offset, alignment = 24, 32

        def string(at):
            (length,) = struct.unpack_from("<Q", buffer, at)
            return bytes(buffer[at + 8 : at + 8 + length]).decode("utf-8"), at + 8 + length

        def skip_value(kind, at):
            if kind == GGUF_STRING:
                return string(at)[1]
            if kind != GGUF_ARRAY:
                return at + GGUF_SCALAR_BYTES[kind]
            element_kind, count = struct.unpack_from("<IQ", buffer, at)
            at += 12
            if element_kind in GGUF_SCALAR_BYTES:
                return at + count * GGUF_SCALAR_BYTES[element_kind]
            for _ in range(count):
                at = skip_value(element_kind, at)
            return at

        for _ in range(n_fields):
            key, offset = string(offset)
            (kind,) = struct.unpack_from("<I", buffer, offset)
            if key == "general.alignment":
                (alignment,) = struct.unpack_from("<I", buffer, offset + 4)
            offset = skip_value(kind, offset + 4)
        infos = []
        for _ in range(n_tensors):
            name, offset = string(offset)
            (n_dims,) = struct.unpack_from("<I", buffer, offset)
            dims = struct.unpack_from(f"<{n_dims}Q", buffer, offset + 4)
            kind, start = struct.unpack_from("<IQ", buffer, offset + 4 + 8 * n_dims)
            infos.append((name, dims, GGMLQuantizationType(kind), start))
            offset += 4 + 8 * n_dims + 12
        data_start = -(-offset // alignment) * alignment
        tensors = []
        for name, dims, kind, start in infos:
            shape = tuple(reversed(dims))  # GGUF lists the fastest-moving dimension first
            element = GGUF_ELEMENT_TYPES.get(kind.name)
            at = data_start + start
            if element is None:  # quantized (or bf16): bytes, a row's blocks per row
                shape = quant_shape_to_byte_shape(shape, kind)
                element = np.uint8
            count = int(np.prod(shape))
            array = data[at : at + count * np.dtype(element).itemsize].view(element).reshape(shape)
            tensors.append(GGUFTensor(name, kind.name, array))
        return tensors
    except (ValueError, struct.error, KeyError, UnicodeDecodeError) as err:
        raise OSError(f"{path} is not a readable GGUF file ({err})") from None


def gguf_fields(reader) -> dict:
    """GGUF metadata as plain Python values (strings, numbers, lists)."""
    fields = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        try:
            fields[key] = field.contents()
        except Exception:
            continue
    return fields


def gguf_architecture(path, fields) -> str:
    arch = fields.get("general.architecture")
    if arch not in SUPPORTED_GGUF_ARCHITECTURES:
        raise ValueError(
            f"{path}: GGUF architecture {arch!r} is not supported; leanformers reads "
            f"{', '.join(SUPPORTED_GGUF_ARCHITECTURES)} GGUF files"
        )
    return arch


def gguf_metadata(path) -> dict:
    """The GGUF file's metadata key/values (tokenizer.ggml.*, general.*, llama.*), plus the
    tensor names under "gguf.tensor_names". Parsing the tokenizer arrays takes the gguf
    package seconds, so the result is cached as JSON keyed by the file's content."""
    cache_file = gguf_cache_path(path, "metadata.json")
    if cache_file.is_file():
        try:
            return json.loads(cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache_file.unlink(missing_ok=True)
    reader = gguf_reader(path)
    fields = gguf_fields(reader)
    fields["gguf.tensor_names"] = [t.name for t in reader.tensors]
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_file, json.dumps(fields).encode())
    except OSError:
        pass  # a read-only cache only costs speed
    return fields


def gguf_config_dict(path) -> dict:
    """A config.json dict (Llama, Qwen2 or Qwen3) built from a GGUF file's metadata."""
    fields = gguf_metadata(path)
    arch = gguf_architecture(path, fields)

    def get(key, default=None):
        return fields.get(f"{arch}.{key}", default)

    n_heads = get("attention.head_count")
    hidden = get("embedding_length")
    tensor_names = set(fields["gguf.tensor_names"])
    tokens = fields.get("tokenizer.ggml.tokens")
    config = {
        "model_type": GGUF_MODEL_TYPES.get(arch, arch),
        "architectures": [GGUF_ARCHITECTURES[arch]],
        "vocab_size": get("vocab_size") or (len(tokens) if tokens else None),
        "hidden_size": hidden,
        "intermediate_size": get("feed_forward_length"),
        "num_hidden_layers": get("block_count"),
        "num_attention_heads": n_heads,
        "num_key_value_heads": get("attention.head_count_kv", n_heads),
        "head_dim": get("attention.key_length", get("rope.dimension_count", hidden // n_heads)),
        "max_position_embeddings": get("context_length", 2048),
        "rms_norm_eps": get("attention.layer_norm_rms_epsilon", 1e-6),
        "rope_theta": get("rope.freq_base", 10000.0),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "bos_token_id": fields.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": fields.get("tokenizer.ggml.eos_token_id"),
        "pad_token_id": fields.get("tokenizer.ggml.padding_token_id"),
    }
    if arch != "qwen2":  # Qwen2 always has q/k/v biases and never an output one
        config["attention_bias"] = "blk.0.attn_q.bias" in tensor_names
    if arch == "gemma3":
        config.update(gemma3_config_entries(config, get))
    scaling_type = get("rope.scaling.type")
    if scaling_type in ("linear", "yarn"):
        config["rope_scaling"] = {"rope_type": scaling_type, "factor": get("rope.scaling.factor")}
    missing = [k for k, v in config.items() if v is None and k.endswith(("size", "layers", "heads"))]
    if missing:
        raise ValueError(f"{path}: GGUF metadata lacks {arch}.* values for {', '.join(missing)}")
    return config


def gemma3_config_entries(config: dict, get) -> dict:
    """What a gemma3 file's metadata says beyond the common keys, and what llama.cpp assumes where it says
    nothing: every sixth layer global, the others sliding; scores scaled by 1/sqrt(head_dim), except for the
    62-layer (27B) model, scaled by 1/sqrt(hidden_size / heads)."""
    n_layers = config["num_hidden_layers"]
    return {
        "sliding_window": get("attention.sliding_window", 4096),
        "sliding_window_pattern": 6,
        "query_pre_attn_scalar": (config["hidden_size"] // config["num_attention_heads"] if n_layers == 62
                                  else config["head_dim"]),
        "final_logit_softcapping": get("final_logit_softcapping"),
        "attn_logit_softcapping": get("attn_logit_softcapping"),
    }


def gguf_to_hf_name(name: str, arch: str = "llama") -> str | None:
    match = re.fullmatch(r"blk\.(\d+)\.(\w+)\.(weight|bias)", name)
    if match:
        layer, part, kind = match.groups()
        hf = (GEMMA3_LAYER_NAMES if arch == "gemma3" else GGUF_LAYER_NAMES).get(part)
        return f"model.layers.{layer}.{hf}.{kind}" if hf else None
    base, _, kind = name.rpartition(".")
    hf = GGUF_TOP_NAMES.get(base)
    return f"{hf}.{kind}" if hf else None


def unpermute_rows(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row order (halves interleaved per head) back to rotate_half order."""
    rows = weight.shape[0]
    return weight.reshape(n_heads, rows // n_heads // 2, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def dequantize_gguf(path) -> dict:
    return read_gguf_tensors(path)[0]


def read_gguf_tensors(path, keep_types=()) -> tuple[dict, dict]:
    """A GGUF file's tensors under Hugging Face names: (state dict of float32 tensors, {name: (blocks,
    type name)}). A 2-D weight whose type is in keep_types stays as its blocks, (rows, bytes per row)
    uint8, rows in Hugging Face order; every other tensor is dequantized."""
    fields = gguf_metadata(path)  # cached: the reader's own field parsing takes seconds
    arch = gguf_architecture(path, fields)
    n_heads = fields[f"{arch}.attention.head_count"]
    n_kv_heads = fields.get(f"{arch}.attention.head_count_kv", n_heads)
    state_dict, quantized = {}, {}
    for tensor in gguf_tensors(path):
        name = gguf_to_hf_name(tensor.name, arch)
        if name is None:
            continue  # e.g. rope_freqs: derived from the config here
        type_name = tensor.type_name
        keep = type_name in keep_types and name.endswith(".weight") and tensor.data.ndim == 2
        try:  # kept blocks stay in the file's memory map (copy-on-write: torch may write to them)
            weight = torch.from_numpy(tensor.data) if keep else dequantize(tensor.data, type_name)
        except ValueError as err:
            raise ValueError(f"{path}: tensor {tensor.name}: {err}") from None
        if arch == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            weight = unpermute_rows(weight, n_heads)
        elif arch == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            weight = unpermute_rows(weight, n_kv_heads)
        elif arch == "gemma3" and name.endswith("norm.weight"):
            weight = weight - 1  # llama.cpp stores Gemma's zero-centred norm weights plus one
        if keep:
            quantized[name] = (weight.contiguous(), type_name)
        else:
            state_dict[name] = weight.contiguous()
    return state_dict, quantized


def file_digest(path, chunk=1 << 24) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


GGUF_CACHE_VERSION = "1"


@functools.lru_cache(maxsize=16)
def cached_file_digest(path: str, size: int, mtime_ns: int) -> str:
    return file_digest(path)


def gguf_cache_path(path, suffix: str) -> Path:
    """Where a conversion of this GGUF file is cached; the name changes whenever the file's bytes do."""
    stat = os.stat(path)
    digest = cached_file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    key = hashlib.sha256(f"{GGUF_CACHE_VERSION}:{digest}".encode()).hexdigest()[:32]
    return leanformers_cache_dir() / "gguf" / f"{Path(path).stem}-{key}.{suffix}"


def load_gguf_state_dict(path, dtype=torch.float32) -> dict:
    """Weights of a GGUF file dequantized to `dtype`, cached as safetensors keyed by the file's content
    and the dtype. A cache per dtype is memory-mapped as it is: converting fp32 weights at load time
    would hold both copies in memory until the load ends."""
    cache_file = gguf_cache_path(path, "safetensors" if dtype == torch.float32 else
                                 f"{str(dtype).removeprefix('torch.')}.safetensors")
    if cache_file.is_file():
        try:
            return read_safetensors(cache_file)
        except OSError:
            cache_file.unlink(missing_ok=True)  # a damaged cache entry is rebuilt
    state_dict = {name: tensor.to(dtype) for name, tensor in dequantize_gguf(path).items()}
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(state_dict, cache_file, metadata={"source": path.name})
    except OSError:
        pass  # a read-only cache only costs speed
    return state_dict
