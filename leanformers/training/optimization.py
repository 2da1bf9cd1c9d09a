"""The hand-written training loop's helpers: learning-rate schedules, set_seed, and AdamW's parameter groups.

`get_scheduler(name, optimizer, num_warmup_steps, num_training_steps)` returns a torch LambdaLR whose
multiplier of the initial learning rate at step t is one of the small pure functions below; their values
are transformers' schedules, step by step. The factors are functools.partial objects over module-level
functions, so a scheduler's state_dict (and a checkpoint holding it) round-trips.
"""

import math
import random
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR


def warmup_factor(step: int, num_warmup_steps: int) -> float:
    return step / max(1, num_warmup_steps)


def constant_factor(step: int) -> float:
    return 1.0


def constant_with_warmup_factor(step: int, *, num_warmup_steps: int) -> float:
    return warmup_factor(step, num_warmup_steps) if step < num_warmup_steps else 1.0


def linear_factor(step: int, *, num_warmup_steps: int, num_training_steps: int) -> float:
    if step < num_warmup_steps:
        return warmup_factor(step, num_warmup_steps)
    return max(0.0, (num_training_steps - step) / max(1, num_training_steps - num_warmup_steps))


def decay_progress(step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    """How far step is through the steps after warmup: 0 at the end of warmup, 1 at num_training_steps."""
    return (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)


def cosine_factor(step: int, *, num_warmup_steps: int, num_training_steps: int, num_cycles: float = 0.5) -> float:
    """Half a cosine wave (num_cycles=0.5) from 1 down to 0 after warmup."""
    if step < num_warmup_steps:
        return warmup_factor(step, num_warmup_steps)
    progress = decay_progress(step, num_warmup_steps, num_training_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * num_cycles * 2.0 * progress)))


def cosine_with_restarts_factor(step: int, *, num_warmup_steps: int, num_training_steps: int,
                                num_cycles: int = 1) -> float:
    """num_cycles cosine descents from 1 to 0, each restarting at 1 (hard restarts)."""
    if step < num_warmup_steps:
        return warmup_factor(step, num_warmup_steps)
    progress = decay_progress(step, num_warmup_steps, num_training_steps)
    if progress >= 1.0:
        return 0.0
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * ((num_cycles * progress) % 1.0))))


def polynomial_factor(step: int, *, num_warmup_steps: int, num_training_steps: int, lr_init: float,
                      lr_end: float = 1e-7, power: float = 1.0) -> float:
    """From lr_init down to lr_end as (1 - progress) ** power after warmup; lr_end after the last step."""
    if step < num_warmup_steps:
        return warmup_factor(step, num_warmup_steps)
    if step > num_training_steps:
        return lr_end / lr_init
    remaining = 1 - (step - num_warmup_steps) / (num_training_steps - num_warmup_steps)
    return ((lr_init - lr_end) * remaining**power + lr_end) / lr_init


def inverse_sqrt_factor(step: int, *, num_warmup_steps: int, timescale: int) -> float:
    """1 / sqrt of the step (shifted so it is 1 where warmup ends), in units of `timescale` steps."""
    if step < num_warmup_steps:
        return warmup_factor(step, num_warmup_steps)
    return 1.0 / math.sqrt((step + timescale - num_warmup_steps) / timescale)


# name -> (factor, whether it needs num_warmup_steps, num_training_steps, the scheduler_specific_kwargs it takes)
SCHEDULES = {
    "linear": (linear_factor, True, True, ()),
    "cosine": (cosine_factor, True, True, ("num_cycles",)),
    "cosine_with_restarts": (cosine_with_restarts_factor, True, True, ("num_cycles",)),
    "polynomial": (polynomial_factor, True, True, ("lr_end", "power")),
    "constant": (constant_factor, False, False, None),
    "constant_with_warmup": (constant_with_warmup_factor, True, False, None),
    "inverse_sqrt": (inverse_sqrt_factor, True, False, ("timescale",)),
}


def get_scheduler(name, optimizer, num_warmup_steps: int | None = None, num_training_steps: int | None = None,
                  scheduler_specific_kwargs: dict | None = None) -> LambdaLR:
    """A learning-rate scheduler by name (see SCHEDULES); step it once per optimizer step."""
    name = getattr(name, "value", name)  # an enum member, as transformers' SchedulerType
    if name not in SCHEDULES:
        raise ValueError(f"unknown scheduler {name!r}; known: {', '.join(SCHEDULES)}")
    factor, needs_warmup, needs_total, extra_names = SCHEDULES[name]
    extra = dict(scheduler_specific_kwargs or {})
    settings = {}
    if needs_warmup:
        if num_warmup_steps is None:
            raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
        if num_warmup_steps < 0:
            raise ValueError(f"num_warmup_steps must be >= 0, got {num_warmup_steps}")
        settings["num_warmup_steps"] = num_warmup_steps
    if needs_total:
        if num_training_steps is None:
            raise ValueError(f"{name} requires `num_training_steps`, please provide that argument.")
        settings["num_training_steps"] = num_training_steps
    if extra_names is not None:  # constant schedules ignore extra settings, as in transformers
        unknown = sorted(set(extra) - set(extra_names))
        if unknown:
            raise TypeError(f"the {name} scheduler takes no {', '.join(unknown)}; its settings: "
                            f"{', '.join(extra_names) or 'none'}")
        settings.update(extra)
    if name == "polynomial":
        lr_init = optimizer.defaults["lr"]
        lr_end = settings.get("lr_end", 1e-7)
        if not lr_init > lr_end:
            raise ValueError(f"lr_end ({lr_end}) must be smaller than initial lr ({lr_init})")
        settings["lr_init"] = lr_init
    if name == "inverse_sqrt" and settings.get("timescale") is None:
        settings["timescale"] = num_warmup_steps or 10_000
    return LambdaLR(optimizer, partial(factor, **settings))


def get_linear_schedule_with_warmup(optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1):
    return LambdaLR(optimizer, partial(linear_factor, num_warmup_steps=num_warmup_steps,
                                       num_training_steps=num_training_steps), last_epoch)


def get_cosine_schedule_with_warmup(optimizer, num_warmup_steps: int, num_training_steps: int,
                                    num_cycles: float = 0.5, last_epoch: int = -1):
    return LambdaLR(optimizer, partial(cosine_factor, num_warmup_steps=num_warmup_steps,
                                       num_training_steps=num_training_steps, num_cycles=num_cycles), last_epoch)


def get_constant_schedule_with_warmup(optimizer, num_warmup_steps: int, last_epoch: int = -1):
    return LambdaLR(optimizer, partial(constant_with_warmup_factor, num_warmup_steps=num_warmup_steps), last_epoch)


def set_seed(seed: int, deterministic: bool = False):
    """Seed Python's, numpy's and torch's generators (every device); deterministic=True also asks torch
    for deterministic algorithms."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True)


def no_decay(name: str, module: nn.Module) -> bool:
    """Biases and normalization weights train without weight decay, as transformers groups them."""
    return name.endswith("bias") or "norm" in type(module).__name__.lower() or "norm" in name.rpartition(".")[0].lower()


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    modules = dict(model.named_modules())
    decay, plain = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (plain if no_decay(name, modules[name.rpartition(".")[0]]) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]
