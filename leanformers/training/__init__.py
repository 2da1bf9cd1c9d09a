"""Training: Trainer and TrainingArguments, the hand-written loop's helpers (schedules, set_seed; AdamW is
torch's, as transformers v5 has it), callbacks, checkpoints, and LoRA adapters in PEFT's format."""

from torch.optim import AdamW

from .lora import LoraConfig, PeftModel, get_peft_model
from .optimization import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                           get_linear_schedule_with_warmup, get_scheduler, set_seed)
from .arguments import TrainingArguments
from .callbacks import EarlyStoppingCallback, TrainerCallback, TrainerControl, TrainerState
from .trainer import EvalPrediction, PredictionOutput, TrainOutput, Trainer
