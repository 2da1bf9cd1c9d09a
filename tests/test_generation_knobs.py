"""generate() with the settings that need the new processors (sequence_bias, epsilon/eta/top-h cutoffs,
renormalize_logits, remove_invalid_values, exponential_decay_length_penalty, forced BOS/EOS,
prefix_allowed_tokens_fn, watermarking_config) and with a user's own processor and stopping-criteria
lists, against transformers' generate() on a tiny random Llama and (slow) SmolLM2, token for token with the
same seed; the watermark detected in what generate() wrote; AsyncTextIteratorStreamer."""

import asyncio
import threading

import pytest
import torch
import transformers

import leanformers
from leanformers import generation as lf
from test_generation import MASK, PROMPTS, assert_scores_close, pair, quiet  # noqa: F401 - fixtures
from test_generation_units import CharTokenizer, CountingModel

# Tiny models and SmolLM2 alike: one thread does not stall when another process holds a core (see one_thread).
pytestmark = pytest.mark.usefixtures("one_thread")


def even_tokens(batch_id, ids):
    """A prefix_allowed_tokens_fn: even ids only, and 3 for the second prompt."""
    return list(range(0, 128, 2)) + ([3] if batch_id else [])


def both(pair, seed=0, ids=PROMPTS, mask=MASK, **kwargs):
    """(transformers' output, ours) for the same call after torch.manual_seed(seed); a `library` kwarg names a
    class to build in each library (a watermarking config, processors, stopping criteria)."""
    outs = []
    for model, library in zip(pair, (transformers, leanformers), strict=True):
        call = {k: v(library) if callable(v) and k != "prefix_allowed_tokens_fn" else v for k, v in kwargs.items()}
        torch.manual_seed(seed)
        outs.append(model.generate(ids, attention_mask=mask, return_dict_in_generate=True, output_scores=True, **call))
    return outs


def assert_same_generation(expected, got):
    assert torch.equal(got.sequences, expected.sequences)
    assert_scores_close(got.scores, expected.scores)


KNOBS = {
    "sequence_bias": dict(sequence_bias={(20,): 4.0, (21, 22): 6.0, (40,): -30.0}),
    "sequence_bias_list": dict(sequence_bias=[[[30], 5.0], [[12, 13, 14, 30], 9.0]]),
    "epsilon": dict(do_sample=True, epsilon_cutoff=0.02, top_k=0),
    "eta": dict(do_sample=True, eta_cutoff=0.01, top_k=0),
    "top_h": dict(do_sample=True, top_h=0.5, top_k=0),
    "renormalize": dict(do_sample=True, renormalize_logits=True, top_k=20, temperature=0.8),
    "remove_invalid_values": dict(remove_invalid_values=True, bad_words_ids=[[17]]),
    "exponential_decay": dict(exponential_decay_length_penalty=(2, 3.0), eos_token_id=[2, 50], pad_token_id=0),
    "forced_eos": dict(forced_eos_token_id=[7, 9], max_length=14),
    "prefix_allowed_tokens_fn": dict(prefix_allowed_tokens_fn=even_tokens),
    "watermark_dict": dict(do_sample=True, watermarking_config={"bias": 4.0, "greenlist_ratio": 0.5}),
    "watermark_selfhash": dict(watermarking_config=lambda lib: lib.WatermarkingConfig(seeding_scheme="selfhash", context_width=2)),
    "beams_with_knobs": dict(num_beams=3, num_return_sequences=2, sequence_bias={(20,): 2.0}, renormalize_logits=True,
                             prefix_allowed_tokens_fn=even_tokens),
    "everything_sampled": dict(do_sample=True, num_return_sequences=2, sequence_bias={(33,): 3.0}, epsilon_cutoff=0.01,
                               eta_cutoff=0.005, top_h=0.9, renormalize_logits=True, exponential_decay_length_penalty=(3, 1.2),
                               remove_invalid_values=True, watermarking_config={"bias": 1.5}),
}  # fmt: skip


@pytest.mark.parametrize("knob", KNOBS)
def test_generate_with_each_new_setting_matches_transformers(pair, knob):
    settings = {"max_new_tokens": 10, **KNOBS[knob]}
    if "max_length" in settings:
        settings.pop("max_new_tokens")
    expected, got = both(pair, seed=4, **settings)
    assert_same_generation(expected, got)
    plain = both(pair, seed=4, **{k: v for k, v in settings.items() if k in ("max_new_tokens", "max_length", "do_sample")})[1]
    steps = min(len(got.scores), len(plain.scores))
    assert not torch.equal(torch.stack(got.scores[:steps]), torch.stack(plain.scores[:steps]))  # the setting acts


def test_forced_bos_after_a_one_token_prompt_matches_transformers(pair):
    expected, got = both(pair, ids=torch.tensor([[5], [9]]), mask=None, max_new_tokens=5, forced_bos_token_id=44)
    assert_same_generation(expected, got)
    assert got.sequences[:, 1].tolist() == [44, 44]


def test_user_processors_replace_the_generated_ones_of_their_type_like_transformers(pair):
    def processors(library):
        return library.LogitsProcessorList([library.RepetitionPenaltyLogitsProcessor(3.0), library.TopKLogitsWarper(4),
                                            library.SequenceBiasLogitsProcessor({(25,): 2.0})])  # fmt: skip

    expected, got = both(pair, seed=1, max_new_tokens=10, do_sample=True, top_k=0, repetition_penalty=1.1,
                         logits_processor=processors)  # fmt: skip
    assert_same_generation(expected, got)
    # the user's penalty of 3.0 replaced the generated 1.1: without it the tokens differ
    _, lighter = both(pair, seed=1, max_new_tokens=10, do_sample=True, top_k=0, repetition_penalty=1.1,
                      logits_processor=lambda lib: lib.LogitsProcessorList([lib.TopKLogitsWarper(4)]))  # fmt: skip
    assert not torch.equal(lighter.sequences, got.sequences)


@pytest.mark.parametrize("max_length", [9, 20])
def test_a_user_max_length_criterion_decides_the_length_like_transformers(pair, max_length):
    def criteria(library):
        return library.StoppingCriteriaList([library.MaxLengthCriteria(max_length)])

    expected, got = both(pair, max_new_tokens=6, stopping_criteria=criteria)
    assert got.sequences.shape[1] == max_length
    assert_same_generation(expected, got)


def test_a_user_max_time_criterion_stops_at_once(pair):
    _, ours = pair
    out = ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=10,
                        stopping_criteria=lf.StoppingCriteriaList([lf.MaxTimeCriteria(0.0, initial_timestamp=0)]))  # fmt: skip
    assert out.shape[1] == PROMPTS.shape[1] + 1


def test_watermark_written_by_generate_is_detected_by_both_libraries(pair):
    hf, ours = pair
    config = {"bias": 6.0, "seeding_scheme": "lefthash"}
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 11, 12]])
    marked = ours.generate(ids, max_new_tokens=24, watermarking_config=config)[:, 4:]
    plain = ours.generate(ids, max_new_tokens=24)[:, 4:]
    detectors = (transformers.WatermarkDetector(hf.config, "cpu", transformers.WatermarkingConfig(**config)),
                 lf.WatermarkDetector(ours.config, "cpu", config))  # fmt: skip
    for detector in detectors:
        assert detector(marked).tolist() == [True, True]
        assert detector(plain).tolist() == [False, False]
    theirs, mine = (d(marked, return_dict=True) for d in detectors)
    assert mine.z_score == pytest.approx(theirs.z_score) and mine.p_value == pytest.approx(theirs.p_value)


def test_new_settings_save_and_load_in_transformers(tmp_path):
    config = lf.GenerationConfig(do_sample=True, top_h=0.5, sequence_bias=[[[5], 1.0]],
                                 watermarking_config={"bias": 3.0, "seeding_scheme": "selfhash"})  # fmt: skip
    assert isinstance(config.watermarking_config, lf.WatermarkingConfig)
    config.save_pretrained(tmp_path)
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert theirs.watermarking_config.to_dict() == config.watermarking_config.to_dict()
    assert (theirs.top_h, theirs.sequence_bias) == (0.5, [[[5], 1.0]])
    assert lf.GenerationConfig.from_pretrained(tmp_path) == config


def test_bad_settings_get_transformers_errors(pair):
    for settings in (dict(sequence_bias={(3,): 1}), dict(sequence_bias={}), dict(do_sample=True, top_h=1.5),
                     dict(watermarking_config={"seeding_scheme": "hash"}), dict(bad_words_ids=[[-1]]),
                     dict(forced_eos_token_id=-3)):  # fmt: skip
        for model in pair:
            with pytest.raises(ValueError):
                model.generate(PROMPTS, attention_mask=MASK, max_new_tokens=3, **settings)
    with pytest.raises(ValueError, match="prefix_allowed_tokens_fn"):
        pair[1].generate(PROMPTS, attention_mask=MASK, max_new_tokens=3, prefix_allowed_tokens_fn=lambda b, ids: [])


# -- AsyncTextIteratorStreamer ------------------------------------------------------------------------
def test_async_streamer_yields_the_text_generate_writes_from_a_thread():
    tok = CharTokenizer()
    model = CountingModel(eos=None)
    result = {}

    async def consume():
        streamer = lf.AsyncTextIteratorStreamer(tok, skip_prompt=True, timeout=10)
        thread = threading.Thread(target=lambda: result.update(out=model.generate(torch.tensor([[20]]), max_new_tokens=9,
                                                                                  streamer=streamer)))  # fmt: skip
        thread.start()
        pieces = [piece async for piece in streamer]
        thread.join()
        return pieces

    pieces = asyncio.run(consume())
    assert len(pieces) > 1 and "".join(pieces) == tok.decode(result["out"][0, 1:].tolist())
    assert leanformers.AsyncTextIteratorStreamer is lf.AsyncTextIteratorStreamer


def test_async_streamer_times_out_and_needs_a_running_loop():
    async def wait():
        await anext(lf.AsyncTextIteratorStreamer(CharTokenizer(), timeout=0.01))

    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(wait())
    with pytest.raises(RuntimeError, match="running event loop"):
        lf.AsyncTextIteratorStreamer(CharTokenizer())


# -- SmolLM2 ------------------------------------------------------------------------------------------
SMOL_KNOBS = ["sequence_bias", "epsilon", "eta", "top_h", "renormalize", "exponential_decay", "prefix_allowed_tokens_fn",
              "watermark_selfhash"]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("knob", SMOL_KNOBS)
def test_smollm2_generate_with_each_new_setting_matches_transformers(smollm2_pair, knob):
    settings = dict(KNOBS[knob])
    if knob == "sequence_bias":
        settings = dict(sequence_bias={(28,): 5.0, (314, 253): 4.0})
    if knob == "exponential_decay":
        settings.update(eos_token_id=[28, 2], pad_token_id=2)
    ids = torch.tensor([[504, 3458, 282, 4649, 314, 2564, 28], [1, 1, 1, 504, 2365, 314, 253]])
    mask = torch.tensor([[1] * 7, [0, 0, 0, 1, 1, 1, 1]])
    expected, got = both(smollm2_pair, seed=0, ids=ids, mask=mask, max_new_tokens=8, **settings)
    assert_same_generation(expected, got)
