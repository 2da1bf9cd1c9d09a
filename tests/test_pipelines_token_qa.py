"""token-classification (ner) against transformers' pipeline, and question-answering against transformers 4.x's
(v5 removed that pipeline, so its decoding is restated here on transformers' own tokenizer and model)."""

import functools
import json

import pytest
import torch
import transformers
from test_pipelines import assert_same

from leanformers import AutoTokenizer, pipeline
from leanformers.pipelines import task_entry

TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
NER_LABELS = {"id2label": dict(enumerate(TAGS)), "label2id": {tag: i for i, tag in enumerate(TAGS)}}
# A random BERT with one layer keeps tokens apart (deeper, its tokens all get one label)
VARIED = {"initializer_range": 0.3, "num_hidden_layers": 1}
NER_TEXTS = ["My name is Wolfgang and I live in Berlin.",
             "Hugging Face Inc. is a company based in New York City; its headquarters are in DUMBO.",
             "Arnold Schwarzenegger met Tchaikovsky's unaffordable naïveté in Llanfairpwllgwyngyll 🚀 yesterday!",
             "ok"]
STRATEGIES = ["none", "simple", "first", "average", "max"]

SHORT = "My name is Wolfgang and I live in Berlin, the capital of Germany. I work as a teacher."
LONG = " ".join([
    "The Amazon rainforest covers much of the Amazon basin of South America.",
    "This basin encompasses seven million square kilometres, of which five and a half million are covered by "
    "the rainforest.",
    "The region includes territory belonging to nine nations and 3,344 formally acknowledged indigenous "
    "territories.",
    "The majority of the forest, 60%, is in Brazil, followed by Peru with 13%, Colombia with 10%, and with minor "
    "amounts in Bolivia, Ecuador, French Guiana, Guyana, Suriname, and Venezuela."] * 6)  # > 384 tokens
WHERE = {"question": "Where does Wolfgang live?", "context": SHORT}
HOW_MUCH = {"question": "How much of the forest is in Brazil?", "context": LONG}


@pytest.fixture(scope="module")
def tagger(bert_pipeline_checkpoint):
    return bert_pipeline_checkpoint("BertForTokenClassification", **VARIED, **NER_LABELS)


@pytest.fixture(scope="module")
def reader(bert_pipeline_checkpoint):
    return bert_pipeline_checkpoint("BertForQuestionAnswering", **VARIED, max_position_embeddings=512)


@pytest.fixture(scope="module")
def bpe_tagger(tmp_path_factory):
    """A tiny BERT tagger over a byte-level BPE tokenizer, which does not mark a word's inner pieces (no "##"),
    so words are found from the spaces in the text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(NER_TEXTS * 3, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    folder = tmp_path_factory.mktemp("bpe-tagger")
    backend.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "model_max_length": 128}))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=backend.get_vocab_size(), hidden_size=32, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=128, **VARIED, **NER_LABELS)
    transformers.BertForTokenClassification(config).save_pretrained(folder)
    return folder


def both(task, folder, **kwargs):
    """transformers' pipeline (its scores made Python floats, as ours are) and ours."""
    ref = transformers.pipeline(task, model=str(folder), **kwargs)
    return (lambda *args, **call: plain(ref(*args, **call))), pipeline(task, model=str(folder), **kwargs)


def plain(value):
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    return value.item() if hasattr(value, "item") else value


# -- token-classification ------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_token_classification_matches_transformers(tagger, strategy):
    ref, ours = both("ner", tagger, aggregation_strategy=strategy)
    assert_same(ours(NER_TEXTS[2]), ref(NER_TEXTS[2]))
    for ignore in ([], ["O", "I-PER", "LOC"]):
        want = ref(NER_TEXTS, ignore_labels=ignore)
        assert_same(ours(NER_TEXTS, ignore_labels=ignore), want)
        assert sum(map(len, want)) > 0


def test_token_classification_strategies_differ_on_subwords(tagger):
    """The texts hold words of several pieces that the strategies label differently, so the parity test above
    tells the strategies apart; and the default leaves out the "O" tokens."""
    ours = pipeline("token-classification", model=str(tagger))
    words = {s: json.dumps(ours(NER_TEXTS, aggregation_strategy=s, ignore_labels=[])) for s in STRATEGIES[1:]}
    assert len(set(words.values())) == 4
    tokens = ours(NER_TEXTS, ignore_labels=[])
    assert {t["entity"] for text in tokens for t in text} >= {"O", "B-LOC", "I-LOC", "I-PER"}
    assert [[t for t in text if t["entity"] != "O"] for text in tokens] == ours(NER_TEXTS)
    tokens = tokens[2]
    unknown = [t for t in tokens if t["word"] == "🚀"]  # [UNK] shows the text it stands for
    assert len(unknown) == 1 and NER_TEXTS[2][unknown[0]["start"]:unknown[0]["end"]] == "🚀"


@pytest.mark.parametrize("strategy", ["none", "first", "average"])
@pytest.mark.filterwarnings("ignore:Tokenizer does not support real words")
def test_token_classification_without_subword_marks_matches_transformers(bpe_tagger, strategy):
    ref, ours = both("token-classification", bpe_tagger, aggregation_strategy=strategy, ignore_labels=[])
    want = ref(NER_TEXTS)
    assert_same(ours(NER_TEXTS), want)
    assert any(len(t["word"]) > 1 for text in want for t in text)


def test_token_classification_batched_equals_unbatched(tagger):
    ours = pipeline("ner", model=str(tagger), aggregation_strategy="average")
    assert_same(ours(NER_TEXTS * 3, batch_size=8), ours(NER_TEXTS * 3), atol=1e-5)
    assert_same(ours(NER_TEXTS, batch_size=8, ignore_labels=[]), ours(NER_TEXTS, ignore_labels=[]), atol=1e-5)


# -- question-answering ---------------------------------------------------------------------------------------
@functools.cache
def transformers_reader(folder: str):
    return (transformers.AutoTokenizer.from_pretrained(folder),
            transformers.AutoModelForQuestionAnswering.from_pretrained(folder).eval())


def transformers_4_answers(folder, item, top_k=1, max_answer_len=15, handle_impossible_answer=False,
                           max_seq_len=None, doc_stride=None, align_to_words=True):
    """transformers 4.x's question-answering pipeline, restated on transformers' tokenizer and model (this
    restatement gave the very outputs of transformers 4.57.3's pipeline when these tests were written).

    Each window of the context gets start and end probabilities over its context tokens and [CLS]; its
    2 * top_k + 10 best spans (top_k without align_to_words), widened to whole words, become answers, and answers
    of the same text (in any case) add their scores; "" scores the least P([CLS] start) * P([CLS] end)."""
    tokenizer, model = transformers_reader(str(folder))
    max_seq_len = max_seq_len or min(tokenizer.model_max_length, 384)
    windows = tokenizer(item["question"], item["context"], truncation="only_second", max_length=max_seq_len,
                        stride=min(max_seq_len // 2, 128) if doc_stride is None else doc_stride,
                        return_overflowing_tokens=True)
    found, null_scores = [], []
    for i, encoding in enumerate(windows.encodings):
        with torch.no_grad():
            out = model(**{k: torch.tensor([windows[k][i]]) for k in ("input_ids", "token_type_ids", "attention_mask")})
        seen = torch.tensor([s == 1 or t == 0 for t, s in enumerate(encoding.sequence_ids)])
        p_start = out.start_logits[0].masked_fill(~seen, -1e4).softmax(-1)
        p_end = out.end_logits[0].masked_fill(~seen, -1e4).softmax(-1)
        null_scores.append(float(p_start[0] * p_end[0]))
        context = [t for t, s in enumerate(encoding.sequence_ids) if s == 1]
        products = (p_start[:, None] * p_end[None, :]).tolist()
        spans = sorted(((products[a][b], a, b) for a in context for b in context if a <= b < a + max_answer_len),
                       reverse=True)
        for score, a, b in spans[:2 * top_k + 10 if align_to_words else top_k]:
            if align_to_words:
                a_chars = encoding.word_to_chars(encoding.token_to_word(a), 1)
                b_chars = encoding.word_to_chars(encoding.token_to_word(b), 1)
            else:
                a_chars, b_chars = encoding.offsets[a], encoding.offsets[b]
            text = item["context"][a_chars[0]:b_chars[1]]
            same = [answer for answer in found if answer["answer"].lower() == text.lower()]
            if same:
                same[0]["score"] += score
            else:
                found.append({"score": score, "start": a_chars[0], "end": b_chars[1], "answer": text})
    if handle_impossible_answer:
        found.append({"score": min(null_scores), "start": 0, "end": 0, "answer": ""})
    found = sorted(found, key=lambda answer: answer["score"], reverse=True)[:top_k]
    return found[0] if len(found) == 1 else found


QA_CASES = [
    (WHERE, {}),
    (WHERE, {"top_k": 3}),
    (WHERE, {"top_k": 5, "max_answer_len": 2}),
    (WHERE, {"top_k": 2, "handle_impossible_answer": True}),
    (WHERE, {"top_k": 4, "align_to_words": False}),
    (HOW_MUCH, {}),
    (HOW_MUCH, {"top_k": 4}),
    (HOW_MUCH, {"top_k": 3, "max_seq_len": 48, "doc_stride": 16}),
    (HOW_MUCH, {"top_k": 3, "max_seq_len": 48, "doc_stride": 16, "handle_impossible_answer": True}),
    (HOW_MUCH, {"top_k": 2, "max_seq_len": 32, "doc_stride": 5, "max_answer_len": 4}),
    ({**HOW_MUCH, "context": SHORT}, {"top_k": 3, "max_seq_len": 20, "doc_stride": 4, "align_to_words": False}),
]


@pytest.mark.parametrize(("item", "kwargs"), QA_CASES, ids=[f"{i}" for i in range(len(QA_CASES))])
def test_question_answering_matches_transformers_4(reader, item, kwargs):
    ours = pipeline("question-answering", model=str(reader))
    want = transformers_4_answers(reader, item, **kwargs)
    assert_same(ours(item, **kwargs), want)
    answers = want if isinstance(want, list) else [want]
    assert all(item["context"][a["start"]:a["end"]] == a["answer"] for a in answers)
    assert len(answers) == kwargs.get("top_k", 1)


def test_question_answering_windows_match_transformers_tokenizer(reader):
    """The overlapping windows of a long context (only_second truncation, stride, overflowing tokens) are
    transformers' own, token for token, with the same offsets and word spans."""
    ours, theirs = AutoTokenizer.from_pretrained(reader), transformers.AutoTokenizer.from_pretrained(str(reader))
    for max_length, stride in ((384, 128), (48, 16), (32, 5), (20, 4)):
        kwargs = dict(truncation="only_second", max_length=max_length, stride=stride, return_overflowing_tokens=True,
                      return_offsets_mapping=True)
        got, want = ours(HOW_MUCH["question"], LONG, **kwargs), theirs(HOW_MUCH["question"], LONG, **kwargs)
        assert dict(got) == dict(want)
        assert len(got["input_ids"]) > 1
        for a, b in zip(got.encodings, want.encodings, strict=True):
            assert a.sequence_ids == b.sequence_ids and a.word_ids == b.word_ids
            words = {w for w, s in zip(b.word_ids, b.sequence_ids, strict=True) if s == 1}
            assert [a.word_to_chars(w, 1) for w in words] == [b.word_to_chars(w, 1) for w in words]


def test_question_answering_no_answer_and_long_questions(reader):
    ours = pipeline("question-answering", model=str(reader))
    want = transformers_4_answers(reader, WHERE, top_k=50, handle_impossible_answer=True)
    got = ours(WHERE, top_k=50, handle_impossible_answer=True)
    assert_same(got, want)
    assert [a for a in got if a["answer"] == ""] == [a for a in got if (a["start"], a["end"]) == (0, 0)]
    assert len([a for a in got if a["answer"] == ""]) == 1
    assert "" not in [a["answer"] for a in ours(WHERE, top_k=50)]
    # max_question_len keeps the question's first tokens
    question = "How much of the forest, the largest rainforest on the planet, lies in Brazil?"
    cut = transformers_4_answers(reader, {"question": "How much of the forest", "context": SHORT}, top_k=3)
    assert_same(ours(question=question, context=SHORT, max_question_len=5, top_k=3), cut)
    assert ours(question=question, context=SHORT, top_k=3) != ours(question=question, context=SHORT, top_k=3,
                                                                  max_question_len=5)


def test_question_answering_inputs_batches_and_streams(reader):
    ours = pipeline("question-answering", model=str(reader))
    items = [WHERE, HOW_MUCH, {**WHERE, "question": "What is his job?"}, {**HOW_MUCH, "question": "Which river?"}]
    one_by_one = [ours(item, top_k=2) for item in items]
    assert_same(ours(items, top_k=2), one_by_one)
    assert_same(ours(items * 3, top_k=2, batch_size=8), one_by_one * 3, atol=1e-5)
    assert_same(ours(WHERE["question"], WHERE["context"], top_k=2), one_by_one[0])
    assert_same(ours(question=[WHERE["question"], items[2]["question"]], context=SHORT, top_k=2),
                [one_by_one[0], one_by_one[2]])
    assert_same(ours(question=[i["question"] for i in items], context=[i["context"] for i in items], top_k=2),
                one_by_one)
    assert_same(ours([HOW_MUCH], top_k=2), one_by_one[1])  # transformers answers a one-item list as the item
    assert_same(ours(WHERE, top_k=None), ours(WHERE))  # None: transformers' default, the best answer alone
    assert isinstance(ours(WHERE), dict)
    stream = ours(iter(items), top_k=2, batch_size=2)
    assert not isinstance(stream, list)
    assert_same(list(stream), one_by_one)


def test_question_answering_bad_input(reader):
    ours = pipeline("question-answering", model=str(reader))
    with pytest.raises(ValueError, match="needs a question and a context; the context is missing"):
        ours(question="Where does Wolfgang live?")
    with pytest.raises(ValueError, match="the question is missing"):
        ours(context=SHORT)
    with pytest.raises(ValueError, match="the context is an empty string"):
        ours(question="Where?", context="")
    with pytest.raises(ValueError, match="the question is an empty string"):
        ours({"question": "  ", "context": SHORT})
    with pytest.raises(ValueError, match="a dict with 'question' and 'context'"):
        ours([WHERE, {"question": "Where?"}])
    with pytest.raises(ValueError, match="2 questions but 1 contexts"):
        ours(question=["Who?", "Where?"], context=[SHORT])
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        ours(WHERE, top_k=0)
    with pytest.raises(ValueError, match="max_answer_len must be an integer >= 1, got 0"):
        ours(WHERE, max_answer_len=0)
    with pytest.raises(ValueError, match="must be more than doc_stride=6 for the windows to advance"):
        ours(HOW_MUCH, max_seq_len=16, doc_stride=6)
    with pytest.raises(TypeError, match="takes no argument\\(s\\) aggregation_strategy"):
        ours(WHERE, aggregation_strategy="simple")


def test_token_classification_bad_input(tagger):
    assert task_entry("ner")[0] == "token-classification"
    ours = pipeline("ner", model=str(tagger))
    with pytest.raises(ValueError, match="aggregation_strategy='maximum' is not one of none, simple, first, average"):
        ours(NER_TEXTS[0], aggregation_strategy="maximum")
    with pytest.raises(ValueError, match="aggregation_strategy='words' is not one of"):
        pipeline("ner", model=str(tagger), aggregation_strategy="words")
    with pytest.raises(ValueError, match="the input is an empty string"):
        ours("")
    with pytest.raises(TypeError, match="takes no argument\\(s\\) top_k"):
        ours(NER_TEXTS[0], top_k=0)
    assert_same(ours(NER_TEXTS[0], aggregation_strategy="SIMPLE"), ours(NER_TEXTS[0], aggregation_strategy="simple"))
