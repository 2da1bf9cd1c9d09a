"""Our stopping criteria against transformers' own on the cases of transformers'
tests/generation/test_stopping_criteria.py. Its stop-string cases download GPT-2's and Qwen2's tokenizers;
here they run on SmolLM2's byte-level tokenizer (where <|im_start|> and <|im_end|> are special tokens, as
in Qwen2's) and MiniLM's WordPiece one, with transformers' StopStringCriteria on the same ids as the oracle."""

import logging
import time
import warnings

import pytest
import torch
import transformers
from transformers.generation import stopping_criteria as hf_sc

import leanformers
from leanformers import generation as lf
from leanformers.hub import bundled_model_path


def random_ids(length, seed=0):
    return torch.randint(0, 250, (3, length), generator=torch.Generator().manual_seed(seed))


def test_criteria_are_exported_under_transformers_names():
    for name in ("MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria", "StopStringCriteria",
                 "StoppingCriteria", "StoppingCriteriaList"):  # fmt: skip
        assert getattr(leanformers, name) is getattr(lf, name)
    assert lf.validate_stopping_criteria is not None


def test_max_length_time_and_list_match_transformers():
    now = time.time()
    pairs = [
        (hf_sc.MaxLengthCriteria(10), lf.MaxLengthCriteria(10)),
        (hf_sc.MaxTimeCriteria(0.1), lf.MaxTimeCriteria(0.1)),
        (hf_sc.MaxTimeCriteria(0.1, initial_timestamp=now - 0.2), lf.MaxTimeCriteria(0.1, initial_timestamp=now - 0.2)),
        (hf_sc.StoppingCriteriaList([hf_sc.MaxLengthCriteria(10), hf_sc.MaxTimeCriteria(0.1)]),
         lf.StoppingCriteriaList([lf.MaxLengthCriteria(10), lf.MaxTimeCriteria(0.1)])),
    ]  # fmt: skip
    seen = set()
    for length in (5, 9, 10, 12):
        ids = random_ids(length, length)
        scores = torch.ones(3, length) / length
        for theirs, ours in pairs:
            got = ours(ids, scores)
            assert got.dtype == torch.bool and got.tolist() == theirs(ids, scores).tolist()
            seen.add(tuple(got.tolist()))
    assert seen == {(False,) * 3, (True,) * 3}
    assert lf.StoppingCriteriaList([lf.MaxTimeCriteria(1), lf.MaxLengthCriteria(7)]).max_length == 7
    assert lf.StoppingCriteriaList([lf.MaxTimeCriteria(1)]).max_length is None


@pytest.mark.parametrize("eos", [0, [0, 5], torch.tensor([5, 0])])
def test_eos_token_criteria_matches_transformers(eos):
    theirs, ours = hf_sc.EosTokenCriteria(eos), lf.EosTokenCriteria(eos)
    ids = random_ids(6, 1)
    for last, before in (([0, 0, 0], [1, 1, 1]), ([0, 0, 1], [1, 1, 1]), ([1, 5, 1], [0, 1, 1]), ([1, 1, 1], [1, 1, 1])):
        ids[:, -1], ids[:, -2] = torch.tensor(last), torch.tensor(before)
        for new_tokens in (1, 2):
            got = ours(ids, None, new_token_length=new_tokens)
            assert got.tolist() == theirs(ids, None, new_token_length=new_tokens).tolist()
    ids[:, -1] = torch.tensor([0, 0, 1])
    assert ours(ids, None).tolist() == [True, True, False]


def test_validate_stopping_criteria_like_transformers():
    same = lf.StoppingCriteriaList([lf.MaxLengthCriteria(10)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert lf.validate_stopping_criteria(same, 10).max_length == 10
    with pytest.warns(UserWarning, match="different `max_length`"):
        kept = lf.validate_stopping_criteria(same, 11)
    assert kept.max_length == 10 and kept is not same
    added = lf.validate_stopping_criteria(lf.StoppingCriteriaList(), 11)
    assert len(added) == 1 and added.max_length == 11
    assert len(hf_sc.validate_stopping_criteria(hf_sc.StoppingCriteriaList(), 11)) == len(added)


def test_max_length_criteria_warns_once_past_the_context(caplog):
    criteria = lf.MaxLengthCriteria(max_length=20, max_position_embeddings=8)
    with caplog.at_level(logging.WARNING):
        criteria(random_ids(8), None)
        assert not caplog.records
        for length in (9, 10):
            assert criteria(random_ids(length), None).tolist() == [False] * 3
    assert len(caplog.records) == 1 and "(8)" in caplog.records[0].getMessage()


# -- stop strings ------------------------------------------------------------------------------------
TRUE_STRINGS = ["<|im_start|><|im_end|>", "<|im_start|><|im_end|<|im_end|>", ">><|im_start|>>stop", "stop", "e nd"]
FALSE_STRINGS = ["<|im_start|><|im_end|", "<|im_start|><|im_end|<|im_end|", "<|im_end|><|im_start|>",
                 "<|im_end|<>stop<|im_end|", "end", "en d", "eNd", "<|im_end|", "|im_end|>", "s"]  # fmt: skip
PER_ROW = ["They completed the challenging puzzle, revealing the hidden image at the end",
           "Today a dragon flew over France", "The aroma of freshly baked pizza filled the kitchen"]  # fmt: skip


def rows(hf_tokenizer, texts):
    """Each text as its own (1, T) ids."""
    return [torch.tensor([hf_tokenizer(t, add_special_tokens=False)["input_ids"]]) for t in texts]


def stop_string_results(hf_tokenizer, our_tokenizer, stop_strings, id_rows):
    """(transformers' result, ours) for each row of ids."""
    theirs = hf_sc.StopStringCriteria(tokenizer=hf_tokenizer, stop_strings=stop_strings)
    ours = lf.StopStringCriteria(tokenizer=our_tokenizer, stop_strings=stop_strings)
    return [(theirs(ids, None).tolist(), ours(ids, None).tolist()) for ids in id_rows]


@pytest.fixture(scope="module")
def smol_tokenizers(hf_smol, smollm2_gguf):
    return hf_smol, leanformers.AutoTokenizer.from_pretrained(smollm2_gguf)


@pytest.mark.slow
def test_stop_strings_of_transformers_tests_on_smollm2_tokenizer(smol_tokenizers):
    hf_tok, our_tok = smol_tokenizers
    assert hf_tok.convert_tokens_to_ids("<|im_end|>") in hf_tok.all_special_ids
    stops = ["<|im_end|>", "stop", "e nd"]
    results = stop_string_results(hf_tok, our_tok, stops, rows(hf_tok, TRUE_STRINGS + FALSE_STRINGS))
    assert [ours for _, ours in results] == [theirs for theirs, _ in results]
    # transformers' expectations for a tokenizer that has these special tokens hold here too
    assert [ours[0] for _, ours in results] == [True] * len(TRUE_STRINGS) + [False] * len(FALSE_STRINGS)


@pytest.mark.slow
def test_single_letter_and_per_row_stop_strings_on_smollm2_tokenizer(smol_tokenizers):
    hf_tok, our_tok = smol_tokenizers
    results = stop_string_results(hf_tok, our_tok, ["a"], rows(hf_tok, ["a", "baa", "abc", "abbbbbbb", "b"]))
    assert [ours for _, ours in results] == [theirs for theirs, _ in results]
    assert {ours[0] for _, ours in results} == {True, False}
    # a batch, left-padded, with a max-length criterion beside it: one answer per row
    padded = hf_tok(PER_ROW, return_tensors="pt", padding="longest", padding_side="left",
                    add_special_tokens=False)["input_ids"]  # fmt: skip
    criteria = (hf_sc.StoppingCriteriaList([hf_sc.MaxLengthCriteria(40), hf_sc.StopStringCriteria(hf_tok, ["end"])]),
                lf.StoppingCriteriaList([lf.MaxLengthCriteria(40), lf.StopStringCriteria(our_tok, ["end"])]))  # fmt: skip
    for ids in (padded, padded[:, :-1]):
        assert criteria[1](ids, None).tolist() == criteria[0](ids, None).tolist()
    assert criteria[1](padded, None).tolist() == [True, False, False]
    assert criteria[1](padded[:, :-1], None).tolist() == [False, False, False]
    # ids the tokenizer does not know (a model vocabulary larger than the tokenizer's) match nothing
    beyond = torch.tensor([[len(hf_tok) + 1024, 1, 2]])
    assert stop_string_results(hf_tok, our_tok, ["test"], [beyond]) == [([False], [False])]


def test_stop_strings_on_a_wordpiece_tokenizer():
    folder = bundled_model_path("all-minilm-l6-v2")
    hf_tok, our_tok = transformers.AutoTokenizer.from_pretrained(folder), leanformers.AutoTokenizer.from_pretrained(folder)
    results = stop_string_results(hf_tok, our_tok, ["end"], rows(hf_tok, ["the end", "end of"]))
    assert results == [([True], [True]), ([False], [False])]
