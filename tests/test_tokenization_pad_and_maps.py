"""tokenizer.pad and BatchEncoding's word/char maps against transformers' tokenizer built from the same files.

transformers loads its tokenizer from the files itself (tokenizer.json folder, GGUF), so nothing on its side
runs our code: each comparison is our result against an independent one.
"""

import numpy as np
import pytest
import torch

from leanformers.hub import resolve_model_path
from leanformers.tokenization import AutoTokenizer

transformers = pytest.importorskip("transformers")

TEXTS = ["Hello world, it's 2024!", "naïve café 🚀", "a", "x = 12345 # 中文 and more words here"]
PAIRS = ["second text", "你好 there", "b c d", "?"]


@pytest.fixture(scope="module")
def tokenizer_pairs(smollm2_gguf, hf_smol):
    """name -> (ours, transformers'), both read from the same packaged files (SmolLM2's with its real
    pre-tokenizer put back on transformers' side, see conftest)."""
    minilm = resolve_model_path("all-minilm-l6-v2")
    return {
        "minilm": (AutoTokenizer.from_pretrained(minilm), transformers.AutoTokenizer.from_pretrained(str(minilm))),
        "smollm2": (AutoTokenizer.from_pretrained(smollm2_gguf), hf_smol),
    }


def plain(value):
    return value.tolist() if hasattr(value, "tolist") else value


def assert_same_padded(ours, theirs, where):
    assert list(ours.keys()) == list(theirs.keys()), where
    for key in theirs:
        assert type(ours[key]) is type(theirs[key]), (where, key)
        assert plain(ours[key]) == plain(theirs[key]), (where, key)


def unpadded_features(tokenizer, texts, **kwargs):
    """What a collator receives: one dict of plain lists per example (each tokenizer's own ids)."""
    batch = tokenizer(texts, **kwargs)
    return [{key: batch[key][i] for key in batch} for i in range(len(texts))]


PAD_OPTIONS = {
    "longest": dict(padding=True),
    "longest_named": dict(padding="longest"),
    "max_length": dict(padding="max_length", max_length=30),
    "max_length_below_longest": dict(padding="max_length", max_length=4),  # pad never cuts
    "multiple_of": dict(padding=True, pad_to_multiple_of=8),
    "max_length_multiple_of": dict(padding="max_length", max_length=17, pad_to_multiple_of=8),
    "no_mask": dict(padding=True, return_attention_mask=False),
    "mask_asked": dict(padding=True, return_attention_mask=True),
    "no_padding": dict(padding=False),
}


@pytest.mark.parametrize("option", list(PAD_OPTIONS))
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_pad_matches_transformers(tokenizer_pairs, name, side, option):
    ours, theirs = tokenizer_pairs[name]
    kwargs = dict(PAD_OPTIONS[option], padding_side=side)
    # ids, type ids and special-token masks as each tokenizer makes them, some rows without an attention mask
    extra = dict(return_special_tokens_mask=True) if name == "minilm" else dict(return_attention_mask=False)
    if option == "no_mask":
        extra["return_attention_mask"] = False  # a mask given and not asked for: see the test below
    rows = unpadded_features(theirs, TEXTS, **extra)
    assert rows == unpadded_features(ours, TEXTS, **extra)
    columns = {key: [row[key] for row in rows] for key in rows[0]}
    for form, features in [("list of dicts", rows), ("dict of lists", columns)]:
        for return_tensors in (None, "pt"):
            where = (name, side, option, form, return_tensors)
            if option in ("max_length_below_longest", "no_padding") and return_tensors == "pt":
                with pytest.raises(ValueError):  # ragged rows cannot make a tensor; transformers refuses too
                    theirs.pad(features, return_tensors="pt", **kwargs)
                with pytest.raises(ValueError):
                    ours.pad(features, return_tensors="pt", **kwargs)
                continue
            expected = theirs.pad(features, return_tensors=return_tensors, **kwargs)
            assert_same_padded(ours.pad(features, return_tensors=return_tensors, **kwargs), expected, where)


def test_pad_pads_a_given_mask_that_transformers_leaves_ragged(tokenizer_pairs):
    """With return_attention_mask=False transformers neither drops nor pads a mask the features carry, so its
    rows keep their own lengths and cannot be batched; we pad it like the ids (a deliberate difference)."""
    ours, theirs = tokenizer_pairs["minilm"]
    rows = unpadded_features(theirs, TEXTS)
    lengths = [len(row["input_ids"]) for row in rows]
    expected = theirs.pad(rows, padding=True, return_attention_mask=False)
    assert [len(mask) for mask in expected["attention_mask"]] == lengths  # ragged
    got = ours.pad(rows, padding=True, return_attention_mask=False)
    assert got["input_ids"] == expected["input_ids"]
    assert got["attention_mask"] == [[1] * n + [0] * (max(lengths) - n) for n in lengths]


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_pad_of_one_example_and_padding_side_attribute_match_transformers(tokenizer_pairs, name):
    ours, theirs = tokenizer_pairs[name]
    one = {"input_ids": theirs("hello there")["input_ids"]}
    for kwargs in [dict(), dict(padding="max_length", max_length=12), dict(padding="max_length", max_length=12,
                                                                           return_tensors="pt")]:
        assert_same_padded(ours.pad(one, **kwargs), theirs.pad(one, **kwargs), kwargs)
    rows = unpadded_features(theirs, TEXTS)
    assert ours.padding_side == theirs.padding_side == "right"
    for side in ("left", "right"):
        ours.padding_side = theirs.padding_side = side
        try:
            assert_same_padded(ours.pad(rows, return_tensors="pt"), theirs.pad(rows, return_tensors="pt"), side)
        finally:
            ours.padding_side = theirs.padding_side = "right"


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_pad_of_tensors_gives_tensors_like_transformers(tokenizer_pairs, name):
    """A collator's rows often hold tensors already: with no return_tensors both give back their kind."""
    ours, theirs = tokenizer_pairs[name]
    rows = unpadded_features(theirs, TEXTS)
    for kind in (torch.tensor, np.array):
        features = [{key: kind(value) for key, value in row.items()} for row in rows]
        expected = theirs.pad(features)
        assert type(expected["input_ids"]) is type(kind([1]))
        assert_same_padded(ours.pad(features), expected, kind)
    one = {"input_ids": torch.tensor(rows[0]["input_ids"])}  # (transformers refuses one numpy row)
    assert_same_padded(ours.pad(one, padding="max_length", max_length=20),
                       theirs.pad(one, padding="max_length", max_length=20), "one row")


def outcome(call):
    """A map's answer, or the kind of error it raised, so refusals are compared too."""
    try:
        return call()
    except Exception as err:  # the kind of error is what we compare
        return type(err).__name__


def assert_same_maps(ours, theirs, texts, where):
    """Every map of every row, over every token, word and character index (and one past the end)."""
    assert len(ours.encodings) == len(theirs.encodings), where
    assert ours.n_sequences == theirs.n_sequences and ours.is_fast == theirs.is_fast, where
    for i in range(len(theirs.encodings)):
        at = (where, i)
        assert ours.tokens(i) == theirs.tokens(i), at
        assert ours.word_ids(i) == theirs.word_ids(i), at
        assert ours.sequence_ids(i) == theirs.sequence_ids(i), at
        n_tokens = len(theirs.tokens(i))
        for t in range(n_tokens + 1):
            for method in ("token_to_chars", "token_to_word", "token_to_sequence"):
                got = outcome(lambda: getattr(ours, method)(i, t))
                assert got == outcome(lambda: getattr(theirs, method)(i, t)), (at, method, t)
        words = max((w for w in theirs.word_ids(i) if w is not None), default=-1) + 2
        chars = max(len(text) for text in texts) + 2
        for sequence in range(theirs.n_sequences):
            for w in range(words):
                for method in ("word_to_tokens", "word_to_chars"):
                    got = outcome(lambda: getattr(ours, method)(i, w, sequence_index=sequence))
                    expected = outcome(lambda: getattr(theirs, method)(i, w, sequence_index=sequence))
                    if method == "word_to_chars" and expected == "TypeError":
                        # transformers unpacks the Rust side's None for a word that is not there into a
                        # CharSpan and fails; we answer None, as its word_to_tokens does for that word
                        assert theirs.word_to_tokens(i, w, sequence_index=sequence) is None, (at, w, sequence)
                        expected = None
                    assert got == expected, (at, method, w, sequence)
            for c in range(chars):
                for method in ("char_to_token", "char_to_word"):
                    got = outcome(lambda: getattr(ours, method)(i, c, sequence_index=sequence))
                    assert got == outcome(lambda: getattr(theirs, method)(i, c, sequence_index=sequence)), \
                        (at, method, c, sequence)


def assert_spans_named_alike(ours, theirs):
    """CharSpan/TokenSpan answers have start and end, as transformers' do."""
    first_text_token = theirs.word_ids(0).index(0)
    for method, index in [("token_to_chars", first_text_token), ("word_to_tokens", 0), ("word_to_chars", 0)]:
        got, expected = getattr(ours, method)(0, index), getattr(theirs, method)(0, index)
        assert expected is not None and (got.start, got.end) == (expected.start, expected.end), method


@pytest.mark.parametrize("return_tensors", [None, "pt"])
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_word_and_char_maps_match_transformers(tokenizer_pairs, name, side, return_tensors):
    ours, theirs = tokenizer_pairs[name]
    kwargs = dict(padding=True, padding_side=side, return_tensors=return_tensors)
    assert ours.pad_token is not None and ours.pad_token == theirs.pad_token
    for args in [(TEXTS,), (TEXTS, PAIRS)]:
        got, expected = ours(*args, **kwargs), theirs(*args, **kwargs)
        assert_same_maps(got, expected, TEXTS + PAIRS, (name, side, len(args)))
        assert_spans_named_alike(got, expected)
    # truncated and split into words: word ids index the given words
    words = [text.split() for text in TEXTS]
    got, expected = ours(words, is_split_into_words=True, truncation=True, max_length=6, **kwargs), \
        theirs(words, is_split_into_words=True, truncation=True, max_length=6, **kwargs)
    assert_same_maps(got, expected, TEXTS, (name, side, "words"))


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_maps_of_one_text_take_the_index_alone_like_transformers(tokenizer_pairs, name):
    ours, theirs = tokenizer_pairs[name]
    text = TEXTS[3]
    got, expected = ours(text), theirs(text)
    assert got.word_ids() == expected.word_ids() and got.sequence_ids() == expected.sequence_ids()
    assert got.tokens() == expected.tokens()
    for t in range(len(expected.tokens())):
        assert got.token_to_chars(t) == expected.token_to_chars(t), t
        assert got.token_to_word(t) == expected.token_to_word(t), t
        assert got.token_to_sequence(t) == expected.token_to_sequence(t), t
    for c in range(len(text)):
        assert got.char_to_token(c) == expected.char_to_token(c), c
        assert got.char_to_word(c) == expected.char_to_word(c), c
    for w in range(len(text.split())):
        assert got.word_to_tokens(w) == expected.word_to_tokens(w), w
        assert got.word_to_chars(w) == expected.word_to_chars(w), w
    assert any(expected.word_to_tokens(w) is not None for w in range(len(text.split())))  # not all None


@pytest.mark.parametrize("name", ["minilm", "smollm2"])
def test_maps_after_pad_match_transformers(tokenizer_pairs, name):
    """pad() builds a new BatchEncoding from plain lists: transformers' has no encodings left, nor ours."""
    ours, theirs = tokenizer_pairs[name]
    assert ours.pad_token is not None and ours.pad_token == theirs.pad_token
    expected = theirs.pad(theirs(TEXTS), padding=True)
    got = ours.pad(ours(TEXTS), padding=True)
    assert_same_padded(got, expected, name)
    assert got.is_fast == expected.is_fast
    assert outcome(lambda: got.word_ids(0)) == outcome(lambda: expected.word_ids(0))
