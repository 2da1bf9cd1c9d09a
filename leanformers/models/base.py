"""PreTrainedModel: from_pretrained / save_pretrained, dtype and device, random init.

Loading builds the model on the meta device and assigns the checkpoint's
tensors in place of the empty parameters, so weights are never held twice.
Key sets and shapes are checked the way nanoGPT's from_pretrained does: every
difference is reported with the key names and the file.
"""

import logging
import os
import sys
import warnings
from pathlib import Path

import torch
from torch import nn

from ..config import PretrainedConfig, load_config_dict
from ..generation.config import GENERATION_CONFIG_NAME, GenerationConfig
from ..generation.utils import GenerationMixin
from ..gguf import load_gguf_state_dict, read_gguf_tensors
from ..hub import resolve_model_path
from ..kernels import KERNEL_TYPES
from ..weights import SAFE_WEIGHTS_NAME, load_state_dict, save_safetensors
from .layers import link_sibling_linears
from .quantized import QuantizedEmbedding, QuantizedLinear, dequantize_model, is_quantized, use_quantized_weights

logger = logging.getLogger("leanformers")

DTYPES = {"float32": torch.float32, "float": torch.float32, "float16": torch.float16, "half": torch.float16,
          "bfloat16": torch.bfloat16, "float64": torch.float64}
# from_pretrained arguments that only matter to a download or to transformers' machinery
IGNORED_LOAD_KWARGS = ("cache_dir", "force_download", "token", "local_files_only", "low_cpu_mem_usage",
                       "trust_remote_code", "use_safetensors", "attn_implementation", "output_loading_info")


def resolve_dtype(dtype, config_dtype, device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        dtype = config_dtype or torch.float32
        if isinstance(dtype, str):
            dtype = DTYPES.get(dtype, torch.float32)
        if dtype in (torch.float16, torch.bfloat16) and torch.device(device).type == "cpu":
            # half-precision matmuls are far slower than fp32 on most CPUs; ask explicitly to get them
            dtype = torch.float32
        return dtype
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(DTYPES)} or a torch.dtype")
        dtype = DTYPES[dtype]
    if dtype == torch.float16 and torch.device(device).type == "cpu":
        warnings.warn("float16 on CPU is very slow; bfloat16 or float32 run much faster there", stacklevel=3)
    return dtype


def resolve_load_device(device_map) -> torch.device:
    """The one device from_pretrained loads onto, from `device=` or transformers' `device_map=`: None (the
    CPU), a name or torch.device ("cuda" is this process's GPU, cuda:LOCAL_RANK, as in transformers), a GPU
    index, {"": device}, or "auto" and its kin (the GPU when there is one). A map that spreads the modules
    over several devices is refused: leanformers keeps a model on one device."""
    if isinstance(device_map, dict):
        if set(device_map) != {""}:
            raise ValueError(f"device_map={device_map!r} places modules on different devices; leanformers loads a "
                             "model onto one device: pass device_map='cuda', a GPU index or {'': device}")
        device_map = device_map[""]
    if device_map in ("auto", "balanced", "balanced_low_0", "sequential"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device_map == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if isinstance(device_map, int):
        if device_map < 0:
            raise ValueError(f"device_map={device_map} is not a GPU index; pass device_map='cpu' for the CPU")
        return torch.device("cuda", device_map)
    return torch.device(device_map if device_map is not None else "cpu")


def drop_replaced_labels(config_dict: dict, overrides: dict) -> dict:
    """from_pretrained(num_labels=n) without id2label= replaces the checkpoint's labels, as in transformers:
    the file's id2label / label2id of another size are dropped (and a head of the old size is then
    reported as mismatched, curable with ignore_mismatched_sizes=True)."""
    n = overrides.get("num_labels")
    if n is None or "id2label" in overrides or len(config_dict.get("id2label") or {}) in (0, n):
        return config_dict
    return {k: v for k, v in config_dict.items() if k not in ("id2label", "label2id")}


def load_generation_config(path: Path, config_dict: dict, config: PretrainedConfig) -> GenerationConfig:
    """The folder's generation_config.json; without one, as transformers, the model config's settings plus the
    generation settings config.json holds (max_length, do_sample, ...: the model config drops those)."""
    if path.is_dir() and (path / GENERATION_CONFIG_NAME).is_file():
        return GenerationConfig.from_pretrained(path)
    return GenerationConfig.from_model_config({**config_dict, **config.to_dict()})


def causal_lm_class_name(cls) -> str | None:
    """The class of `cls`'s family that generates (LlamaModel -> LlamaForCausalLM): a family lives in one module."""
    family = vars(sys.modules[cls.__module__]).values()
    return next((c.__name__ for c in family if isinstance(c, type) and issubclass(c, PreTrainedModel)
                 and c.can_generate()), None)


def make_output_require_grad(module, inputs, output):
    output.requires_grad_(True)


def build_on_meta(cls, config):
    """cls(config) with its parameters on the meta device: no memory, the checkpoint fills them. nn.Embedding's
    constructor draws its random init even there, and torch runs a draw on meta through its reference
    implementations, whose first use imports torch._dynamo and sympy (67 MB resident, ~1 s); that draw, which
    gives nothing on meta, is skipped."""
    normal = nn.init.normal_
    nn.init.normal_ = lambda tensor, *args, **kwargs: tensor
    try:
        with torch.device("meta"):
            return cls(config)
    finally:
        nn.init.normal_ = normal


class PreTrainedModel(nn.Module, GenerationMixin):
    config_class = PretrainedConfig
    base_model_prefix = ""
    # Checkpoint keys that are not weights of ours and are dropped silently.
    ignored_checkpoint_keys: tuple = ()
    # Weights a checkpoint may lack (key suffixes): they are initialized, with a warning (BERT's pooler).
    optional_checkpoint_keys: tuple = ()
    # Set by gradient_checkpointing_enable on the model and each PreTrainedModel inside it (a head's base model).
    gradient_checkpointing = False
    _require_grads_hook = None

    def __init__(self, config):
        super().__init__()
        if not isinstance(config, PretrainedConfig):
            raise TypeError(f"{type(self).__name__} needs a config object, got {type(config).__name__}")
        self.config = config
        self.generation_config = GenerationConfig.from_model_config(config) if self.can_generate() else None

    @classmethod
    def can_generate(cls) -> bool:
        return "ForCausalLM" in cls.__name__ or "LMHead" in cls.__name__

    def generate(self, *args, **kwargs):
        # transformers' base models and classifiers have no generate(); ours would run the forward and fail
        # deep inside on an output without logits, so refuse before any work and name the class that generates.
        if not self.can_generate():
            family_class = causal_lm_class_name(type(self))
            fix = (f"load the checkpoint with AutoModelForCausalLM ({family_class}) instead" if family_class
                   else "use a decoder checkpoint (GPT-2, Llama, ...) with AutoModelForCausalLM")
            raise AttributeError(f"'{type(self).__name__}' object has no attribute 'generate': it has no "
                                 f"language-model head, so it cannot generate text; {fix}")
        return super().generate(*args, **kwargs)

    generate.__doc__ = GenerationMixin.generate.__doc__

    # -- initialisation -----------------------------------------------------------------
    def init_weights_of(self, module):
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("RMSNorm"):
            # A norm that scales by (weight_offset + weight), Gemma's 1 + weight, starts as the identity too.
            nn.init.constant_(module.weight, 1.0 - getattr(module, "weight_offset", 0.0))
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def post_init(self):
        """Called at the end of each family's __init__: random init (skipped on meta), tying, and the
        sibling linear layers' shared decode matmul."""
        if not any(p.is_meta for p in self.parameters()):
            self.apply(self.init_weights_of)
        self.tie_weights()
        link_sibling_linears(self)

    def get_input_embeddings(self):
        base = getattr(self, self.base_model_prefix, self)
        return base.get_input_embeddings() if base is not self else None

    def get_output_embeddings(self):
        return None

    def tie_weights(self):
        output = self.get_output_embeddings()
        if output is not None and getattr(self.config, "tie_word_embeddings", False):
            embedding = self.get_input_embeddings()
            if isinstance(output, QuantizedLinear) and isinstance(embedding, QuantizedEmbedding):
                output.qweight = embedding.qweight  # quantized layers share their blocks
            else:
                output.weight = embedding.weight

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Give the input embedding (and the output embedding / lm_head) `new_num_tokens` rows, e.g. after
        tokens were added to the tokenizer; config.vocab_size follows and tied weights stay tied.

        With mean_resizing, as transformers documents, new rows are drawn from a normal distribution around
        the old rows' mean with their covariance scaled by 1e-9 (the mean itself when that covariance is not
        positive definite), so new tokens start where the model expects an average token; otherwise they
        get the model's usual random init.
        """
        embedding = self.get_input_embeddings()
        if new_num_tokens is None and pad_to_multiple_of is None:
            return embedding
        new_num_tokens = embedding.weight.shape[0] if new_num_tokens is None else int(new_num_tokens)
        if pad_to_multiple_of:
            new_num_tokens = -(-new_num_tokens // pad_to_multiple_of) * pad_to_multiple_of
        if new_num_tokens <= 0:
            raise ValueError(f"resize_token_embeddings needs a positive number of tokens, got {new_num_tokens}")

        def grow(old: torch.Tensor) -> torch.Tensor:  # (V, D) -> (new_num_tokens, D)
            old_rows = old.shape[0]
            added = max(new_num_tokens - old_rows, 0)
            rows = old.new_empty((added, *old.shape[1:]))
            if added and mean_resizing and old.dim() == 2:
                data = old.detach().float()
                mean = data.mean(0)
                centered = data - mean
                covariance = centered.T @ centered / old_rows
                _, info = torch.linalg.cholesky_ex(1e-9 * covariance)
                if info.item() == 0:
                    noise = torch.distributions.MultivariateNormal(mean, covariance_matrix=1e-9 * covariance)
                    rows.copy_(noise.sample((added,)))
                else:
                    rows.copy_(mean.expand(added, -1))
            elif added and mean_resizing:  # a bias: the mean of the old entries
                rows.fill_(old.detach().float().mean().item())
            elif added and old.dim() == 2:
                nn.init.normal_(rows, std=getattr(self.config, "initializer_range", 0.02))
            else:
                rows.zero_()
            return torch.cat([old.detach()[:new_num_tokens], rows])

        requires_grad = embedding.weight.requires_grad
        embedding.weight = nn.Parameter(grow(embedding.weight), requires_grad=requires_grad)
        embedding.num_embeddings = new_num_tokens
        if embedding.padding_idx is not None and embedding.padding_idx >= new_num_tokens:
            embedding.padding_idx = None
        output = self.get_output_embeddings()
        if output is not None:
            if getattr(self.config, "tie_word_embeddings", False):
                output.weight = embedding.weight
            else:
                output.weight = nn.Parameter(grow(output.weight), requires_grad=output.weight.requires_grad)
            if getattr(output, "bias", None) is not None:
                output.bias = nn.Parameter(grow(output.bias), requires_grad=output.bias.requires_grad)
            if hasattr(output, "out_features"):
                output.out_features = new_num_tokens
        self.config.vocab_size = new_num_tokens
        return embedding

    # -- activation (gradient) checkpointing -----------------------------------------------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        """Keep only each layer's input in the forward and recompute the layer in backward: activation
        memory of one layer instead of all, for about one more forward per step. It applies while the
        model is training with grad enabled; eval, no_grad and generation run as usual.

        gradient_checkpointing_kwargs go to torch.utils.checkpoint.checkpoint (use_reentrant defaults to
        False). A reentrant checkpoint passes gradients only to inputs that require them, so then the input
        embeddings' output is made to require grad (enable_input_require_grads), or LoRA over frozen
        embeddings would get none.
        """
        kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        for module in self.modules():
            if isinstance(module, PreTrainedModel):
                module.gradient_checkpointing, module.gradient_checkpointing_kwargs = True, kwargs
        if kwargs["use_reentrant"]:
            self.enable_input_require_grads()

    def gradient_checkpointing_disable(self):
        for module in self.modules():
            if isinstance(module, PreTrainedModel):
                module.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return any(isinstance(m, PreTrainedModel) and m.gradient_checkpointing for m in self.modules())

    # transformers 5's names for the three above (it keeps the gradient_* ones as deprecated aliases)
    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None):
        self.gradient_checkpointing_enable(activation_checkpointing_kwargs)

    def activation_checkpointing_disable(self):
        self.gradient_checkpointing_disable()

    @property
    def is_activation_checkpointing(self) -> bool:
        return self.is_gradient_checkpointing

    def enable_input_require_grads(self):
        """Make the input embeddings' output require grad, so gradients pass through a reentrant checkpoint
        to adapters above frozen embeddings."""
        if self._require_grads_hook is None:
            self._require_grads_hook = self.get_input_embeddings().register_forward_hook(make_output_require_grad)

    def disable_input_require_grads(self):
        if self._require_grads_hook is not None:
            self._require_grads_hook.remove()
            self._require_grads_hook = None

    # -- facts ----------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        skip = set()
        if exclude_embeddings:
            skip = {id(m.weight) for m in self.modules() if isinstance(m, nn.Embedding)}
        seen, total = set(), 0
        for p in self.parameters():
            if id(p) in seen or id(p) in skip or (only_trainable and not p.requires_grad):
                continue
            seen.add(id(p))
            total += p.numel()
        return total

    # -- loading --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, config=None, dtype=None, torch_dtype=None,
                        device=None, device_map=None, gguf_file=None, revision=None,
                        ignore_mismatched_sizes=False, dequantize=True, **kwargs):
        """dequantize=False (GGUF files only) keeps the file's Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K and Q6_K
        weights as their blocks, in QuantizedLinear and QuantizedEmbedding layers (models/quantized.py)."""
        for key in IGNORED_LOAD_KWARGS:
            kwargs.pop(key, None)
        path = resolve_model_path(pretrained_model_name_or_path, gguf_file=gguf_file, revision=revision)
        config_dict = load_config_dict(path)
        if config is None:
            config = cls.config_class.from_dict(drop_replaced_labels(config_dict, kwargs), **kwargs)
        elif kwargs:
            for key, value in kwargs.items():
                setattr(config, key, value)
        if torch_dtype is not None and dtype is None:
            dtype = torch_dtype
        device = resolve_load_device(device if device is not None else device_map)
        dtype = resolve_dtype(dtype, config.dtype, device)

        quantized = {}
        if not dequantize and path.suffix != ".gguf":
            raise ValueError(f"dequantize=False keeps a GGUF file's quantized weights; {path} is not a GGUF file")
        if path.suffix == ".gguf" and not dequantize:
            (state_dict, quantized), source = read_gguf_tensors(path, keep_types=KERNEL_TYPES), path
        elif path.suffix == ".gguf":
            state_dict, source = load_gguf_state_dict(path, dtype if dtype.is_floating_point else torch.float32), path
        else:
            state_dict, source = load_state_dict(path), path / "(weights)"
        model = build_on_meta(cls, config)
        if quantized:
            use_quantized_weights(model, quantized, state_dict)
        model.load_checkpoint(state_dict, source, ignore_mismatched_sizes)
        model.to(device=device)
        for param in model.parameters():  # buffers such as rotary frequencies stay in fp32
            if param.is_floating_point() and param.dtype != dtype:
                param.data = param.data.to(dtype)
        model.config.dtype = str(dtype).removeprefix("torch.")
        if model.can_generate():
            model.generation_config = load_generation_config(path, config_dict, model.config)
        model.name_or_path = str(pretrained_model_name_or_path)
        return model.eval()

    def load_checkpoint(self, state_dict: dict, source, ignore_mismatched_sizes=False):
        """Assign checkpoint tensors to this (meta) model; initialise what the checkpoint lacks
        only when it is a head on top of a pretrained base."""
        expected = self.state_dict()
        prefix = self.base_model_prefix + "." if self.base_model_prefix else ""
        has_base = bool(prefix) and hasattr(self, self.base_model_prefix)
        renamed = {}
        for key, tensor in state_dict.items():
            if any(key.endswith(pattern) for pattern in self.ignored_checkpoint_keys):
                continue
            if has_base and key not in expected and prefix + key in expected:
                key = prefix + key  # a base-model checkpoint loaded under a head
            elif not has_base and prefix and key.startswith(prefix):
                key = key[len(prefix):]  # a head checkpoint loaded into the base model
            renamed[key] = tensor

        unexpected = sorted(k for k in renamed if k not in expected)
        # Keys of a head the checkpoint has but this class lacks are dropped, as transformers does.
        if has_base:
            unexpected = [k for k in unexpected if k.startswith(prefix)]
        elif prefix:
            unexpected = [k for k in unexpected if "." in k and k.split(".")[0] in dict(self.named_children())]
        if unexpected:
            raise ValueError(f"{source} has weights {type(self).__name__} does not expect: {', '.join(unexpected[:10])}"
                             + (f" and {len(unexpected) - 10} more" if len(unexpected) > 10 else ""))
        tied = self.tied_keys()
        mismatched = []
        for key, tensor in list(renamed.items()):
            if key in expected and tensor.shape != expected[key].shape:
                mismatched.append(f"{key}: checkpoint {tuple(tensor.shape)}, model {tuple(expected[key].shape)}")
                del renamed[key]
        if mismatched and not ignore_mismatched_sizes:
            raise ValueError(
                f"{source} has weights whose shapes do not match {type(self).__name__}'s: " + "; ".join(mismatched)
                + ". If the head should be trained anew (e.g. another num_labels), pass ignore_mismatched_sizes=True"
            )
        missing = sorted(k for k in expected if k not in renamed and k not in tied)
        base_missing = [k for k in missing if (not has_base or k.startswith(prefix))
                        and not any(k.endswith(pattern) for pattern in self.optional_checkpoint_keys)]
        if base_missing and not mismatched:
            raise ValueError(f"{source} lacks weights {type(self).__name__} needs: {', '.join(base_missing[:10])}"
                             + (f" and {len(base_missing) - 10} more" if len(base_missing) > 10 else ""))
        self.load_state_dict({k: v for k, v in renamed.items() if k in expected}, strict=False, assign=True)
        self.tie_weights()
        new = [k for k in missing if k in dict(self.named_parameters()) or k in dict(self.named_buffers())]
        if new:
            self.initialize_missing(new)
            logger.warning("%s: these weights are not in %s and were newly initialized: %s. Train the model "
                           "before using it for predictions.", type(self).__name__, source, ", ".join(new))

    def tied_keys(self) -> set:
        output = self.get_output_embeddings()
        if output is None or not getattr(self.config, "tie_word_embeddings", False):
            return set()
        named, tensor = ((self.named_buffers, output.qweight) if isinstance(output, QuantizedLinear)
                         else (self.named_parameters, output.weight))
        return {name for name, t in named(remove_duplicate=False) if t is tensor} - {
            name for name, t in named() if t is tensor}

    def initialize_missing(self, names):
        modules = dict(self.named_modules())
        for name in names:
            module_name, _, attr = name.rpartition(".")
            module = modules[module_name]
            tensor = getattr(module, attr)
            if tensor.is_meta:
                empty = torch.empty_like(tensor, device="cpu")
                if isinstance(tensor, nn.Parameter):
                    setattr(module, attr, nn.Parameter(empty, requires_grad=tensor.requires_grad))
                else:
                    module.register_buffer(attr, empty)
        for name in {n.rpartition(".")[0] for n in names}:
            self.init_weights_of(modules[name])

    # -- saving ---------------------------------------------------------------------------
    def dequantize(self):
        """Quantized layers back to plain fp32 ones (transformers' name for it); returns the model."""
        return dequantize_model(self)

    def save_pretrained(self, save_directory, state_dict=None, safe_serialization=True, **kwargs):
        if is_quantized(self):
            raise ValueError(f"{type(self).__name__} holds quantized layers (GGUF blocks), which a safetensors "
                             "checkpoint for transformers cannot hold; call model.dequantize() first")
        if not safe_serialization:
            raise ValueError("leanformers writes safetensors only; pickled .bin files can execute code when loaded")
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_pretrained needs a directory, but {save_directory} is a file")
        save_directory.mkdir(parents=True, exist_ok=True)
        state_dict = dict(state_dict if state_dict is not None else self.state_dict())
        for key in self.tied_keys():
            state_dict.pop(key, None)
        self.config.architectures = [type(self).__name__]
        self.config.dtype = str(self.dtype).removeprefix("torch.")
        save_safetensors(state_dict, save_directory / SAFE_WEIGHTS_NAME)
        self.config.save_pretrained(save_directory)
        if self.generation_config is not None:
            self.generation_config.save_pretrained(save_directory)
