"""GenerationConfig: how generate() decodes, read from and written to generation_config.json.

As in transformers v5, every field of a fresh GenerationConfig is None ("not
set"). generate() fills the unset fields first from the model's own
generation config and then from GLOBAL_DEFAULTS, so a value set by the user
always wins, and `max_length` can tell "left at its default" from "set to 20".
Keys this class does not know are kept as attributes, so a file round-trips.
"""

import copy
import json
from pathlib import Path

from ..files import read_json, write_atomic
from .watermarking import WatermarkingConfig

GENERATION_CONFIG_NAME = "generation_config.json"

# Every field a GenerationConfig has (transformers' names), in file order.
FIELDS = (
    # length
    "max_length", "max_new_tokens", "min_length", "min_new_tokens", "early_stopping", "max_time", "stop_strings",
    # strategy
    "do_sample", "num_beams", "use_cache", "cache_implementation",
    # logits manipulation
    "temperature", "top_k", "top_p", "min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff",
    "repetition_penalty", "encoder_repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "renormalize_logits", "forced_bos_token_id",
    "forced_eos_token_id", "remove_invalid_values", "exponential_decay_length_penalty", "suppress_tokens",
    "begin_suppress_tokens", "sequence_bias", "guidance_scale", "watermarking_config",
    # outputs
    "num_return_sequences", "output_attentions", "output_hidden_states", "output_scores", "output_logits",
    "return_dict_in_generate",
    # special tokens
    "pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
)  # fmt: skip

# transformers' model-agnostic defaults, applied in generate() to fields nobody set.
GLOBAL_DEFAULTS = {
    "max_length": 20,
    "min_length": 0,
    "do_sample": False,
    "use_cache": True,
    "early_stopping": False,
    "num_beams": 1,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "typical_p": 1.0,
    "repetition_penalty": 1.0,
    "length_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "encoder_no_repeat_ngram_size": 0,
    "num_return_sequences": 1,
    "output_scores": False,
    "return_dict_in_generate": False,
    "remove_invalid_values": False,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "encoder_repetition_penalty": 1.0,
}

# Bookkeeping keys, not generation settings: ignored by == and repr.
METADATA_FIELDS = ("_from_model_config", "_commit_hash", "_original_object_hash", "transformers_version")

# Arguments of generate() that people put in the config by mistake.
GENERATE_ARGUMENTS = ("logits_processor", "stopping_criteria", "prefix_allowed_tokens_fn", "streamer", "generator")

OUTPUT_FLAGS = ("output_scores", "output_logits", "output_attentions", "output_hidden_states")


class GenerationConfig:
    def __init__(self, **kwargs):
        for key in ("_commit_hash", "_original_object_hash"):
            kwargs.pop(key, None)
        from_model_config = kwargs.pop("_from_model_config", None)
        self.transformers_version = kwargs.pop("transformers_version", None)
        for name in FIELDS:
            setattr(self, name, kwargs.pop(name, None))
        self._from_model_config = from_model_config
        # A model config's other keys (hidden_size, ...) are not generation settings: keep
        # unknown keys only when the dict is a generation config of its own.
        if not from_model_config:
            for key, value in kwargs.items():
                setattr(self, key, value)
        self.validate()

    def __setattr__(self, name, value):
        # transformers takes the watermarking settings as a dict too; either way one WatermarkingConfig is kept
        if name == "watermarking_config" and isinstance(value, dict):
            value = WatermarkingConfig.from_dict(value)
        super().__setattr__(name, value)

    # -- checks ---------------------------------------------------------------------------
    def validate(self):
        """Raise ValueError for a setting generate() cannot run with, naming the field and the value."""
        for arg in GENERATE_ARGUMENTS:
            if arg in self.__dict__:
                raise ValueError(
                    f"`{arg}` is not a valid argument of `GenerationConfig`. It should be passed to `generate()` directly."
                )
        if self.early_stopping not in (None, True, False, "never"):
            raise ValueError(f"`early_stopping` must be a boolean or 'never', but is {self.early_stopping}.")
        if self.max_new_tokens is not None and self.max_new_tokens <= 0:
            raise ValueError(f"`max_new_tokens` must be greater than 0, but is {self.max_new_tokens}.")
        if self.max_length is not None and self.max_length <= 0:
            raise ValueError(f"`max_length` must be greater than 0, but is {self.max_length}.")
        for name in ("min_length", "min_new_tokens", "no_repeat_ngram_size", "top_k"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise ValueError(f"`{name}` must be a non-negative integer, but is {value!r}.")
        for name in ("num_beams", "num_return_sequences"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"`{name}` must be a positive integer, but is {value!r}.")
        if self.repetition_penalty is not None and not self.repetition_penalty > 0:
            raise ValueError(f"`repetition_penalty` has to be a strictly positive float, but is {self.repetition_penalty}")
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"`max_time` must be a positive number of seconds, but is {self.max_time}.")
        if self.watermarking_config is not None:
            self.watermarking_config.validate()
        if self.do_sample is True:
            self._validate_sampling()
        if self.num_return_sequences is not None and self.num_return_sequences > 1:
            if self.num_beams is None or self.num_beams == 1:
                if not self.do_sample:
                    raise ValueError(
                        "Greedy methods (do_sample != True) without beam search do not support "
                        f"`num_return_sequences` different than 1 (got {self.num_return_sequences})."
                    )
            elif self.num_return_sequences > self.num_beams:
                raise ValueError(
                    f"`num_return_sequences` ({self.num_return_sequences}) has to be smaller or equal to `num_beams` "
                    f"({self.num_beams})."
                )

    def _validate_sampling(self):
        # transformers raises these when generate() builds its sampling warpers.
        if self.temperature is not None and not self.temperature > 0:
            message = (
                f"`temperature` (={self.temperature}) has to be a strictly positive float, otherwise your next token "
                "scores will be invalid."
            )
            if self.temperature == 0:
                message += " If you're looking for greedy decoding strategies, set `do_sample=False`."
            raise ValueError(message)
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` has to be a float > 0 and <= 1, but is {self.top_p}")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError(f"`min_p` has to be a float in the [0, 1] interval, but is {self.min_p}")
        if self.typical_p is not None and not 0 < self.typical_p <= 1:
            raise ValueError(f"`typical_p` has to be a float > 0 and <= 1, but is {self.typical_p}")

    # -- dict and JSON ----------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Every attribute, None included (transformers adds its own version; we keep the one loaded, if any)."""
        out = {}
        for key, value in self.__dict__.items():
            if key == "_original_object_hash":
                continue
            if key == "transformers_version" and value is None:
                continue
            out[key] = value.to_dict() if isinstance(value, WatermarkingConfig) else copy.deepcopy(value)
        return out

    def to_diff_dict(self) -> dict:
        """The attributes that differ from a fresh GenerationConfig(): what is set."""
        return {k: v for k, v in self.to_dict().items() if k not in FIELDS or v is not None}

    def to_json_string(self, use_diff: bool = True, ignore_metadata: bool = False) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        if ignore_metadata:
            for key in METADATA_FIELDS:
                data.pop(key, None)
        data = {k: v for k, v in data.items() if not (k == "_from_model_config" and v is None)}
        return json.dumps(_string_keys(data), indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string(ignore_metadata=True)}"

    def __eq__(self, other):
        if not isinstance(other, GenerationConfig):
            return NotImplemented
        return self.to_json_string(use_diff=False, ignore_metadata=True) == other.to_json_string(
            use_diff=False, ignore_metadata=True
        )

    __hash__ = None

    def update(self, defaults_only: bool = False, **kwargs) -> dict:
        """Set the attributes named in kwargs (only unset ones with defaults_only); return the kwargs not used."""
        used = []
        for key, value in kwargs.items():
            if key in self.__dict__ and not key.startswith("_") and key != "transformers_version":
                if not defaults_only or getattr(self, key) is None:
                    setattr(self, key, value)
                used.append(key)
        self.validate()
        return {k: v for k, v in kwargs.items() if k not in used}

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        config = cls(**{**config_dict, **kwargs})
        unused = config.update(**kwargs)
        return (config, unused) if return_unused_kwargs else config

    @classmethod
    def from_model_config(cls, model_config) -> "GenerationConfig":
        """The generation settings a model config carries (special tokens, use_cache, ...); other keys are dropped."""
        config_dict = model_config if isinstance(model_config, dict) else model_config.to_dict()
        config_dict = {k: v for k, v in config_dict.items() if v is not None and k != "_from_model_config"}
        config = cls(**config_dict, _from_model_config=True)
        # Composite configs keep the generation keys in their text decoder's config.
        for name in ("decoder", "generator", "text_config"):
            inner = config_dict.get(name)
            if inner is not None:
                inner = inner if isinstance(inner, dict) else inner.to_dict()
                config.update(defaults_only=True, **{k: v for k, v in inner.items() if k in FIELDS})
                break
        if not config.return_dict_in_generate and any(getattr(config, flag) for flag in OUTPUT_FLAGS):
            config.return_dict_in_generate = True
        return config

    # -- files ------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name, config_file_name=None, **kwargs):
        """Read generation_config.json from a model folder (or a hub name resolved like the model's)."""
        from ..hub import resolve_model_path

        for key in ("cache_dir", "revision", "token", "local_files_only", "force_download", "subfolder", "proxies"):
            kwargs.pop(key, None)
        path = Path(pretrained_model_name)
        if not path.is_dir():
            path = resolve_model_path(pretrained_model_name)
        config_file = path / (config_file_name or GENERATION_CONFIG_NAME)
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} has no {config_file.name}")
        config_dict = read_json(config_file)
        if not isinstance(config_dict, dict):
            raise ValueError(f"{config_file} must hold a JSON object, not {type(config_dict).__name__}")
        try:
            return cls.from_dict(config_dict, **kwargs)
        except ValueError as err:
            raise ValueError(f"{config_file}: {err}") from None

    def save_pretrained(self, save_directory, config_file_name=None):
        """Write the set fields to generation_config.json, atomically; refuses an invalid config."""
        self.validate()
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_pretrained needs a directory, but {save_directory} is a file")
        save_directory.mkdir(parents=True, exist_ok=True)
        target = save_directory / (config_file_name or GENERATION_CONFIG_NAME)
        write_atomic(target, self.to_json_string(use_diff=True).encode())


def _string_keys(value):
    """JSON object keys must be strings (sequence_bias and the like can have tuple or int keys)."""
    if isinstance(value, dict):
        return {str(k): _string_keys(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_string_keys(v) for v in value]
    return value
