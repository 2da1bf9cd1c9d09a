"""zero-shot-classification: an NLI model scores each candidate label as a hypothesis about the sequence.

Each (sequence, "This example is {label}.") pair is one feature, so the shared forward batches them. The
entailment logit gives the score: a softmax over the labels, or with multi_label each label on its own
(entailment against contradiction).
"""

import warnings

import torch

from .base import Pipeline, check_text


def parse_labels(labels):
    """A list of labels as given, or a comma-separated string of them."""
    if isinstance(labels, str):
        return [label.strip() for label in labels.split(",") if label.strip()]
    return labels


def check_inputs(sequence, candidate_labels):
    check_text(sequence, "sequence")
    if not candidate_labels:
        raise ValueError("zero-shot-classification needs candidate_labels: a list of labels or a "
                         "comma-separated string of them")


def ranked_result(sequence: str, labels: list, scores: list) -> dict:
    """transformers' result: the labels best first; ties put the later label first, as its reversed argsort does."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i), reverse=True)
    return {"sequence": sequence, "labels": [labels[i] for i in order], "scores": [scores[i] for i in order]}


class ZeroShotClassificationPipeline(Pipeline):
    task = "zero-shot-classification"
    parameters = {"candidate_labels": None, "hypothesis_template": "This example is {}.", "multi_label": False}

    def __init__(self, model, tokenizer=None, **kwargs):
        super().__init__(model, tokenizer, **kwargs)
        if self.entailment_id == -1:
            warnings.warn("no label of the model's config starts with 'entail' (label2id: "
                          f"{self.model.config.label2id}); the last logit is taken as entailment, as transformers "
                          "does. Give the model an NLI label2id for meaningful scores.")

    @property
    def entailment_id(self) -> int:
        for label, index in (self.model.config.label2id or {}).items():
            if label.lower().startswith("entail"):
                return index
        return -1

    def checked(self, params):
        params = super().checked(params)
        if "candidate_labels" in params:
            params["candidate_labels"] = parse_labels(params["candidate_labels"])
        if "hypothesis_template" in params:
            template = params["hypothesis_template"]
            try:
                fills = template.format("label") != template
            except (AttributeError, IndexError, KeyError):
                fills = False
            if not fills:
                raise ValueError(f"hypothesis_template={template!r} has no {{}} for the label to go in, as in "
                                 "'This example is {}.'")
        return params

    def preprocess(self, item, candidate_labels=None, hypothesis_template="This example is {}.", **params):
        check_inputs(item, candidate_labels)
        # Only the sequence is cut when the pair is too long, never the hypothesis.
        return [dict(self.tokenizer(item, hypothesis_template.format(label), truncation="only_first"))
                for label in candidate_labels]

    def postprocess(self, outputs, item, candidate_labels=None, multi_label=False, **params):
        logits = torch.stack([output["logits"] for output in outputs])  # (labels, NLI classes)
        entailment = self.entailment_id
        if multi_label or len(outputs) == 1:
            contradiction = -1 if entailment == 0 else 0
            scores = logits[:, [contradiction, entailment]].softmax(-1)[:, 1].tolist()
        else:
            scores = logits[:, entailment].softmax(0).tolist()
        return ranked_result(item, candidate_labels, scores)

    def __call__(self, inputs, *args, batch_size=None, **params):
        # transformers also takes the candidate labels as the second positional argument.
        if args:
            if len(args) > 1 or "candidate_labels" in params:
                raise TypeError(f"give the candidate labels once, as the second argument or candidate_labels=; "
                                f"got {len(args)} positional argument(s) after the sequences")
            params["candidate_labels"] = args[0]
        return super().__call__(inputs, batch_size, **params)
