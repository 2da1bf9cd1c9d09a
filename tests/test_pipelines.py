"""pipeline(): the factory, the shared batching, and text-classification, against transformers' pipelines."""

import pytest
import transformers

from leanformers import pipeline

LABELS = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
THREE = {"id2label": {0: "anger", 1: "joy", 2: "fear"}, "label2id": {"anger": 0, "joy": 1, "fear": 2}}
TEXTS = ["I loved this film, truly wonderful.", "Terrible service and cold food.", "It was fine, I guess.",
         "An absolute masterpiece of modern cinema, with a score that stays with you for days afterwards.",
         "meh", "The worst purchase I have made this year.", "Bright, warm and full of life!", "ok"]


@pytest.fixture(scope="module")
def classifier(bert_pipeline_checkpoint):
    return bert_pipeline_checkpoint("BertForSequenceClassification", initializer_range=0.3, **LABELS)


def both(task, folder, **kwargs):
    return transformers.pipeline(task, model=str(folder), **kwargs), pipeline(task, model=str(folder), **kwargs)


def assert_same(got, want, atol=1e-4):
    """Equal structure and labels; scores within atol."""
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want)
        for g, w in zip(got, want, strict=True):
            assert_same(g, w, atol)
    elif isinstance(want, dict):
        assert set(got) == set(want)
        for key in want:
            assert_same(got[key], want[key], atol)
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=atol)
    else:
        assert got == want


@pytest.mark.parametrize("kwargs", [{}, {"top_k": None}, {"top_k": 1}, {"top_k": 2},
                                    {"function_to_apply": "sigmoid"}, {"function_to_apply": "none", "top_k": None}])
def test_text_classification_matches_transformers(classifier, kwargs):
    ref, ours = both("sentiment-analysis", classifier)
    assert_same(ours(TEXTS[0], **kwargs), ref(TEXTS[0], **kwargs))
    assert_same(ours(TEXTS, **kwargs), ref(TEXTS, **kwargs))


def test_text_classification_pairs_and_problem_types(bert_pipeline_checkpoint):
    pair = {"text": "A man is playing a guitar.", "text_pair": "Someone makes music."}
    for overrides in ({**THREE}, {**THREE, "problem_type": "multi_label_classification"},
                      {"num_labels": 1, "problem_type": "regression"}, {"num_labels": 1}):
        folder = bert_pipeline_checkpoint("BertForSequenceClassification", initializer_range=0.3, **overrides)
        ref, ours = both("text-classification", folder)
        assert_same(ours(pair), ref(pair))
        assert_same(ours(TEXTS[:3], top_k=None), ref(TEXTS[:3], top_k=None))


def test_batched_results_equal_unbatched_and_a_generator_streams(classifier):
    ours = pipeline("text-classification", model=str(classifier))
    one_by_one = ours(TEXTS * 3, top_k=None)
    assert_same(ours(TEXTS * 3, top_k=None, batch_size=8), one_by_one, atol=1e-5)
    pulled = []

    def texts():
        for text in TEXTS:
            pulled.append(text)
            yield text

    results = ours(texts(), top_k=None, batch_size=2)
    assert pulled == []  # nothing is read before the first result is asked for
    first = next(results)
    assert len(pulled) == 2  # one batch read for it
    assert_same([first, *results], one_by_one[:len(TEXTS)], atol=1e-5)


def test_a_list_runs_shortest_first_and_its_results_keep_the_given_order(classifier, monkeypatch):
    ours = pipeline("text-classification", model=str(classifier))
    one_by_one = ours(TEXTS, top_k=None)
    batches = []
    forward = ours.forward
    monkeypatch.setattr(ours, "forward", lambda features, **params: batches.append(
        [len(f["input_ids"]) for f in features]) or forward(features, **params))
    assert_same(ours(TEXTS, top_k=None, batch_size=3), one_by_one, atol=1e-5)
    lengths = [length for batch in batches for length in batch]
    assert lengths == sorted(lengths) and [len(batch) for batch in batches] == [3, 3, 2]


def test_pipeline_from_a_model_object_and_a_dataset_column(classifier):
    from leanformers import AutoModelForSequenceClassification, AutoTokenizer, Dataset

    model = AutoModelForSequenceClassification.from_pretrained(classifier)
    ours = pipeline("text-classification", model=model, tokenizer=AutoTokenizer.from_pretrained(classifier),
                    top_k=None, batch_size=4)
    ref = transformers.pipeline("text-classification", model=str(classifier), top_k=None)
    column = Dataset.from_dict({"text": TEXTS})["text"]
    assert_same(ours(column), ref(TEXTS))


def test_pipeline_bad_input(classifier):
    with pytest.raises(KeyError, match="unknown task 'sentiment'; leanformers' pipelines are: .*sentiment-analysis"):
        pipeline("sentiment", model=str(classifier))
    ours = pipeline("text-classification", model=str(classifier))
    with pytest.raises(ValueError, match="the input is an empty string"):
        ours("   ")
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        ours("fine", top_k=0)
    with pytest.raises(TypeError, match="takes no argument\\(s\\) max_new_tokens"):
        ours("fine", max_new_tokens=3)
    with pytest.raises(ValueError, match="function_to_apply='tanh' is not one of softmax, sigmoid, none"):
        pipeline("text-classification", model=str(classifier), function_to_apply="tanh")
    with pytest.raises(TypeError, match="must be a string, got int"):
        ours([1, 2])


def test_per_sequence_outputs_are_not_cut_when_their_size_equals_the_batch_width(bert_pipeline_checkpoint):
    five = {f"label_{i}": i for i in range(5)}
    folder = bert_pipeline_checkpoint("BertForSequenceClassification", initializer_range=0.3,
                                      id2label={i: n for n, i in five.items()}, label2id=five)
    ref, ours = both("text-classification", folder)
    texts = ["a b c", "a"]  # 5 and 3 tokens with [CLS] and [SEP]: the batch is as wide as there are labels
    assert [len(ours.tokenizer(t)["input_ids"]) for t in texts] == [5, 3]
    assert_same(ours(texts, top_k=None, batch_size=2), ref(texts, top_k=None))
