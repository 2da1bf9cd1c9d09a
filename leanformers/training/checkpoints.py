"""Checkpoint folders: output_dir/checkpoint-N/ with the model, optimizer, scheduler, fp16 loss scaler,
RNG states, trainer_state.json and the arguments.

A checkpoint is written into output_dir/tmp-checkpoint-N/, every file flushed to disk, then renamed
into place in one step, so a process killed at any moment leaves either the complete new checkpoint
or none, and the previous one untouched. Everything is read back with torch.load(weights_only=True):
no pickled code runs when a checkpoint is loaded.
"""

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..files import read_json, write_atomic
from ..weights import read_safetensors
from .callbacks import TrainerState
from .lora import ADAPTER_WEIGHTS_NAME, PeftModel

PREFIX = "checkpoint-"
STATE_NAME = "trainer_state.json"
ARGS_NAME = "training_args.json"
OPTIMIZER_NAME = "optimizer.pt"
SCHEDULER_NAME = "scheduler.pt"
SCALER_NAME = "scaler.pt"  # fp16 runs: the loss scale and its growth tracker


def rng_state_name(rank: int, world_size: int) -> str:
    return "rng_state.pth" if world_size == 1 else f"rng_state_{rank}.pth"


def checkpoint_step(path: Path) -> int | None:
    match = re.fullmatch(rf"{PREFIX}(\d+)", path.name)
    return int(match.group(1)) if match and path.is_dir() else None


def sorted_checkpoints(output_dir) -> list[Path]:
    """Complete checkpoints in output_dir, oldest first (a tmp- folder is an interrupted write)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in folder.iterdir()]
    return [p for step, p in sorted((s, p) for s, p in found if s is not None)]


def last_checkpoint(output_dir) -> Path | None:
    checkpoints = sorted_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def rng_states() -> dict:
    """Every random generator a step may draw from, as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {"python": random.getstate(), "torch": torch.get_rng_state(),
              "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                        "has_gauss": has_gauss, "cached_gaussian": cached}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict):
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def sync_folder(folder: Path):
    """Flush every file of a folder and the folder itself, so a rename after it publishes complete files."""
    for path in folder.iterdir():
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_checkpoint(output_dir, step: int, write_files) -> Path:
    """Call write_files(folder) on a fresh temporary folder, then publish it as checkpoint-<step>."""
    output_dir = Path(output_dir)
    final, tmp = output_dir / f"{PREFIX}{step}", output_dir / f"tmp-{PREFIX}{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_files(tmp)
    sync_folder(tmp)
    if final.exists():  # the same step saved again (a resumed run): the new copy replaces it
        stale = output_dir / f"stale-{PREFIX}{step}"
        os.replace(final, stale)
        os.replace(tmp, final)
        shutil.rmtree(stale)
    else:
        os.replace(tmp, final)
    sync_folder(output_dir)
    return final


def save_training_state(folder: Path, optimizer, scheduler, scaler, state: TrainerState, args_json: str):
    torch.save(optimizer.state_dict(), folder / OPTIMIZER_NAME)
    torch.save(scheduler.state_dict(), folder / SCHEDULER_NAME)
    if scaler is not None:
        torch.save(scaler.state_dict(), folder / SCALER_NAME)
    state.save_to_json(folder / STATE_NAME)
    write_atomic(folder / ARGS_NAME, args_json.encode())


def save_rng_states(folder: Path, states_by_rank: list):
    for rank, states in enumerate(states_by_rank):
        torch.save(states, folder / rng_state_name(rank, len(states_by_rank)))


def rotate_checkpoints(output_dir, save_total_limit: int | None, best_checkpoint: str | None):
    """Delete the oldest checkpoints beyond save_total_limit, never the best one nor the newest (so a
    limit of 1 with a best model earlier keeps both, as transformers does)."""
    if save_total_limit is None:
        return
    checkpoints = sorted_checkpoints(output_dir)
    best = Path(best_checkpoint).resolve() if best_checkpoint else None
    deletable = [p for p in checkpoints[:-1] if p.resolve() != best]
    for path in deletable[:max(0, len(checkpoints) - save_total_limit)]:
        shutil.rmtree(path)


def check_checkpoint_model(folder: Path, model) -> None:
    """Refuse a checkpoint written for another model class, naming both."""
    expected = type(model).__name__
    state_file = folder / STATE_NAME
    saved = TrainerState.load_from_json(state_file).model_class if state_file.is_file() else None
    if saved is None and (folder / "config.json").is_file():
        saved = (read_json(folder / "config.json").get("architectures") or [None])[0]
    if saved is not None and saved != expected:
        raise ValueError(f"{folder} is a checkpoint of a {saved}, but this Trainer trains a {expected}; "
                         "resume with the model it was trained from")


def load_model_weights(folder: Path, model):
    """The checkpoint's weights into `model` (its adapter only, for a PeftModel); shapes must match."""
    if isinstance(model, PeftModel):
        saved = read_safetensors(folder / ADAPTER_WEIGHTS_NAME)
        expected = model.adapter_state_dict()
    else:
        saved = read_safetensors(folder / "model.safetensors")
        tied = model.tied_keys()  # not saved: they share the tensor they are tied to
        expected = {key: tensor for key, tensor in model.state_dict().items() if key not in tied}
    missing = sorted(set(expected) - set(saved))
    unexpected = sorted(set(saved) - set(expected))
    wrong = sorted(key for key in set(expected) & set(saved) if saved[key].shape != expected[key].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"{folder} does not fit the {type(model).__name__} being trained: missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}, wrong shapes {wrong[:3]}")
    with torch.no_grad():
        for key, tensor in expected.items():
            tensor.copy_(saved[key])


def load_training_state(folder: Path, optimizer, scheduler, scaler, rank: int, world_size: int) -> dict:
    """Restore optimizer, scheduler and the fp16 scaler (when both the run and the checkpoint have one);
    return the RNG states of this process (set them when resuming)."""
    optimizer.load_state_dict(torch.load(folder / OPTIMIZER_NAME, weights_only=True, map_location="cpu"))
    scheduler.load_state_dict(torch.load(folder / SCHEDULER_NAME, weights_only=True))
    if scaler is not None and (folder / SCALER_NAME).is_file():
        scaler.load_state_dict(torch.load(folder / SCALER_NAME, weights_only=True))
    return torch.load(folder / rng_state_name(rank, world_size), weights_only=True)
