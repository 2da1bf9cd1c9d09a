"""question-answering: the span of a context that answers a question, with its score and its characters.

transformers v5 dropped this pipeline; its last version (4.x) is the reference. A context too long for the
model is read in windows of max_seq_len tokens that overlap by doc_stride tokens. In each window the start and
end logits of the context tokens (and of [CLS]) become probabilities, a span's score is P(start) * P(end), and
the best spans of every window are widened to whole words; spans that come out as the same text (in any case)
are one answer whose scores add up.
"""

from collections.abc import Mapping

import torch

from .base import Pipeline, check_text


def check_integer(name: str, value, minimum: int, none_allowed: bool = False):
    if value is None and none_allowed:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def question_context_items(args: tuple, question, context):
    """What transformers accepts: qa(question=..., context=...) with a string or a list for each, qa(question,
    context), or qa(item), qa([items]) or a generator of items, each item a {"question", "context"} dict."""
    if args:
        if question is not None or context is not None or len(args) > 2:
            raise TypeError("give the question and context either as keywords (question=..., context=...) or as "
                            "{'question': ..., 'context': ...} items, not both")
        if len(args) == 2:
            return {"question": args[0], "context": args[1]}
        items = args[0]
    elif question is None or context is None:
        missing = "context" if context is None else "question"
        raise ValueError(f"question-answering needs a question and a context; the {missing} is missing. Call it as "
                         "qa(question=..., context=...) or qa({'question': ..., 'context': ...})")
    elif isinstance(question, str) and isinstance(context, str):
        return {"question": question, "context": context}
    elif isinstance(question, list) and isinstance(context, str):
        items = [{"question": q, "context": context} for q in question]
    elif isinstance(question, list) and isinstance(context, list):
        if len(question) != len(context):
            raise ValueError(f"{len(question)} questions but {len(context)} contexts; give one context for all, "
                             "or one per question")
        items = [{"question": q, "context": c} for q, c in zip(question, context, strict=True)]
    else:
        raise TypeError(f"question and context must be strings or lists of strings, got "
                        f"{type(question).__name__} and {type(context).__name__}")
    # transformers answers a one-item list as it answers the item alone
    if isinstance(items, (list, tuple)) and len(items) == 1:
        return items[0]
    return items


def best_spans(start: torch.Tensor, end: torch.Tensor, answerable: torch.Tensor, max_answer_len: int, k: int):
    """The k best (score, first token, last token) spans of answerable tokens, at most max_answer_len long."""
    length = start.shape[0]
    order = torch.ones(length, length, dtype=torch.bool)
    fits = order.triu() & ~order.triu(max_answer_len)  # first <= last < first + max_answer_len
    valid = fits & answerable[:, None] & answerable[None, :]
    scores = (start[:, None] * end[None, :]).masked_fill(~valid, -1.0).flatten()  # (T * T,)
    top = scores.topk(min(k, int(valid.sum())))
    return [(score, index // length, index % length)
            for score, index in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


class QuestionAnsweringPipeline(Pipeline):
    task = "question-answering"
    parameters = {"top_k": 1, "doc_stride": None, "max_answer_len": 15, "max_seq_len": None, "max_question_len": 64,
                  "handle_impossible_answer": False, "align_to_words": True}
    token_outputs = ("start_logits", "end_logits")

    def __call__(self, *args, question=None, context=None, **params):
        return super().__call__(question_context_items(args, question, context), **params)

    def checked(self, params):
        params = super().checked(params)
        if "top_k" in params and params["top_k"] is None:  # transformers reads None as its default: one answer
            params = {**params, "top_k": 1}
        for name, minimum in (("max_answer_len", 1), ("max_question_len", 1), ("doc_stride", 0), ("max_seq_len", 1)):
            if name in params:
                check_integer(name, params[name], minimum, none_allowed=self.parameters[name] is None)
        return params

    def preprocess(self, item, doc_stride=None, max_seq_len=None, max_question_len=64, align_to_words=True,
                   **params):
        if not isinstance(item, Mapping) or not {"question", "context"} <= set(item):
            raise ValueError(f"a question-answering input is a dict with 'question' and 'context', got {item!r:.80}")
        question, context = item["question"], item["context"]
        check_text(question, "question")
        check_text(context, "context")
        max_seq_len = max_seq_len or min(self.tokenizer.model_max_length, 384)
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
        question = self.fitted_question(question, context, max_seq_len, doc_stride, max_question_len)
        # transformers puts the context on the side that gets truncated: second, unless the tokenizer pads left
        question_first = self.tokenizer.padding_side == "right"
        pair = (question, context) if question_first else (context, question)
        encoded = self.tokenizer(*pair, truncation="only_second" if question_first else "only_first",
                                 max_length=max_seq_len, stride=doc_stride, return_overflowing_tokens=True)
        side = 1 if question_first else 0
        features = []
        for i, encoding in enumerate(encoded.encodings):
            feature = {name: encoded[name][i] for name in ("input_ids", "attention_mask", "token_type_ids")
                       if name in encoded}
            # per token, the characters of the context an answer starting or ending there covers (None: not context)
            feature["char_spans"] = [answer_chars(encoding, t, side, align_to_words) if s == side else None
                                     for t, s in enumerate(encoding.sequence_ids)]
            features.append(feature)
        return features

    def fitted_question(self, question: str, context: str, max_seq_len: int, doc_stride: int,
                        max_question_len: int) -> str:
        """The question cut to max_question_len tokens (as transformers documents; its fast-tokenizer path
        never cuts). Refuses windows that would hold no context, or that would not advance through it."""
        offsets = self.tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) > max_question_len:
            question = question[:offsets[max_question_len - 1][1]]
        question_tokens = min(len(offsets), max_question_len)
        room = max_seq_len - self.tokenizer.num_special_tokens_to_add(pair=True) - question_tokens
        if room <= doc_stride and len(self.tokenizer(context, add_special_tokens=False)["input_ids"]) > room:
            raise ValueError(f"the question takes {question_tokens} of the max_seq_len={max_seq_len} tokens, leaving "
                             f"{room} for each window of the context, which must be more than doc_stride={doc_stride}"
                             " for the windows to advance; use a larger max_seq_len, a smaller doc_stride or a "
                             "smaller max_question_len")
        return question

    def postprocess(self, outputs, item, top_k=1, max_answer_len=15, handle_impossible_answer=False,
                    align_to_words=True, **params):
        context = item["context"]
        answers = {}  # lower-cased text -> answer, in the order found
        null_score = None
        # transformers looks at more spans when widening them to words, since several can become one answer
        candidates = 2 * top_k + 10 if align_to_words else top_k
        for window in outputs:
            spans = window["char_spans"]
            answerable = torch.tensor([span is not None for span in spans])
            # [CLS] takes part in the softmax: models trained on unanswerable questions put "no answer" there
            kept = answerable | (torch.tensor(window["input_ids"]) == self.tokenizer.cls_token_id)
            start = window["start_logits"].masked_fill(~kept, float("-inf")).softmax(-1)
            end = window["end_logits"].masked_fill(~kept, float("-inf")).softmax(-1)
            no_answer = float(start[0] * end[0])  # both ends on the first token, [CLS]
            null_score = no_answer if null_score is None else min(null_score, no_answer)
            for score, first, last in best_spans(start, end, answerable, max_answer_len, candidates):
                begin, finish = spans[first][0], spans[last][1]
                text = context[begin:finish]
                if text.lower() in answers:
                    answers[text.lower()]["score"] += score
                else:
                    answers[text.lower()] = {"score": score, "start": begin, "end": finish, "answer": text}
        ranked = list(answers.values())
        if handle_impossible_answer:
            ranked.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        ranked = sorted(ranked, key=lambda a: a["score"], reverse=True)[:top_k]
        return ranked[0] if len(ranked) == 1 else ranked


def answer_chars(encoding, token: int, side: int, align_to_words: bool) -> tuple[int, int]:
    """The characters of a context token, widened to its whole word when align_to_words."""
    word = encoding.token_to_word(token) if align_to_words else None
    if word is None:
        return tuple(encoding.offsets[token])
    return tuple(encoding.word_to_chars(word, side))
