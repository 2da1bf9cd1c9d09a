"""model_type -> (config class, model classes per task), and the Auto* classes over it."""

from .config import load_config_dict
from .hub import resolve_model_path
from .models.base import drop_replaced_labels
from .models.bert import (BertConfig, BertForMaskedLM, BertForMultipleChoice, BertForQuestionAnswering,
                          BertForSequenceClassification, BertForTokenClassification, BertModel)
from .models.gemma3 import Gemma3ForCausalLM, Gemma3TextConfig, Gemma3TextForSequenceClassification, Gemma3TextModel
from .models.gpt2 import (GPT2Config, GPT2ForQuestionAnswering, GPT2ForSequenceClassification,
                          GPT2ForTokenClassification, GPT2LMHeadModel, GPT2Model)
from .models.llama import (LlamaConfig, LlamaForCausalLM, LlamaForQuestionAnswering, LlamaForSequenceClassification,
                           LlamaForTokenClassification, LlamaModel, MistralConfig, Qwen2Config, Qwen3Config)

# model_type -> {"config": class, task: model class}; Mistral and Qwen share the Llama classes, with their own
# configs.
REGISTRY = {
    "llama": {"config": LlamaConfig, "base": LlamaModel, "causal-lm": LlamaForCausalLM,
              "sequence-classification": LlamaForSequenceClassification,
              "token-classification": LlamaForTokenClassification, "question-answering": LlamaForQuestionAnswering},
    "gpt2": {"config": GPT2Config, "base": GPT2Model, "causal-lm": GPT2LMHeadModel,
             "sequence-classification": GPT2ForSequenceClassification,
             "token-classification": GPT2ForTokenClassification, "question-answering": GPT2ForQuestionAnswering},
    "bert": {"config": BertConfig, "base": BertModel, "masked-lm": BertForMaskedLM,
             "sequence-classification": BertForSequenceClassification,
             "token-classification": BertForTokenClassification, "question-answering": BertForQuestionAnswering,
             "multiple-choice": BertForMultipleChoice},
    "gemma3_text": {"config": Gemma3TextConfig, "base": Gemma3TextModel, "causal-lm": Gemma3ForCausalLM,
                    "sequence-classification": Gemma3TextForSequenceClassification},
}
REGISTRY["smollm"] = REGISTRY["llama"]
for config_class in (MistralConfig, Qwen2Config, Qwen3Config):
    REGISTRY[config_class.model_type] = {**REGISTRY["llama"], "config": config_class}


def registry_entry(model_type, source) -> dict:
    if model_type is None:
        raise ValueError(f"{source}: config.json has no 'model_type'; known types: {', '.join(sorted(REGISTRY))}")
    if model_type not in REGISTRY:
        raise ValueError(f"{source}: unknown model_type {model_type!r}; known types: {', '.join(sorted(REGISTRY))}")
    return REGISTRY[model_type]


def config_from_dict(config_dict: dict, source="config", **kwargs):
    entry = registry_entry(config_dict.get("model_type"), source)
    return entry["config"].from_dict(config_dict, **kwargs)


class AutoConfig:
    def __init__(self):
        raise TypeError("AutoConfig is built with AutoConfig.from_pretrained(...) or AutoConfig.for_model(...)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, gguf_file=None, revision=None, **kwargs):
        for key in ("cache_dir", "token", "local_files_only", "trust_remote_code"):
            kwargs.pop(key, None)
        path = resolve_model_path(pretrained_model_name_or_path, gguf_file=gguf_file, revision=revision)
        return config_from_dict(load_config_dict(path), source=path, **kwargs)

    @classmethod
    def for_model(cls, model_type: str, **kwargs):
        return registry_entry(model_type, "for_model")["config"](**kwargs)


class AutoModelBase:
    task = "base"

    def __init__(self):
        raise TypeError(f"{type(self).__name__} is built with .from_pretrained(...) or .from_config(config)")

    @classmethod
    def model_class(cls, config, source):
        entry = registry_entry(config.model_type, source)
        if cls.task not in entry:
            tasks = [t for t in entry if t != "config"]
            raise ValueError(f"{source}: model_type {config.model_type!r} has no {cls.__name__} class; it has: "
                             f"{', '.join(tasks)}")
        return entry[cls.task]

    @classmethod
    def from_config(cls, config, **kwargs):
        return cls.model_class(config, "from_config")(config, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *, config=None, gguf_file=None, revision=None, **kwargs):
        path = resolve_model_path(pretrained_model_name_or_path, gguf_file=gguf_file, revision=revision)
        if config is None:
            config_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in CONFIG_OVERRIDES}
            config = config_from_dict(drop_replaced_labels(load_config_dict(path), config_kwargs), source=path,
                                      **config_kwargs)
        return cls.model_class(config, path).from_pretrained(path, config=config, **kwargs)


# from_pretrained keyword arguments that belong to the config rather than to the loading
CONFIG_OVERRIDES = ("num_labels", "id2label", "label2id", "problem_type", "output_hidden_states",
                    "output_attentions", "use_cache", "pad_token_id", "bos_token_id", "eos_token_id",
                    "rope_scaling", "rope_parameters", "attention_dropout", "hidden_dropout_prob",
                    "attention_probs_dropout_prob", "classifier_dropout", "max_position_embeddings")


class AutoModel(AutoModelBase):
    task = "base"


class AutoModelForCausalLM(AutoModelBase):
    task = "causal-lm"


class AutoModelForMaskedLM(AutoModelBase):
    task = "masked-lm"


class AutoModelForSequenceClassification(AutoModelBase):
    task = "sequence-classification"


class AutoModelForTokenClassification(AutoModelBase):
    task = "token-classification"


class AutoModelForQuestionAnswering(AutoModelBase):
    task = "question-answering"


class AutoModelForMultipleChoice(AutoModelBase):
    task = "multiple-choice"
