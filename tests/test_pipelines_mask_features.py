"""fill-mask, feature-extraction and zero-shot-classification against transformers' pipelines, on tiny random
BERT checkpoints and (feature-extraction) the bundled all-MiniLM-L6-v2."""

import warnings

import pytest
import torch
import transformers
from test_pipelines import assert_same, both

from leanformers import pipeline
from leanformers.hub import bundled_model_path

NLI = {"id2label": {0: "contradiction", 1: "neutral", 2: "entailment"},
       "label2id": {"contradiction": 0, "neutral": 1, "entailment": 2}}
MASKED = ["Paris is the [MASK] of France.", "The [MASK] sat on the [MASK] all afternoon.",
          "I [MASK] this film.", "[MASK] [MASK] [MASK]", "A long sentence about the weather, which was [MASK] today."]
SEQUENCES = ["I have a problem with my phone that needs to be resolved asap!", "The match ended in a draw.",
             "Cook the pasta for ten minutes.", "Stocks fell sharply after the announcement.", "ok"]
LABELS = ["urgent", "sports", "cooking", "finance"]
SENTENCES = ["The quick brown fox jumps over the lazy dog.", "A man is playing a guitar.", "hi",
             "Machine learning models need a lot of data to train well, and even more to evaluate.", "Dogs bark."]


@pytest.fixture(scope="module")
def masked_lm(bert_pipeline_checkpoint):
    return bert_pipeline_checkpoint("BertForMaskedLM", initializer_range=0.3)


@pytest.fixture(scope="module")
def nli(bert_pipeline_checkpoint):
    return bert_pipeline_checkpoint("BertForSequenceClassification", initializer_range=0.3, **NLI)


@pytest.fixture(scope="module")
def encoder(bert_pipeline_checkpoint):
    return bert_pipeline_checkpoint("BertModel", initializer_range=0.3)


# transformers' pipelines are slow to build, so each is built once: (transformers', ours)
@pytest.fixture(scope="module")
def fill_masks(masked_lm):
    return both("fill-mask", masked_lm)


@pytest.fixture(scope="module")
def extractors(encoder):
    return both("feature-extraction", encoder)


@pytest.fixture(scope="module")
def zero_shots(nli):
    return both("zero-shot-classification", nli)


# -- fill-mask --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"top_k": 1}, {"top_k": 12}, {"targets": ["capital", "city", "paris"]},
                                    {"targets": "capital"}, {"targets": ["city", "capital", "dog"], "top_k": 2}])
def test_fill_mask_matches_transformers(fill_masks, kwargs):
    ref, ours = fill_masks
    # Random-init scores are around 1e-3, so the tolerance is set below them.
    assert_same(ours(MASKED[0], **kwargs), ref(MASKED[0], **kwargs), atol=1e-7)
    assert_same(ours(MASKED, **kwargs), ref(MASKED, **kwargs), atol=1e-7)
    assert_same(ours(MASKED[1:2], **kwargs), ref(MASKED[1:2], **kwargs), atol=1e-7)


def test_fill_mask_gives_a_list_per_mask_with_the_other_masks_kept(fill_masks):
    ours = fill_masks[1]
    one, three = ours(MASKED[0], top_k=3), ours(MASKED[3], top_k=3)
    assert len(one) == 3 and "[MASK]" not in one[0]["sequence"] and "[CLS]" not in one[0]["sequence"]
    assert len(three) == 3 and all(len(row) == 3 for row in three)
    assert all(r["sequence"].count("[MASK]") == 2 for row in three for r in row)
    assert [r["score"] for r in three[0]] == sorted((r["score"] for r in three[0]), reverse=True)


def test_fill_mask_targets_outside_the_vocabulary_use_their_first_token(masked_lm, fill_masks):
    ref, ours = fill_masks
    targets = ["Paris", "zzzqqq", "capital"]  # the cased word and the unknown one are not vocabulary tokens
    with pytest.warns(UserWarning) as caught:
        got = ours(MASKED[0], targets=targets, top_k=10)
    assert [str(w.message) for w in caught] == [
        "the target 'Paris' is not in the vocabulary; its first token 'paris' stands for it",
        "the target 'zzzqqq' is not in the vocabulary; its first token 'z' stands for it"]
    assert len(got) == 3  # top_k is capped at the number of targets
    assert_same(got, ref(MASKED[0], targets=targets, top_k=10), atol=1e-7)
    with pytest.warns(UserWarning) as caught:
        preset = pipeline("fill-mask", model=str(masked_lm), targets=targets)
    assert len(caught) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # targets given to pipeline() were resolved there, once
        assert {r["token_str"] for r in preset([MASKED[0], MASKED[2]])[1]} == {"paris", "z", "capital"}


def test_fill_mask_bad_input(fill_masks):
    ours = fill_masks[1]
    with pytest.raises(ValueError, match=r"no mask token \(\[MASK\]\) in the input 'Nothing is hidden here.'"):
        ours("Nothing is hidden here.")
    with pytest.raises(ValueError, match="no mask token"):
        ours([MASKED[0], "Nothing is hidden here."], batch_size=8)
    with pytest.raises(ValueError, match="the input is an empty string"):
        ours("")
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        ours(MASKED[0], top_k=0)
    with pytest.raises(ValueError, match=r"targets=\[\] gives no token to score"):
        ours(MASKED[0], targets=[])
    with pytest.raises(TypeError, match="takes no argument\\(s\\) candidate_labels"):
        ours(MASKED[0], candidate_labels=["a"])


def test_fill_mask_batched_equals_unbatched(fill_masks):
    ours = fill_masks[1]
    assert_same(ours(MASKED * 2, top_k=3, batch_size=8), ours(MASKED * 2, top_k=3), atol=1e-6)


# -- feature-extraction -----------------------------------------------------------------------------------
def test_feature_extraction_token_embeddings_match_transformers(extractors):
    ref, ours = extractors
    got, want = ours(SENTENCES[0]), ref(SENTENCES[0])
    assert len(got) == 1 and len(got[0]) == 12 and len(got[0][0]) == 32  # [1][T][H], T with [CLS] and [SEP]
    torch.testing.assert_close(torch.tensor(got), torch.tensor(want), atol=1e-4, rtol=0)
    for g, w in zip(ours(SENTENCES), ref(SENTENCES), strict=True):
        torch.testing.assert_close(torch.tensor(g), torch.tensor(w), atol=1e-4, rtol=0)
    tensor = ours(SENTENCES[2], return_tensors=True)
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (1, 3, 32)
    torch.testing.assert_close(tensor, ref(SENTENCES[2], return_tensors=True), atol=1e-4, rtol=0)


def test_feature_extraction_truncation_and_bad_input(extractors):
    ref, ours = extractors
    long = " ".join(["word"] * 200)  # past the tiny model's 128 positions
    kwargs = {"tokenize_kwargs": {"max_length": 16}, "truncation": True}
    assert len(ours(long, **kwargs)[0]) == 16
    torch.testing.assert_close(torch.tensor(ours(long, **kwargs)), torch.tensor(ref(long, **kwargs)), atol=1e-4,
                               rtol=0)
    with pytest.raises(ValueError, match="truncation is given twice"):
        ours(long, truncation=True, tokenize_kwargs={"truncation": True})
    with pytest.raises(ValueError, match="pooling='max' is not one of None, 'mean'"):
        ours(SENTENCES[0], pooling="max")
    with pytest.raises(ValueError, match="normalize=True needs pooling='mean'"):
        ours(SENTENCES[0], normalize=True)
    with pytest.raises(ValueError, match="the input is an empty string"):
        ours(" ")


def masked_mean_normalized(folder, texts):
    """sentence-transformers' all-MiniLM-L6-v2 recipe on transformers' model: token embeddings of a padded
    batch, averaged over the attention mask, then scaled to unit length."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.AutoModel.from_pretrained(folder).eval()
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        tokens = model(**batch).last_hidden_state  # (B, T, H)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((tokens * mask).sum(1) / mask.sum(1), dim=-1)


@pytest.mark.slow
def test_feature_extraction_minilm_matches_transformers_and_its_sentence_embeddings():
    folder = str(bundled_model_path("all-minilm-l6-v2"))
    ref = transformers.pipeline("feature-extraction", model=folder)
    ours = pipeline("feature-extraction")  # the bundled MiniLM is the default model
    for g, w in zip(ours(SENTENCES, batch_size=8), ref(SENTENCES), strict=True):
        torch.testing.assert_close(torch.tensor(g), torch.tensor(w), atol=1e-4, rtol=0)
    embeddings = ours(SENTENCES, pooling="mean", normalize=True, batch_size=8)
    assert len(embeddings) == len(SENTENCES) and all(len(e) == 384 for e in embeddings)
    torch.testing.assert_close(torch.tensor(embeddings), masked_mean_normalized(folder, SENTENCES), atol=1e-4, rtol=0)
    single = ours(SENTENCES[1], pooling="mean", normalize=True, return_tensors=True)
    assert single.shape == (384,) and float(single.norm()) == pytest.approx(1.0, abs=1e-5)
    mean = ours(SENTENCES[1], pooling="mean", return_tensors=True)
    torch.testing.assert_close(mean, torch.tensor(ref(SENTENCES[1])[0]).mean(0), atol=1e-4, rtol=0)


def test_feature_extraction_batched_equals_unbatched(extractors):
    ours = extractors[1]
    for batched, alone in zip(ours(SENTENCES * 2, batch_size=8), ours(SENTENCES * 2), strict=True):
        torch.testing.assert_close(torch.tensor(batched), torch.tensor(alone), atol=1e-5, rtol=0)


# -- zero-shot-classification -----------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{"candidate_labels": LABELS}, {"candidate_labels": LABELS, "multi_label": True},
                                    {"candidate_labels": "urgent, sports,cooking ,"}, {"candidate_labels": ["urgent"]},
                                    {"candidate_labels": LABELS, "hypothesis_template": "This text is about {}."}])
def test_zero_shot_matches_transformers(zero_shots, kwargs):
    ref, ours = zero_shots
    assert_same(ours(SEQUENCES[0], **kwargs), ref(SEQUENCES[0], **kwargs))
    assert_same(ours(SEQUENCES[1:], **kwargs), ref(SEQUENCES[1:], **kwargs))


def test_zero_shot_scores_and_arguments(nli, zero_shots):
    ref, ours = zero_shots
    single = ours(SEQUENCES[0], LABELS)  # the labels as the second positional argument, as in transformers
    assert single["sequence"] == SEQUENCES[0] and sorted(single["labels"]) == sorted(LABELS)
    assert sum(single["scores"]) == pytest.approx(1.0, abs=1e-6)
    assert single["scores"] == sorted(single["scores"], reverse=True)
    multi = ours(SEQUENCES[0], candidate_labels=LABELS, multi_label=True)
    assert sum(multi["scores"]) != pytest.approx(1.0, abs=1e-3)  # each label scored on its own
    assert_same(ours([SEQUENCES[1]], "sports, finance"), ref([SEQUENCES[1]], "sports, finance"))
    preset = pipeline("zero-shot-classification", model=str(nli), candidate_labels=LABELS, multi_label=True)
    assert_same(preset(SEQUENCES[0]), multi)


def test_zero_shot_entailment_id_comes_from_label2id(bert_pipeline_checkpoint):
    reordered = {"id2label": {0: "ENTAILMENT", 1: "neutral", 2: "contradiction"},
                 "label2id": {"ENTAILMENT": 0, "neutral": 1, "contradiction": 2}}
    folder = bert_pipeline_checkpoint("BertForSequenceClassification", initializer_range=0.3, **reordered)
    ref, ours = both("zero-shot-classification", folder)
    assert ours.entailment_id == 0
    for multi_label in (False, True):
        assert_same(ours(SEQUENCES[:2], candidate_labels=LABELS[:3], multi_label=multi_label),
                    ref(SEQUENCES[:2], candidate_labels=LABELS[:3], multi_label=multi_label))
    unnamed = bert_pipeline_checkpoint("BertForSequenceClassification", initializer_range=0.3, num_labels=3)
    with pytest.warns(UserWarning, match="no label of the model's config starts with 'entail'"):
        ours = pipeline("zero-shot-classification", model=str(unnamed))
    ref = transformers.pipeline("zero-shot-classification", model=str(unnamed))
    assert_same(ours(SEQUENCES[0], LABELS), ref(SEQUENCES[0], LABELS))  # the last logit stands for entailment


def test_zero_shot_bad_input(zero_shots):
    ours = zero_shots[1]
    with pytest.raises(ValueError, match="needs candidate_labels"):
        ours(SEQUENCES[0])
    with pytest.raises(ValueError, match="needs candidate_labels"):
        ours(SEQUENCES[0], candidate_labels=" , ")
    with pytest.raises(ValueError, match=r"hypothesis_template='This example is about sports.' has no \{\}"):
        ours(SEQUENCES[0], candidate_labels=LABELS, hypothesis_template="This example is about sports.")
    for template in ("This example is {label}.", None):
        with pytest.raises(ValueError, match=r"has no \{\}"):
            ours(SEQUENCES[0], candidate_labels=LABELS, hypothesis_template=template)
    with pytest.raises(ValueError, match="the sequence is an empty string"):
        ours("", candidate_labels=LABELS)
    with pytest.raises(TypeError, match="give the candidate labels once"):
        ours(SEQUENCES[0], LABELS, candidate_labels=LABELS)


def test_zero_shot_batched_equals_unbatched(nli):
    ours = pipeline("zero-shot-classification", model=str(nli), candidate_labels=LABELS)
    for multi_label in (False, True):  # 4 labels x 5 sequences: the 8-row batches cut across sequences
        assert_same(ours(SEQUENCES, multi_label=multi_label, batch_size=8),
                    ours(SEQUENCES, multi_label=multi_label), atol=1e-6)
