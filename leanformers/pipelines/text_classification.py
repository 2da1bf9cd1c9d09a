"""text-classification (alias sentiment-analysis): a label and score per text or text pair."""

import torch

from .base import Pipeline, check_text

FUNCTIONS = ("softmax", "sigmoid", "none")


def default_function(config) -> str:
    """transformers' choice: none for regression, sigmoid for multi-label or a single label, else softmax."""
    if config.problem_type == "regression":
        return "none"
    if config.problem_type == "multi_label_classification" or config.num_labels == 1:
        return "sigmoid"
    return "softmax"


def scores_of(logits: torch.Tensor, function: str) -> torch.Tensor:
    if function == "softmax":
        return logits.softmax(-1)
    return logits.sigmoid() if function == "sigmoid" else logits


def ranked_labels(scores: torch.Tensor, id2label: dict, top_k) -> list[dict]:
    ranked = [{"label": id2label[i], "score": float(s)} for i, s in enumerate(scores)]
    ranked.sort(key=lambda r: r["score"], reverse=True)
    return ranked if top_k is None else ranked[:top_k]


def classification_result(scores: torch.Tensor, id2label: dict, top_k, given):
    """transformers' shapes: the top_k best labels (all for None) when top_k is passed, else the best alone."""
    ranked = ranked_labels(scores, id2label, top_k if "top_k" in given else None)
    return ranked if "top_k" in given else ranked[0]


class TextClassificationPipeline(Pipeline):
    task = "text-classification"
    parameters = {"top_k": 1, "function_to_apply": None, "truncation": True, "max_length": None}

    def checked(self, params):
        params = super().checked(params)
        function = params.get("function_to_apply")
        if function is not None and str(function).lower() not in FUNCTIONS:
            raise ValueError(f"function_to_apply={function!r} is not one of {', '.join(FUNCTIONS)}")
        return params

    def preprocess(self, item, truncation=True, max_length=None, **params):
        if isinstance(item, dict):
            if set(item) - {"text", "text_pair"} or "text" not in item:
                raise ValueError(f"a text pair is a dict with 'text' and 'text_pair', got keys {sorted(item)}")
            check_text(item["text"])
            encoded = self.tokenizer(item["text"], text_pair=item.get("text_pair"), truncation=truncation,
                                     max_length=max_length)
        else:
            check_text(item)
            encoded = self.tokenizer(item, truncation=truncation, max_length=max_length)
        return [dict(encoded)]

    def postprocess(self, outputs, item, top_k=1, function_to_apply=None, given=(), **params):
        function = str(function_to_apply).lower() if function_to_apply is not None else default_function(self.model.config)
        return classification_result(scores_of(outputs[0]["logits"], function), self.model.config.id2label, top_k,
                                     given)

    def single_result(self, result, params, item):
        return [result] if "top_k" not in params["given"] and isinstance(item, str) else result
