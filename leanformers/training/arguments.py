"""TrainingArguments: transformers' names and defaults for what the Trainer does.

Every field is honoured by the Trainer; an argument transformers has and leanformers does not
(deepspeed, fsdp, torch_compile, ...) raises with its name instead of being silently dropped. The
v4 spellings still accepted by code people have (`evaluation_strategy`, `warmup_ratio`) work too.
"""

import dataclasses
import importlib.util
import json
import math
import os
from dataclasses import dataclass, field

import torch

from .optimization import SCHEDULES

STRATEGIES = ("no", "steps", "epoch")
OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")
SAMPLING = ("random", "sequential")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX); elsewhere bf16 autocast is emulated
    and slower than fp32."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return torch.cpu._is_avx512_bf16_supported() or amx()


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class TrainingArguments:
    output_dir: str | None = None
    overwrite_output_dir: bool = False  # v4 scripts pass it; checkpoints never overwrite each other anyway
    do_train: bool = False  # recorded for scripts that read them back, as in transformers
    do_eval: bool = False
    do_predict: bool = False
    eval_strategy: str = "no"
    evaluation_strategy: str | None = None
    prediction_loss_only: bool = False
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    num_train_epochs: float = 3.0
    max_steps: int = -1
    lr_scheduler_type: str = "linear"
    lr_scheduler_kwargs: dict = field(default_factory=dict)
    warmup_steps: float = 0
    warmup_ratio: float | None = None
    logging_dir: str | None = None
    logging_strategy: str = "steps"
    logging_first_step: bool = False
    logging_steps: float = 500
    save_strategy: str = "steps"
    save_steps: float = 500
    save_total_limit: int | None = None
    save_only_model: bool = False
    use_cpu: bool = False
    seed: int = 42
    data_seed: int | None = None
    bf16: bool = False
    fp16: bool = False
    eval_steps: float | None = None
    dataloader_num_workers: int = 0
    dataloader_drop_last: bool = False
    run_name: str | None = None
    disable_tqdm: bool = False
    remove_unused_columns: bool = True
    label_names: list | None = None
    load_best_model_at_end: bool = False
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    ignore_data_skip: bool = False
    optim: str = "adamw_torch_fused"
    report_to: str | list | None = "none"
    resume_from_checkpoint: str | None = None
    gradient_checkpointing: bool = False
    gradient_checkpointing_kwargs: dict | None = None
    train_sampling_strategy: str = "random"
    eval_on_start: bool = False
    average_tokens_across_devices: bool = True
    push_to_hub: bool = False

    def __post_init__(self):
        self.output_dir = str(self.output_dir if self.output_dir is not None else "trainer_output")
        if self.evaluation_strategy is not None:
            if self.eval_strategy not in ("no", self.evaluation_strategy):
                raise ValueError(f"eval_strategy={self.eval_strategy!r} and evaluation_strategy="
                                 f"{self.evaluation_strategy!r} disagree; pass one (evaluation_strategy is v4's name)")
            self.eval_strategy = self.evaluation_strategy
        for name, allowed in (("eval_strategy", STRATEGIES), ("logging_strategy", STRATEGIES),
                              ("save_strategy", STRATEGIES + ("best",)), ("optim", OPTIMIZERS),
                              ("train_sampling_strategy", SAMPLING), ("lr_scheduler_type", tuple(SCHEDULES))):
            value = str(getattr(self, name)).removeprefix("SchedulerType.").removeprefix("IntervalStrategy.").lower()
            if value not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")
            setattr(self, name, value)
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("learning_rate", "weight_decay", "adam_epsilon", "warmup_steps", "dataloader_num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio <= 1:
            raise ValueError(f"warmup_ratio must be between 0 and 1, got {self.warmup_ratio}")
        for name in ("logging_steps", "save_steps", "eval_steps"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive (a count of steps, or a fraction of the training below 1), "
                                 f"got {value}")
        if self.eval_strategy == "steps" and self.eval_steps is None:
            self.eval_steps = self.logging_steps
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be at least 1 (or None to keep every checkpoint), "
                             f"got {self.save_total_limit}")
        if self.load_best_model_at_end:
            self.check_best_model_settings()
        if self.metric_for_best_model is None and (self.load_best_model_at_end or self.save_strategy == "best"):
            self.metric_for_best_model = "loss"
        if self.metric_for_best_model is not None:
            self.metric_for_best_model = self.metric_for_best_model.removeprefix("eval_")
            if self.greater_is_better is None:
                self.greater_is_better = not self.metric_for_best_model.endswith("loss")
        if self.save_strategy == "best" and self.eval_strategy == "no":
            raise ValueError("save_strategy='best' saves when an evaluation improves, but eval_strategy is 'no'")
        self.report_to = self.resolve_report_to(self.report_to)
        if self.push_to_hub:
            raise ValueError("push_to_hub is not supported by leanformers: it never uploads; "
                             "save_model() writes a folder you can upload yourself")
        self.check_precision()

    def check_best_model_settings(self):
        if self.eval_strategy == "no":
            raise ValueError("load_best_model_at_end needs evaluations: set eval_strategy to 'steps' or 'epoch'")
        if self.save_strategy not in (self.eval_strategy, "best"):
            raise ValueError(f"load_best_model_at_end needs save_strategy equal to eval_strategy, got save_strategy="
                             f"{self.save_strategy!r} and eval_strategy={self.eval_strategy!r}")
        if self.eval_strategy == "steps" and self.save_strategy == "steps" and self.save_steps % self.eval_steps:
            raise ValueError(f"load_best_model_at_end needs save_steps ({self.save_steps}) to be a multiple of "
                             f"eval_steps ({self.eval_steps}), so that every evaluated step is saved")

    @staticmethod
    def resolve_report_to(report_to) -> list:
        names = [] if report_to in (None, "none") else [report_to] if isinstance(report_to, str) else list(report_to)
        if names == ["all"]:
            return ["tensorboard"] if importlib.util.find_spec("tensorboard") else []
        unknown = [name for name in names if name not in ("none", "tensorboard")]
        if unknown:
            raise ValueError(f"report_to {unknown} is not supported; leanformers reports to 'tensorboard' (when "
                             "installed) or 'none', and always writes the log as JSON lines in output_dir")
        if "tensorboard" in names and not importlib.util.find_spec("tensorboard"):
            raise ValueError("report_to='tensorboard' needs the tensorboard package: pip install tensorboard")
        return [name for name in names if name != "none"]

    def check_precision(self):
        if self.bf16 and self.fp16:
            raise ValueError("bf16 and fp16 are both set; choose one")
        on_cpu = self.device.type == "cpu"
        if self.fp16 and on_cpu:
            raise ValueError("fp16 mixed precision needs a GPU; on a CPU it is emulated and very slow. "
                             "Use bf16=True (on a CPU with bf16 instructions) or fp32")
        if self.bf16 and on_cpu and not cpu_has_bf16():
            raise ValueError("bf16=True, but this CPU has no bf16 instructions (AVX-512 BF16 or AMX), so bf16 "
                             "would be emulated and slower than fp32; train in fp32")
        if self.bf16 and not on_cpu and not torch.cuda.is_bf16_supported():
            raise ValueError("bf16=True, but this GPU does not support bf16; use fp16=True")

    # -- what the Trainer reads -------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        if self.use_cpu or not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def world_size(self) -> int:
        return world_size()

    @property
    def process_index(self) -> int:
        return int(os.environ.get("RANK", "0"))

    @property
    def should_save(self) -> bool:
        """Only the first process writes checkpoints and logs."""
        return self.process_index == 0

    @property
    def train_batch_size(self) -> int:
        return self.per_device_train_batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size

    def get_warmup_steps(self, num_training_steps: int) -> int:
        """warmup_steps (a fraction of the training when below 1, as in v5), else v4's warmup_ratio."""
        if self.warmup_steps >= 1:
            return int(self.warmup_steps)
        ratio = self.warmup_steps if self.warmup_steps > 0 else (self.warmup_ratio or 0.0)
        return math.ceil(num_training_steps * ratio)

    def steps_of(self, name: str, max_steps: int) -> int:
        """logging_steps / eval_steps / save_steps as a step count (a value below 1 is a fraction of max_steps)."""
        value = getattr(self, name)
        return max(1, math.ceil(max_steps * value)) if value < 1 else int(value)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str)


def refuse_unknown_arguments(cls):
    """Name every argument TrainingArguments does not have, rather than Python's first-only TypeError."""
    generated_init = cls.__init__
    known = {f.name for f in dataclasses.fields(cls)}

    def __init__(self, *args, **kwargs):
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"TrainingArguments got argument(s) leanformers does not have: {', '.join(unknown)}. "
                            "They are transformers arguments for features leanformers does not implement, or "
                            "misspellings; remove them")
        generated_init(self, *args, **kwargs)

    __init__.__doc__ = generated_init.__doc__
    cls.__init__ = __init__
    return cls


TrainingArguments = refuse_unknown_arguments(TrainingArguments)
