"""LoRA adapters, saved and loaded in PEFT's format.

get_peft_model(model, LoraConfig(r, lora_alpha, lora_dropout, target_modules)) wraps each targeted linear
layer as LoraLinear: the frozen layer (`base_layer`) plus lora_B(lora_A(dropout(x))) * lora_alpha / r,
where only lora_A and lora_B train. save_pretrained writes adapter_config.json and adapter_model.safetensors
with PEFT's keys (`base_model.model.<module>.lora_A.weight`), so `peft` loads them over the transformers
model; PeftModel.from_pretrained loads them (ours or PEFT's) over a leanformers model; merge_and_unload
folds W + B @ A * alpha / r into the base weights.
"""

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..files import read_json, write_atomic
from ..weights import read_safetensors, save_safetensors

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
KEY_PREFIX = "base_model.model."  # where PEFT's saved keys put the wrapped model


@dataclass
class LoraConfig:
    r: int = 8
    lora_alpha: int = 8
    lora_dropout: float = 0.0
    target_modules: list | str | None = None
    bias: str = "none"
    task_type: str | None = None
    base_model_name_or_path: str | None = None
    peft_type: str = field(default="LORA", init=False)

    def __post_init__(self):
        if not isinstance(self.r, int) or self.r <= 0:
            raise ValueError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.bias != "none":
            raise ValueError(f"bias={self.bias!r} is not supported: leanformers' LoRA trains no biases (bias='none')")
        if self.target_modules is None:
            raise ValueError("LoraConfig needs target_modules: the names of the linear layers to adapt, "
                             "e.g. ['q_proj', 'v_proj'], or a regular expression over full module names")
        if not isinstance(self.target_modules, str):
            self.target_modules = sorted(set(self.target_modules))

    @property
    def scaling(self) -> float:
        return self.lora_alpha / self.r

    def targets(self, name: str) -> bool:
        """Whether the module called `name` (its full dotted name) is adapted, by PEFT's rule."""
        if isinstance(self.target_modules, str):
            return re.fullmatch(self.target_modules, name) is not None
        return any(name == target or name.endswith("." + target) for target in self.target_modules)

    @classmethod
    def from_pretrained(cls, folder):
        path = Path(folder) / ADAPTER_CONFIG_NAME
        data = read_json(path)
        if not isinstance(data, dict) or data.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"{path} is not a LoRA adapter config (peft_type {data.get('peft_type')!r})"
                             if isinstance(data, dict) else f"{path} must hold a JSON object")
        unsupported = [k for k in ("use_dora", "use_rslora", "fan_in_fan_out") if data.get(k)]
        if unsupported or data.get("rank_pattern") or data.get("alpha_pattern"):
            raise ValueError(f"{path} uses PEFT options leanformers does not read: "
                             f"{', '.join(unsupported + [k for k in ('rank_pattern', 'alpha_pattern') if data.get(k)])}")
        names = {"r", "lora_alpha", "lora_dropout", "target_modules", "bias", "task_type", "base_model_name_or_path"}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict:
        return {**asdict(self), "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
                "modules_to_save": None, "use_dora": False, "use_rslora": False}


class LoraLinear(nn.Module):
    """A frozen linear layer plus its low-rank update: base_layer(x) + lora_B(lora_A(dropout(x))) * scaling."""

    def __init__(self, base_layer: nn.Linear, r: int, lora_alpha: int, lora_dropout: float):
        super().__init__()
        self.base_layer = base_layer
        factory = {"device": base_layer.weight.device, "dtype": base_layer.weight.dtype}
        self.lora_A = nn.Linear(base_layer.in_features, r, bias=False, **factory)
        self.lora_B = nn.Linear(r, base_layer.out_features, bias=False, **factory)
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.scaling = lora_alpha / r
        # PEFT's initialisation: A as nn.Linear's default, B zero, so the adapter starts as the identity.
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)

    @property
    def weight(self):  # the base weight, for code that reads layer.weight (tying, dtype checks)
        return self.base_layer.weight

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling

    def merged(self) -> nn.Linear:
        """The base layer with W + B @ A * scaling folded into its weight."""
        with torch.no_grad():
            delta = (self.lora_B.weight.float() @ self.lora_A.weight.float()) * self.scaling
            self.base_layer.weight += delta.to(self.base_layer.weight.dtype)
        return self.base_layer


def lora_layers(model: nn.Module) -> dict:
    return {name: module for name, module in model.named_modules() if isinstance(module, LoraLinear)}


def replace_module(model: nn.Module, name: str, new: nn.Module):
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


class PeftModel(nn.Module):
    """A model whose targeted linear layers carry LoRA adapters; calls, generate() and attributes go to it."""

    def __init__(self, model: nn.Module, peft_config: LoraConfig):
        super().__init__()
        self.base_model = model
        self.peft_config = peft_config
        targets = [name for name, module in model.named_modules()
                   if peft_config.targets(name) and isinstance(module, nn.Linear)]
        if not targets:
            linears = sorted({name.rpartition(".")[2] for name, m in model.named_modules() if isinstance(m, nn.Linear)})
            raise ValueError(f"target_modules {peft_config.target_modules!r} match no linear layer of "
                             f"{type(model).__name__}; its linear layers are named {', '.join(linears)}")
        for param in model.parameters():
            param.requires_grad_(False)
        for name in targets:
            base = model.get_submodule(name)
            replace_module(model, name, LoraLinear(base, peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout))

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":  # not set yet (a copy being built): nothing to fall back on
                raise
            return getattr(self.base_model, name)

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.base_model.generate(*args, **kwargs)

    def get_base_model(self) -> nn.Module:
        return self.base_model

    def adapter_state_dict(self) -> dict:
        """The adapter weights under PEFT's saved names."""
        return {f"{KEY_PREFIX}{name}.{part}.weight": getattr(layer, part).weight
                for name, layer in lora_layers(self.base_model).items() for part in ("lora_A", "lora_B")}

    def print_trainable_parameters(self):
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        print(f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}")

    def save_pretrained(self, save_directory):
        """adapter_config.json and adapter_model.safetensors, the files PEFT writes and reads."""
        folder = Path(save_directory)
        if folder.is_file():
            raise ValueError(f"save_pretrained needs a directory, but {folder} is a file")
        folder.mkdir(parents=True, exist_ok=True)
        config = self.peft_config.to_dict()
        config["base_model_name_or_path"] = config["base_model_name_or_path"] or getattr(self.base_model, "name_or_path", None)
        save_safetensors(self.adapter_state_dict(), folder / ADAPTER_WEIGHTS_NAME)
        write_atomic(folder / ADAPTER_CONFIG_NAME, (json.dumps(config, indent=2, sort_keys=True) + "\n").encode())

    @classmethod
    def from_pretrained(cls, model: nn.Module, adapter_folder, is_trainable: bool = False):
        """Load an adapter folder (written by leanformers or PEFT) over `model`."""
        folder = Path(adapter_folder)
        weights_file = folder / ADAPTER_WEIGHTS_NAME
        if not weights_file.is_file():
            raise FileNotFoundError(f"{folder} has no {ADAPTER_WEIGHTS_NAME}; an adapter folder holds it and "
                                    f"{ADAPTER_CONFIG_NAME}")
        config = LoraConfig.from_pretrained(folder)
        saved = {re.sub(r"\.default\.weight$", ".weight", k): v for k, v in read_safetensors(weights_file).items()}
        trainable = {name: p.requires_grad for name, p in model.named_parameters()}
        peft_model = cls(model, config)
        try:
            expected = peft_model.adapter_state_dict()
            missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
            if missing or unexpected:
                raise ValueError(f"{weights_file} does not fit {type(model).__name__} with this adapter config: "
                                 f"missing {missing[:3]}, unexpected {unexpected[:3]}")
            for key, param in expected.items():
                if saved[key].shape != param.shape:
                    raise ValueError(f"{weights_file}: {key} has shape {tuple(saved[key].shape)}, the model's "
                                     f"adapter needs {tuple(param.shape)}")
        except ValueError:
            peft_model.unload()  # the model is left as it was given
            for name, param in model.named_parameters():
                param.requires_grad_(trainable[name])
            raise
        with torch.no_grad():
            for key, param in expected.items():
                param.copy_(saved[key])
                param.requires_grad_(is_trainable)
        return peft_model

    def unload(self) -> nn.Module:
        """The base model with the adapters taken off, unmerged."""
        for name, layer in lora_layers(self.base_model).items():
            replace_module(self.base_model, name, layer.base_layer)
        return self.base_model

    def merge_and_unload(self) -> nn.Module:
        """The base model with every adapter folded into its layer's weight, the adapters gone."""
        for name, layer in lora_layers(self.base_model).items():
            replace_module(self.base_model, name, layer.merged())
        return self.base_model


def get_peft_model(model: nn.Module, peft_config: LoraConfig) -> PeftModel:
    """`model` with LoRA adapters on the layers `peft_config` targets; only the adapters train."""
    return PeftModel(model, peft_config)
