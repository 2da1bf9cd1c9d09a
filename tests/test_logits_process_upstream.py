"""Our logits processor and warper classes against transformers' own, built with the same arguments and fed
the same inputs: the inputs of transformers' tests/generation/test_logits_process.py (the expected values
are what transformers' class gives on them, here, as the oracle), random scores with ties and -inf at
several sequence lengths, the processors' state (prompt length, bias), and each argument error's kind."""

import pytest
import torch
import transformers
from transformers.generation import logits_process as hf_lp
from transformers.generation import watermarking as hf_wm

import leanformers
from leanformers import generation as lf

VOCAB = 50
LENGTHS = (1, 2, 4, 5, 9, 12)  # on both sides of every length threshold below


def allowed_tokens(batch_id, ids):
    """A prefix_allowed_tokens_fn that depends on the row and its last token."""
    return [batch_id, int(ids[-1]) % VOCAB, 7] if batch_id % 2 else [3]


# (class name, args, kwargs): each is built in both libraries and called at every length of LENGTHS
CASES = [
    ("TemperatureLogitsWarper", (0.5,), {}),
    ("TemperatureLogitsWarper", (1.3,), {}),
    ("TopKLogitsWarper", (3,), {}),
    ("TopKLogitsWarper", (1,), {}),
    ("TopKLogitsWarper", (3,), dict(filter_value=0.0, min_tokens_to_keep=5)),
    ("TopKLogitsWarper", (80,), {}),
    ("TopPLogitsWarper", (0.8,), {}),
    ("TopPLogitsWarper", (0.3,), dict(min_tokens_to_keep=2, filter_value=0.0)),
    ("TopPLogitsWarper", (0.0,), {}),
    ("TopPLogitsWarper", (1.0,), {}),
    ("MinPLogitsWarper", (0.05,), {}),
    ("MinPLogitsWarper", (0.9,), dict(min_tokens_to_keep=2, filter_value=0.0)),
    ("MinPLogitsWarper", (0.0,), {}),
    ("TypicalLogitsWarper", (0.5,), {}),
    ("TypicalLogitsWarper", (), dict(min_tokens_to_keep=3, filter_value=0.0)),
    ("EpsilonLogitsWarper", (0.1,), {}),
    ("EpsilonLogitsWarper", (5e-2,), dict(min_tokens_to_keep=2, filter_value=0.0)),
    ("EtaLogitsWarper", (0.0625,), {}),
    ("EtaLogitsWarper", (0.1,), dict(min_tokens_to_keep=2, filter_value=0.0)),
    ("TopHLogitsWarper", (0.3,), {}),
    ("TopHLogitsWarper", (0.7,), {}),
    ("TopHLogitsWarper", (1.0,), {}),
    ("TopHLogitsWarper", (0.5,), dict(filter_value=-10.0)),
    ("RepetitionPenaltyLogitsProcessor", (2.0,), {}),
    ("RepetitionPenaltyLogitsProcessor", (0.5,), {}),
    ("RepetitionPenaltyLogitsProcessor", (1.5,), dict(prompt_ignore_length=3)),
    ("RepetitionPenaltyLogitsProcessor", (1.5,), dict(prompt_ignore_length=torch.tensor([0, 2, 5, 1]))),
    ("NoRepeatNGramLogitsProcessor", (2,), {}),
    ("NoRepeatNGramLogitsProcessor", (3,), {}),
    ("NoBadWordsLogitsProcessor", ([[1], [4], [1, 0], [0, 1, 2], [1, 3, 1, 3]],), dict(eos_token_id=4)),
    ("NoBadWordsLogitsProcessor", ([[4]],), dict(eos_token_id=4)),
    ("NoBadWordsLogitsProcessor", ([[3, 5], [7], [2, 2, 2]],), dict(eos_token_id=[7, 9])),
    ("SequenceBiasLogitsProcessor", ({(1,): 100.0, (4,): 100.0, (1, 0): -100.0, (0, 1, 2): -100.0,
                                      (1, 3, 1, 3): -100.0, (1, 3, 1, 3, 1, 3): -100.0},), {}),  # fmt: skip
    ("SequenceBiasLogitsProcessor", ([[[2, 3], -2.5], [[5], 1.5], [[3, 3], 4.0], [[9, 2, 3], 0.5]],), {}),
    ("MinLengthLogitsProcessor", (10, 0), {}),
    ("MinLengthLogitsProcessor", (6, [0, 18]), {}),
    ("MinLengthLogitsProcessor", (6, [3, 70]), {}),  # 70 lies outside the vocabulary: nothing to mask there
    ("MinNewTokensLengthLogitsProcessor", (5, 3, 0), {}),
    ("MinNewTokensLengthLogitsProcessor", (2, 3, [0, 18]), {}),
    ("ForcedBOSTokenLogitsProcessor", (0,), {}),
    ("ForcedEOSTokenLogitsProcessor", (5, 0), {}),
    ("ForcedEOSTokenLogitsProcessor", (10, [0, 3]), {}),
    ("PrefixConstrainedLogitsProcessor", (allowed_tokens, 1), {}),
    ("PrefixConstrainedLogitsProcessor", (allowed_tokens, 2), {}),
    ("InfNanRemoveLogitsProcessor", (), {}),
    ("ExponentialDecayLengthPenalty", ((5, 1.1), 0, 2), {}),
    ("ExponentialDecayLengthPenalty", ((2, 0.9), [0, 3], 3), {}),
    ("LogitNormalization", (), {}),
    ("SuppressTokensLogitsProcessor", ([1, 2, 70],), {}),
    ("SuppressTokensAtBeginLogitsProcessor", ([3, 4], 5), {}),
    ("WatermarkLogitsProcessor", (VOCAB, "cpu"), {}),
    ("WatermarkLogitsProcessor", (VOCAB, "cpu"), dict(greenlist_ratio=0.5, bias=3.0, hashing_key=7)),
    ("WatermarkLogitsProcessor", (VOCAB, "cpu"), dict(seeding_scheme="selfhash", context_width=2)),
]


def both(name, *args, **kwargs):
    """(transformers' object, ours) for the same class name and arguments."""
    return getattr(transformers, name)(*args, **kwargs), getattr(leanformers, name)(*args, **kwargs)


def assert_same(ours, theirs):
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6, equal_nan=True)


def random_inputs(length, seed):
    """(input_ids (4, length) from a few ids, so n-grams and bad words recur; scores (4, V) with ties, -inf,
    one peaked row and one flat row)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 6, (4, length), generator=g)
    scores = torch.randn(4, VOCAB, generator=g) * 3
    scores[0, :5] = scores[0, 5]  # ties
    scores[1, 10:20] = -float("inf")
    scores[2, 3] = 25.0  # one token holds nearly all the mass
    scores[3] = 0.5  # uniform
    return ids, scores


def test_every_class_of_the_issue_is_exported_under_transformers_name():
    names = [case[0] for case in CASES] + ["LogitsProcessor", "LogitsProcessorList", "WatermarkDetector"]
    for name in names:
        assert getattr(leanformers, name) is getattr(lf, name)
        assert issubclass(getattr(lf, name), (lf.LogitsProcessor, list)) or name == "WatermarkDetector"


@pytest.mark.parametrize("name, args, kwargs", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_processor_matches_transformers_on_random_scores(name, args, kwargs):
    theirs, ours = both(name, *args, **kwargs)
    for seed, length in enumerate(LENGTHS):
        ids, scores = random_inputs(length, seed)
        before = scores.clone()
        expected = theirs(ids, scores.clone())
        got = ours(ids, scores)
        assert_same(got, expected)
        assert torch.equal(scores, before), "the input scores were changed in place"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64])
def test_processors_keep_the_scores_dtype_like_transformers(dtype):
    ids, scores = random_inputs(9, 0)
    scores = scores.to(dtype)
    for name, args, kwargs in CASES:
        theirs, ours = both(name, *args, **kwargs)
        assert_same(ours(ids, scores.clone()), theirs(ids, scores.clone()))


# -- transformers' unit test inputs --------------------------------------------------------------------
def log(rows):
    return torch.log(torch.tensor(rows, dtype=torch.float))


RAMP = torch.arange(10, dtype=torch.float).repeat(2, 1) - 5  # (2, 10)
EXTREME_RAMP = torch.stack([RAMP[0], RAMP[1] * 100])
UNIFORM = torch.ones(2, 5) / 5
UPSTREAM_WARPER_CASES = [
    ("TopKLogitsWarper", (3,), {}, torch.cat([torch.arange(10.0)[None], torch.arange(10.0)[None] + 10 * (torch.arange(10) < 5)])),
    ("TopKLogitsWarper", (), dict(top_k=1, filter_value=0.0, min_tokens_to_keep=3), UNIFORM),
    ("TopKLogitsWarper", (), dict(top_k=1, filter_value=0.0, min_tokens_to_keep=3), torch.arange(5.0).repeat(2, 1)),
    ("TopPLogitsWarper", (0.8,), {}, log([[0.3, 0.1, 0.1, 0.5], [0.15, 0.3, 0.3, 0.25]])),
    ("TopPLogitsWarper", (0.9,), dict(min_tokens_to_keep=2, filter_value=0.0), EXTREME_RAMP),
    ("TopHLogitsWarper", (), dict(top_h=0.3), log([[0.97, 0.01, 0.01, 0.01]])),
    ("TopHLogitsWarper", (), dict(top_h=0.7), log([[0.4, 0.3, 0.2, 0.1]])),
    ("TopHLogitsWarper", (), dict(top_h=1.0), log([[0.25, 0.25, 0.25, 0.25]])),
    ("TopHLogitsWarper", (), dict(top_h=0.4), log([[0.75, 0.25, 0.0, 0.0]])),
    ("MinPLogitsWarper", (0.05,), {}, log([[0.9, 0.0274, 0.047, 0.0274], [0.15, 0.3, 0.3, 0.25], [0.97, 0.01, 0.01, 0.01]])),
    ("MinPLogitsWarper", (0.9,), dict(min_tokens_to_keep=2, filter_value=0.0), EXTREME_RAMP),
    ("TypicalLogitsWarper", (0.5,), {}, log([[0.97, 0.01, 0.01, 0.01], [0.4, 0.2, 0.2, 0.2]])),
    ("TypicalLogitsWarper", (), dict(mass=0.5, filter_value=0.0, min_tokens_to_keep=3), UNIFORM),
    ("TypicalLogitsWarper", (0.7,), dict(min_tokens_to_keep=2, filter_value=0.0), EXTREME_RAMP),
    ("EpsilonLogitsWarper", (0.1,), {}, log([[0.87, 0.099, 0.001, 0.03], [0.4, 0.299, 0.101, 0.2]])),
    ("EpsilonLogitsWarper", (5e-2,), dict(min_tokens_to_keep=2, filter_value=0.0), EXTREME_RAMP),
    ("EtaLogitsWarper", (0.0625,), {}, log([[0.0, 0.1, 0.8, 0.1], [0.01, 0.04, 0.9, 0.05]])),
    ("EtaLogitsWarper", (0.1,), dict(min_tokens_to_keep=2, filter_value=0.0), EXTREME_RAMP),
    ("TemperatureLogitsWarper", (0.5,), {}, torch.stack([torch.full((20,), 0.05), torch.full((20,), 0.05).index_fill(0, torch.tensor([5]), 0.15)])),
    ("LogitNormalization", (), {}, torch.tensor([[-23.18, -29.96, -43.54, 47.77], [-33.58, -26.87, -32.96, 22.51]])),
    ("InfNanRemoveLogitsProcessor", (), {}, torch.tensor([[0.0, 0.7, 0.8, float("nan")], [0.1, float("inf"), 0.3, -float("inf")]])),
]  # fmt: skip


@pytest.mark.parametrize("name, args, kwargs, scores", UPSTREAM_WARPER_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(UPSTREAM_WARPER_CASES)])  # fmt: skip
def test_warper_matches_transformers_on_its_unit_test_inputs(name, args, kwargs, scores):
    theirs, ours = both(name, *args, **kwargs)
    before = scores.clone()
    assert_same(ours(None, scores), theirs(None, scores.clone()))
    torch.testing.assert_close(scores, before, rtol=0, atol=0, equal_nan=True)  # not changed in place


def test_upstream_filter_results_hold_for_ours():
    """A few of transformers' hand-written expectations, checked on ours directly."""
    kept = lf.TopKLogitsWarper(3)(None, UPSTREAM_WARPER_CASES[0][3])
    assert torch.isinf(kept).tolist() == [[True] * 7 + [False] * 3, [True] * 2 + [False] * 3 + [True] * 5]
    top_p = lf.TopPLogitsWarper(0.8)(None, log([[0.3, 0.1, 0.1, 0.5], [0.15, 0.3, 0.3, 0.25]])).exp()
    torch.testing.assert_close(top_p, torch.tensor([[0.3, 0.0, 0.0, 0.5], [0.0, 0.3, 0.3, 0.25]]), atol=1e-3, rtol=1e-3)
    eta = lf.EtaLogitsWarper(0.0625)(None, log([[0.0, 0.1, 0.8, 0.1], [0.01, 0.04, 0.9, 0.05]])).exp()
    torch.testing.assert_close(eta, torch.tensor([[0.0, 0.1, 0.8, 0.1], [0.0, 0.0, 0.9, 0.0]]), atol=1e-3, rtol=1e-3)
    extreme = lf.EpsilonLogitsWarper(5e-2, min_tokens_to_keep=2, filter_value=0.0)(None, EXTREME_RAMP)
    assert (extreme != 0.0).sum(-1).tolist() == [3, 2]


def test_upstream_processor_cases_match_transformers():
    """transformers' hand-made (input_ids, scores) for the processors that read the sequence."""
    ids = torch.tensor([[0, 1, 3, 1], [0, 1, 0, 1]])
    uniform = torch.ones(2, 5) / 5
    cases = [
        ("NoBadWordsLogitsProcessor", ([[1], [4], [1, 0], [0, 1, 2], [1, 3, 1, 3]],), dict(eos_token_id=4), ids),
        ("PrefixConstrainedLogitsProcessor", (lambda batch_id, row: [[0, 1], [2, 3]][batch_id], 1), {}, ids),
        ("NoRepeatNGramLogitsProcessor", (2,), {}, torch.tensor([[1, 1, 2, 1], [0, 1, 0, 1]])),
        ("NoRepeatNGramLogitsProcessor", (3,), {}, torch.tensor([[1, 2, 5, 7, 8, 5, 1, 2], [0, 1, 0, 1, 0, 1, 0, 1]])),
        ("RepetitionPenaltyLogitsProcessor", (2.0,), dict(prompt_ignore_length=2), torch.tensor([[0, 1, 0, 1], [5, 0, 5, 0]])),
        ("RepetitionPenaltyLogitsProcessor", (2.0,), dict(prompt_ignore_length=2), torch.tensor([[0, 1], [5, 0]])),
    ]  # fmt: skip
    scores = uniform.repeat(1, 2).index_put((torch.tensor([0, 1]), torch.tensor([0, 5])), torch.tensor([-0.1, 0.4]))
    for name, args, kwargs, input_ids in cases:
        theirs, ours = both(name, *args, **kwargs)
        assert_same(ours(input_ids, scores.clone()), theirs(input_ids, scores.clone()))
    bias = {(1,): 100.0, (4,): 100.0, (1, 0): -100.0, (0, 1, 2): -100.0, (1, 3, 1, 3): -100.0}
    biased = lf.SequenceBiasLogitsProcessor(bias)(ids, torch.zeros(2, 5))
    assert biased.tolist() == [[-100.0, 100.0, 0.0, -100.0, 100.0], [-100.0, 100.0, -100.0, 0.0, 100.0]]


def test_processor_state_is_transformers():
    """The attributes transformers' tests and users read."""
    theirs, ours = both("MinNewTokensLengthLogitsProcessor", 5, 3, 0)
    assert ours.prompt_length_to_skip == theirs.prompt_length_to_skip == 5
    theirs, ours = both("WatermarkLogitsProcessor", vocab_size=20, device="cpu")
    assert ours.bias == theirs.bias == 2.0 and ours.greenlist_size == theirs.greenlist_size == 5
    theirs, ours = both("TopKLogitsWarper", 2, min_tokens_to_keep=4)
    assert ours.top_k == theirs.top_k == 4
    theirs, ours = both("ExponentialDecayLengthPenalty", (5, 1.1), 0, 2)
    assert (ours.regulation_start, ours.regulation_factor) == (theirs.regulation_start, theirs.regulation_factor)


def test_watermark_greenlist_of_transformers_test():
    """transformers' test fixes the last token to 10 in a 20-token vocabulary; token 1 is then green."""
    ids = torch.randint(0, 20, (3, 5), generator=torch.Generator().manual_seed(0))
    ids[:, -1] = 10
    scores = torch.ones(3, 20) / 20
    watermark = lf.WatermarkLogitsProcessor(vocab_size=20, device="cpu")
    out = watermark(ids, scores)
    assert (out[:, 1] == scores[:, 1] + watermark.bias).all()
    assert_same(out, hf_lp.WatermarkLogitsProcessor(vocab_size=20, device="cpu")(ids, scores))


def test_processor_list_applies_in_order_like_transformers():
    names = [("MinLengthLogitsProcessor", (10, 0), {}), ("TemperatureLogitsWarper", (0.5,), {}),
             ("RepetitionPenaltyLogitsProcessor", (2.0,), {}), ("TopKLogitsWarper", (3,), {}),
             ("TopPLogitsWarper", (0.8,), {}), ("NoRepeatNGramLogitsProcessor", (2,), {}),
             ("NoBadWordsLogitsProcessor", ([[1]],), dict(eos_token_id=0))]  # fmt: skip
    pairs = [both(name, *args, **kwargs) for name, args, kwargs in names]
    theirs = transformers.LogitsProcessorList([t for t, _ in pairs])
    ours = lf.LogitsProcessorList([o for _, o in pairs])
    ids, scores = random_inputs(9, 3)
    expected = theirs(ids, scores.clone())
    one_by_one = scores
    for processor in ours:
        one_by_one = processor(ids, one_by_one)
    assert_same(ours(ids, scores), expected)
    assert_same(one_by_one, expected)


def test_watermark_detector_matches_transformers():
    config = transformers.LlamaConfig(vocab_size=VOCAB, bos_token_id=1)
    for settings in (dict(bias=4.0), dict(bias=4.0, seeding_scheme="selfhash", context_width=2, greenlist_ratio=0.5)):
        processor = lf.WatermarkLogitsProcessor(VOCAB, "cpu", **settings)
        g = torch.Generator().manual_seed(4)
        watermarked = torch.tensor([[1, 7, 9], [1, 3, 4]])
        for _ in range(30):  # greedy on random scores, with the watermark's bias
            step = processor(watermarked, torch.randn(2, VOCAB, generator=g))
            watermarked = torch.cat([watermarked, step.argmax(-1, keepdim=True)], dim=1)
        plain = torch.cat([torch.ones(2, 1, dtype=torch.long), torch.randint(2, VOCAB, (2, 32), generator=g)], 1)
        for repeated in (False, True):
            ours = lf.WatermarkDetector(config, "cpu", settings, ignore_repeated_ngrams=repeated)
            theirs = hf_wm.WatermarkDetector(config, "cpu", transformers.WatermarkingConfig(**settings),
                                             ignore_repeated_ngrams=repeated)  # fmt: skip
            for ids, expected in ((watermarked, [True, True]), (plain, [False, False])):
                got, want = ours(ids, return_dict=True), theirs(ids, return_dict=True)
                assert got.prediction.tolist() == want.prediction.tolist() == expected
                assert ours(ids).tolist() == expected
                for field in ("num_tokens_scored", "num_green_tokens", "green_fraction", "z_score", "p_value",
                              "confidence"):  # fmt: skip
                    assert getattr(got, field) == pytest.approx(getattr(want, field)), field


def test_watermark_detector_refuses_what_transformers_refuses():
    config = transformers.LlamaConfig(vocab_size=VOCAB, bos_token_id=1)
    ours = lf.WatermarkDetector(config, "cpu", {"context_width": 3})
    with pytest.raises(ValueError, match="inconsistent leading BOS"):
        ours(torch.tensor([[1, 5, 6, 7, 8], [2, 5, 6, 7, 8]]))
    with pytest.raises(ValueError, match="at least `1` token"):
        ours(torch.tensor([[1, 5, 6, 7]]))


# -- argument errors -----------------------------------------------------------------------------------
BAD_ARGUMENTS = [
    ("TemperatureLogitsWarper", (0.0,), {}), ("TemperatureLogitsWarper", (-1.0,), {}),
    ("TemperatureLogitsWarper", (1,), {}), ("TemperatureLogitsWarper", ("0.5",), {}),
    ("TopKLogitsWarper", (0,), {}), ("TopKLogitsWarper", (-1,), {}), ("TopKLogitsWarper", (2.5,), {}),
    ("TopPLogitsWarper", (1.5,), {}), ("TopPLogitsWarper", (-0.1,), {}), ("TopPLogitsWarper", ("x",), {}),
    ("TopPLogitsWarper", (0.5,), dict(min_tokens_to_keep=0)), ("TopPLogitsWarper", (0.5,), dict(min_tokens_to_keep=1.5)),
    ("MinPLogitsWarper", (1.5,), {}), ("MinPLogitsWarper", (-0.1,), {}), ("MinPLogitsWarper", (0.1,), dict(min_tokens_to_keep=0)),
    ("TypicalLogitsWarper", (0.0,), {}), ("TypicalLogitsWarper", (1.0,), {}), ("TypicalLogitsWarper", (1.5,), {}),
    ("TypicalLogitsWarper", (0.5,), dict(min_tokens_to_keep=0)),
    ("EpsilonLogitsWarper", (0.0,), {}), ("EpsilonLogitsWarper", (1.0,), {}), ("EpsilonLogitsWarper", ("x",), {}),
    ("EpsilonLogitsWarper", (0.1,), dict(min_tokens_to_keep=0)),
    ("EtaLogitsWarper", (0.0,), {}), ("EtaLogitsWarper", (1.5,), {}), ("EtaLogitsWarper", (0.1,), dict(min_tokens_to_keep=-1)),
    ("TopHLogitsWarper", (0.0,), {}), ("TopHLogitsWarper", (1.5,), {}),
    ("RepetitionPenaltyLogitsProcessor", (0.0,), {}), ("RepetitionPenaltyLogitsProcessor", (-1.0,), {}),
    ("RepetitionPenaltyLogitsProcessor", (2,), {}),
    ("RepetitionPenaltyLogitsProcessor", (1.5,), dict(prompt_ignore_length=-1)),
    ("RepetitionPenaltyLogitsProcessor", (1.5,), dict(prompt_ignore_length=torch.zeros(2, 2, dtype=torch.long))),
    ("NoRepeatNGramLogitsProcessor", (0,), {}), ("NoRepeatNGramLogitsProcessor", (-1,), {}),
    ("NoRepeatNGramLogitsProcessor", (2.0,), {}),
    ("NoBadWordsLogitsProcessor", ([],), {}), ("NoBadWordsLogitsProcessor", ([1, 2],), {}),
    ("NoBadWordsLogitsProcessor", ([[-1]],), {}), ("NoBadWordsLogitsProcessor", ("x",), {}),
    ("NoBadWordsLogitsProcessor", ([[1.5]],), {}), ("NoBadWordsLogitsProcessor", ([[1], [2, -3]],), {}),
    ("SequenceBiasLogitsProcessor", ({},), {}), ("SequenceBiasLogitsProcessor", ({(1,): 1},), {}),
    ("SequenceBiasLogitsProcessor", ({1: 1.0},), {}), ("SequenceBiasLogitsProcessor", ({(-1,): 1.0},), {}),
    ("SequenceBiasLogitsProcessor", ({(): 1.0},), {}), ("SequenceBiasLogitsProcessor", ([[[1], 1]],), {}),
    ("SequenceBiasLogitsProcessor", ([[1, 2.0]],), {}), ("SequenceBiasLogitsProcessor", ("x",), {}),
    ("MinLengthLogitsProcessor", (-1, 0), {}), ("MinLengthLogitsProcessor", (1.5, 0), {}),
    ("MinNewTokensLengthLogitsProcessor", (-1, 3, 0), {}), ("MinNewTokensLengthLogitsProcessor", (3, -1, 0), {}),
    ("ForcedEOSTokenLogitsProcessor", (5, -1), {}), ("ForcedEOSTokenLogitsProcessor", (5, [1, -2]), {}),
    ("ForcedEOSTokenLogitsProcessor", (5, 1.5), {}),
    ("ExponentialDecayLengthPenalty", ((2, 1.1), -1, 3), {}),
    ("WatermarkLogitsProcessor", (20, "cpu"), dict(seeding_scheme="hash")),
    ("WatermarkLogitsProcessor", (20, "cpu"), dict(greenlist_ratio=1.2)),
    ("WatermarkLogitsProcessor", (20, "cpu"), dict(greenlist_ratio=0.0)),
]  # fmt: skip


def raised_by(make):
    try:
        make()
    except Exception as error:  # noqa: BLE001 - the kind of exception is what is compared
        return type(error)
    return None


@pytest.mark.parametrize("name, args, kwargs", BAD_ARGUMENTS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_ARGUMENTS)])
def test_bad_arguments_raise_what_transformers_raises(name, args, kwargs):
    expected = raised_by(lambda: getattr(transformers, name)(*args, **kwargs))
    assert expected is not None, "transformers accepts this: not a bad-argument case"
    with pytest.raises(expected):
        getattr(leanformers, name)(*args, **kwargs)


def test_errors_at_call_time_are_transformers():
    ids, scores = random_inputs(4, 0)
    cases = [
        (("PrefixConstrainedLogitsProcessor", lambda batch_id, row: [], 1), ids, scores),
        (("SequenceBiasLogitsProcessor", {(3, VOCAB + 2): 1.0}), ids, scores),
        (("NoBadWordsLogitsProcessor", [[VOCAB]]), ids, scores),
        (("RepetitionPenaltyLogitsProcessor", 1.5, torch.tensor([1, 2])), ids, scores),
    ]
    for (name, *args), input_ids, values in cases:
        theirs, ours = both(name, *args)
        expected = raised_by(lambda: theirs(input_ids, values.clone()))
        assert expected is not None
        with pytest.raises(expected):
            ours(input_ids, values)


def test_an_empty_bad_word_is_refused():
    # transformers 5 ignores an empty bad word (it bans nothing); it is a mistake, so we say so
    with pytest.raises(ValueError, match="bad_words_ids"):
        lf.NoBadWordsLogitsProcessor([[3], []])
    with pytest.raises(ValueError, match="sequence_bias"):
        lf.SequenceBiasLogitsProcessor([[[], 1.0]])


def test_a_subclass_without_call_cannot_be_made():
    class Incomplete(lf.LogitsProcessor):
        pass

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()
