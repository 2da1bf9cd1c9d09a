"""PretrainedConfig: a model's hyper-parameters, read from and written to config.json.

Attribute names are config.json keys. Keys a family does not know are kept
as attributes too, so loading and saving a config round-trips every key.
"""

import copy
import json
from pathlib import Path

from .files import read_json, write_atomic
from .gguf import gguf_config_dict
from .hub import resolve_model_path

CONFIG_NAME = "config.json"

# What transformers' base PretrainedConfig() holds: to_diff_dict (and so the repr) leaves such a key out
# when it holds both this value and the family's own default.
BASE_DEFAULTS = {
    "architectures": None,
    "output_hidden_states": False,
    "output_attentions": False,
    "return_dict": True,
    "dtype": None,
    "chunk_size_feed_forward": 0,
    "id2label": {0: "LABEL_0", 1: "LABEL_1"},
    "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "problem_type": None,
    "is_encoder_decoder": False,
}

# Keys every config carries, with transformers' defaults (no chunk_size_feed_forward: nothing here chunks
# the feed-forward; a config.json's one is kept as any other key). The special tokens, tying and use_cache
# are fields of each family in transformers v5, not of the base, so they are printed even at their default.
COMMON_DEFAULTS = {
    **{k: v for k, v in BASE_DEFAULTS.items() if k != "chunk_size_feed_forward"},
    "id2label": None,
    "label2id": None,
    "tie_word_embeddings": True,
    "use_cache": True,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
}

# The settings transformers' GenerationConfig fills in by default (its _get_default_generation_params). As
# in transformers v5, a model config drops them when built (generate() still reads the ones a config.json
# holds: see PreTrainedModel.from_pretrained), and generate() and save_pretrained refuse a config they were
# set on afterwards, since they belong in model.generation_config.
GENERATION_PARAMETERS = (
    "max_length", "min_length", "do_sample", "use_cache", "early_stopping", "num_beams", "temperature", "top_k",
    "top_p", "typical_p", "repetition_penalty", "length_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "num_return_sequences", "output_scores",
    "return_dict_in_generate", "forced_bos_token_id", "forced_eos_token_id", "remove_invalid_values",
    "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens", "epsilon_cutoff", "eta_cutoff",
    "encoder_repetition_penalty", "num_assistant_tokens", "num_assistant_tokens_schedule",
    "assistant_confidence_threshold", "assistant_lookbehind", "target_lookbehind", "num_beam_groups",
    "diversity_penalty",
)  # fmt: skip

PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")


class PretrainedConfig:
    model_type = ""
    # The family's own keys and defaults; subclasses fill this in.
    defaults: dict = {}
    # Alternative names transformers accepts for an attribute (GPT-2's n_embd -> hidden_size).
    attribute_map: dict = {}

    def __init__(self, **kwargs):
        kwargs.pop("model_type", None)
        kwargs.pop("transformers_version", None)
        torch_dtype = kwargs.pop("torch_dtype", None)
        num_labels = kwargs.pop("num_labels", None)
        values = {**copy.deepcopy(COMMON_DEFAULTS), **copy.deepcopy(self.defaults)}
        for key in GENERATION_PARAMETERS:
            if key not in values:
                kwargs.pop(key, None)
        for key, value in kwargs.items():
            values[self.attribute_map.get(key, key)] = value
        if values["dtype"] is None and torch_dtype is not None:
            values["dtype"] = torch_dtype
        for key, value in values.items():
            setattr(self, key, value)
        if self.id2label is not None:
            self.id2label = {int(k): v for k, v in self.id2label.items()}
            if num_labels is not None and num_labels != len(self.id2label):
                raise ValueError(
                    f"num_labels={num_labels} disagrees with id2label, which has {len(self.id2label)} labels"
                )
        else:
            self.num_labels = num_labels if num_labels is not None else 2
        if self.label2id is not None:
            self.label2id = {k: int(v) for k, v in self.label2id.items()}
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        self.__post_init__()

    def __post_init__(self):
        """Derived fields (head_dim, num_key_value_heads, ...); families override."""

    def __getattr__(self, name):
        # Only called when normal lookup fails: resolve aliases such as n_embd.
        alias = type(self).attribute_map.get(name)
        if alias is not None:
            return getattr(self, alias)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def __setattr__(self, name, value):
        super().__setattr__(type(self).attribute_map.get(name, name), value)

    @property
    def num_labels(self):
        return len(self.id2label)

    @num_labels.setter
    def num_labels(self, n):
        if self.id2label is None or len(self.id2label) != n:
            self.id2label = {i: f"LABEL_{i}" for i in range(n)}
            self.label2id = {v: k for k, v in self.id2label.items()}

    @property
    def torch_dtype(self):
        return self.dtype

    def __eq__(self, other):
        return type(self) is type(other) and self.to_dict() == other.to_dict()

    def update(self, config_dict: dict):
        """Set the attributes named in `config_dict`."""
        for key, value in config_dict.items():
            setattr(self, key, value)

    def _get_generation_parameters(self) -> dict:
        """Generation settings put on this config by hand (transformers' name): {name: value}."""
        declared = {**COMMON_DEFAULTS, **self.defaults}
        return {key: getattr(self, key) for key in GENERATION_PARAMETERS
                if key not in declared and getattr(self, key, None) is not None}

    # -- dict and JSON ------------------------------------------------------------------
    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        return cls(**{**config_dict, **kwargs})

    def to_dict(self) -> dict:
        out = {"model_type": self.model_type}
        for key, value in self.__dict__.items():
            if key.startswith("_"):
                continue
            if key == "dtype" and value is not None and not isinstance(value, str):
                value = str(value).removeprefix("torch.")
            out[key] = copy.deepcopy(value)
        return out

    def to_diff_dict(self) -> dict:
        """What transformers prints: every key but the base config's ones left at the base's value and
        the family's own default."""
        return {k: v for k, v in self.to_dict().items()
                if k not in BASE_DEFAULTS or BASE_DEFAULTS[k] != v or self.defaults.get(k, v) != v}

    def to_json_string(self, use_diff: bool = True) -> str:
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

    def __repr__(self):
        return f"{type(self).__name__} {self.to_json_string()}"

    # -- files ----------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        gguf_file = kwargs.pop("gguf_file", None)
        for key in ("cache_dir", "revision", "token", "local_files_only", "trust_remote_code"):
            kwargs.pop(key, None)
        path = resolve_model_path(pretrained_model_name_or_path, gguf_file=gguf_file)
        config_dict = load_config_dict(path)
        return cls.from_dict(config_dict, **kwargs)

    def save_pretrained(self, save_directory):
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_pretrained needs a directory, but {save_directory} is a file")
        generation_parameters = self._get_generation_parameters()
        if generation_parameters:
            raise ValueError(
                "Some generation parameters are set in the model config. These should go into "
                "`model.generation_config` as opposed to `model.config`.\n"
                f"Generation parameters found: {generation_parameters}"
            )
        save_directory.mkdir(parents=True, exist_ok=True)
        write_atomic(save_directory / CONFIG_NAME, self.to_json_string(use_diff=False).encode())


def load_config_dict(path) -> dict:
    """The config dict of a resolved model path: a folder's config.json or a GGUF file's metadata."""
    path = Path(path)
    if path.suffix == ".gguf":
        return gguf_config_dict(path)
    config_file = path / CONFIG_NAME
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} has no {CONFIG_NAME}; a model folder needs one")
    config_dict = read_json(config_file)
    if not isinstance(config_dict, dict):
        raise ValueError(f"{config_file} must hold a JSON object, not {type(config_dict).__name__}")
    return config_dict
