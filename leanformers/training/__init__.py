"""Training: the hand-written loop's helpers (schedules, set_seed; AdamW is torch's, as transformers v5 has it)
and LoRA adapters in PEFT's format."""

from torch.optim import AdamW

from .lora import LoraConfig, PeftModel, get_peft_model
from .optimization import (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup,
                           get_linear_schedule_with_warmup, get_scheduler, set_seed)
