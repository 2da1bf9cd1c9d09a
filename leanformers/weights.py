"""State dicts in and out.

Reads safetensors (memory-mapped; single or sharded with an index) and
pytorch_model.bin (single or sharded) only through torch.load(weights_only=True);
writes safetensors atomically. GGUF files are read by gguf.py.
"""

import pickle
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from .files import read_json, write_atomic

SAFE_WEIGHTS_NAME = "model.safetensors"
SAFE_WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
WEIGHTS_NAME = "pytorch_model.bin"
WEIGHTS_INDEX_NAME = "pytorch_model.bin.index.json"


def read_safetensors(path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:
        raise OSError(f"{path} is not a readable safetensors file ({err}); the file may be truncated or corrupt") from None


def read_bin(path) -> dict:
    try:
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state_dict = torch.load(path, map_location="cpu", weights_only=True)  # the pre-zip format
    except pickle.UnpicklingError as err:
        raise OSError(
            f"{path} holds objects other than tensors and was refused (leanformers never runs code from a "
            f"checkpoint; convert it to safetensors with the library that made it): {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:
        raise OSError(f"{path} is not a readable PyTorch weights file ({err})") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise OSError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return state_dict


def read_sharded(index_path, read_one) -> dict:
    index = read_json(index_path)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise ValueError(f"{index_path} has no 'weight_map' object")
    state_dict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = Path(index_path).parent / shard
        if not shard_path.is_file():
            raise FileNotFoundError(f"{index_path} names the shard {shard}, which does not exist")
        state_dict.update(read_one(shard_path))
    missing = sorted(set(weight_map) - set(state_dict))
    if missing:
        raise OSError(f"{index_path} lists weights no shard holds: {', '.join(missing[:5])}")
    return state_dict


def load_state_dict(path) -> dict:
    """All weights of a model folder, as CPU tensors keyed by their names in the checkpoint."""
    path = Path(path)
    for name, reader in (
        (SAFE_WEIGHTS_NAME, read_safetensors),
        (SAFE_WEIGHTS_INDEX_NAME, lambda p: read_sharded(p, read_safetensors)),
        (WEIGHTS_NAME, read_bin),
        (WEIGHTS_INDEX_NAME, lambda p: read_sharded(p, read_bin)),
    ):
        if (path / name).is_file():
            return reader(path / name)
    raise FileNotFoundError(
        f"{path} holds no weights: expected {SAFE_WEIGHTS_NAME}, {SAFE_WEIGHTS_INDEX_NAME}, {WEIGHTS_NAME} "
        f"or {WEIGHTS_INDEX_NAME}"
    )


def save_safetensors(state_dict: dict, path, metadata=None):
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    write_atomic(path, safetensors_bytes(tensors, metadata={"format": "pt", **(metadata or {})}))
