"""Stand-ins for sentiment-analysis and zero-shot-classification when their default models cannot be had
(offline and not in the Hugging Face cache): a causal LM, the bundled SmolLM2-Instruct, scores each
candidate label by the log-likelihood of its words after a fixed prompt, and the scores are returned in
transformers' shapes for those tasks.

Sentiment: a two-example prompt ("Review: ...\\nSentiment: positive"), then the text; the log-likelihoods
of " positive" and " negative" are softmaxed into POSITIVE / NEGATIVE scores. Zero-shot: "Text: ...\\n"
followed by the hypothesis for each label ("This text is about {label}."); the labels' log-likelihoods
are softmaxed across labels, or, with multi_label (or a single label), each is compared with the same
hypothesis after a content-free text: sigmoid(log p(hypothesis | text) - log p(hypothesis | "N/A")), so a
label scores high when the text makes it more likely than it is a priori.
"""

import torch

from .base import Pipeline, check_text, left_padded
from .text_classification import TextClassificationPipeline, classification_result
from .zero_shot_classification import ZeroShotClassificationPipeline, check_inputs, ranked_result

SENTIMENT_PROMPT = ("Review: The room was great.\nSentiment: positive\n\n"
                    "Review: The food was awful.\nSentiment: negative\n\n"
                    "Review: {text}\nSentiment:")
SENTIMENT_LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
SENTIMENT_WORDS = [" negative", " positive"]
TOPIC_PROMPT = "Text: {text}\n"
CONTENT_FREE_TEXT = "N/A"


class LikelihoodPipeline(Pipeline):
    """Features are a prompt followed by a continuation; forward gives each the summed log-probability of
    its continuation's tokens."""

    def features(self, prompt: str, continuations: list[str]) -> list[dict]:
        # Prompt and continuation are tokenized apart, so the scored tokens are exactly the continuation's.
        prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        features = []
        for continuation in continuations:
            ids = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            features.append({"input_ids": prompt_ids + ids, "scored": len(ids)})
        return features

    def forward(self, features, **params):
        fill = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids, mask = left_padded([f["input_ids"] for f in features], fill)
        # Left padding puts every continuation in the last columns: logits are needed only there.
        keep = max(f["scored"] for f in features) + 1
        with torch.inference_mode():
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False,
                                logits_to_keep=keep).logits
        logprobs = logits[:, :-1].float().log_softmax(-1)  # (B, keep - 1, V): predictions of the last keep - 1
        targets = ids[:, -(keep - 1):].to(logprobs.device)
        token_logprobs = logprobs.gather(-1, targets[..., None]).squeeze(-1).cpu()
        return [{"score": float(token_logprobs[i, -f["scored"]:].sum())} for i, f in enumerate(features)]


class LikelihoodSentimentPipeline(LikelihoodPipeline):
    task = "text-classification"
    parameters = {"top_k": 1}
    single_result = TextClassificationPipeline.single_result

    def preprocess(self, item, **params):
        check_text(item)
        return self.features(SENTIMENT_PROMPT.format(text=item), SENTIMENT_WORDS)

    def postprocess(self, outputs, item, top_k=1, given=(), **params):
        scores = torch.tensor([o["score"] for o in outputs]).softmax(-1)
        return classification_result(scores, SENTIMENT_LABELS, top_k, given)


def scored_alone(labels: list, multi_label: bool) -> bool:
    """Each label scored on its own (as transformers does for one label too: a softmax over one is 1)."""
    return multi_label or len(labels) == 1


class LikelihoodZeroShotPipeline(LikelihoodPipeline, ZeroShotClassificationPipeline):
    """Takes zero-shot's arguments, checks and call forms from ZeroShotClassificationPipeline; scores labels
    with the causal LM (see the module's docstring) instead of an NLI head."""
    parameters = {**ZeroShotClassificationPipeline.parameters, "hypothesis_template": "This text is about {}."}

    def __init__(self, model, tokenizer=None, **kwargs):
        # ZeroShotClassificationPipeline's check for an entailment label is about NLI heads; a causal LM has none.
        Pipeline.__init__(self, model, tokenizer, **kwargs)

    def preprocess(self, item, candidate_labels=None, hypothesis_template="", multi_label=False, **params):
        check_inputs(item, candidate_labels)
        hypotheses = [hypothesis_template.format(label) for label in candidate_labels]
        features = self.features(TOPIC_PROMPT.format(text=item), hypotheses)
        if scored_alone(candidate_labels, multi_label):
            features += self.features(TOPIC_PROMPT.format(text=CONTENT_FREE_TEXT), hypotheses)
        return features

    def postprocess(self, outputs, item, candidate_labels=None, multi_label=False, **params):
        scores = torch.tensor([o["score"] for o in outputs])
        count = len(candidate_labels)
        if scored_alone(candidate_labels, multi_label):
            scores = (scores[:count] - scores[count:]).sigmoid()
        else:
            scores = scores.softmax(-1)
        return ranked_result(item, candidate_labels, scores.tolist())
