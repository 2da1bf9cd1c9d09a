"""generate() against transformers' own generate() on tiny random Llama checkpoints (and SmolLM2, slow):
greedy, sampling with the same seed, beam search, processors, scores/logprobs/echo, stop strings (also
while streaming), cache reuse across calls, and bad input."""

import warnings

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers.generation.stopping_criteria import StopStringCriteria as HFStopStringCriteria

import leanformers
from leanformers.generation import KVCache, StopStringCriteria, TextIteratorStreamer, TextStreamer
from test_generation_units import CharTokenizer, FakeModel


@pytest.fixture(autouse=True)
def quiet():
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


@pytest.fixture(scope="module")
def pair(llama_checkpoint):
    hf, folder = llama_checkpoint("gqa")
    return hf, leanformers.LlamaForCausalLM.from_pretrained(folder)


PROMPTS = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14], [0, 0, 0, 0, 15, 16]])
MASK = (PROMPTS != 0).long()


def both(pair, seed=None, ids=PROMPTS, mask=MASK, **kwargs):
    """(transformers' output, ours) for the same call, each after torch.manual_seed(seed) when given."""
    hf, ours = pair
    outs = []
    for model in (hf, ours):
        if seed is not None:
            torch.manual_seed(seed)
        outs.append(model.generate(ids, attention_mask=mask, **kwargs))
    return outs


def assert_scores_close(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=0)


# -- greedy and processors -------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["untied", "tied", "bias"])
def test_greedy_matches_transformers_and_batch_equals_one_at_a_time(llama_checkpoint, variant):
    hf, folder = llama_checkpoint(variant)
    ours = leanformers.LlamaForCausalLM.from_pretrained(folder)
    expected, got = both((hf, ours), max_new_tokens=16, do_sample=False)
    assert torch.equal(got, expected)
    for row in range(PROMPTS.shape[0]):
        prompt = PROMPTS[row][MASK[row].bool()][None]
        alone = ours.generate(prompt, max_new_tokens=16)
        assert alone[0, prompt.shape[1] :].tolist() == got[row, PROMPTS.shape[1] :].tolist()


@pytest.mark.parametrize(
    "settings",
    [
        dict(no_repeat_ngram_size=2),
        dict(min_new_tokens=10, eos_token_id=[2, 3, 4]),
        dict(bad_words_ids=[[17], [40, 41], [5, 6, 7]], repetition_penalty=1.4),
        dict(suppress_tokens=[1, 2, 3], begin_suppress_tokens=[50]),
        dict(forced_eos_token_id=7, max_length=15),
    ],
)
def test_greedy_processors_match_transformers(pair, settings):
    settings = {"max_new_tokens": 12, **settings}
    if "max_length" in settings:
        settings.pop("max_new_tokens")
    expected, got = both(pair, return_dict_in_generate=True, output_scores=True, **settings)
    assert torch.equal(got.sequences, expected.sequences)
    assert_scores_close(got.scores, expected.scores)


def test_eos_mid_generation_pads_like_transformers(pair):
    (plain,) = both(pair, max_new_tokens=12)[:1]
    eos = int(plain[0, 9])  # a token row 0 really produces
    expected, got = both(pair, max_new_tokens=12, eos_token_id=[eos, 99], pad_token_id=0)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("variant", ["untied", "tied", "gqa"])
def test_bf16_greedy_matches_transformers_bf16(llama_checkpoint, variant):
    _, folder = llama_checkpoint(variant)
    hf = transformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).eval()
    ours = leanformers.LlamaForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    assert ours.dtype == hf.dtype == torch.bfloat16
    expected, got = both((hf, ours), max_new_tokens=16, do_sample=False, return_dict_in_generate=True,
                         output_logits=True)
    assert len(got.logits) == len(expected.logits) == 16
    want, have = torch.stack(expected.logits, 1).float(), torch.stack(got.logits, 1).float()  # (B, steps, V)
    # bf16 keeps 8 significant bits, so one rounding moves a value by up to 2**-8 of it. The two libraries
    # round at different places (order of additions, where a norm or softmax goes to fp32 and back), which
    # adds up over the layers: measured here, up to 2 such steps of the largest logit between the two, and up
    # to ~6 from fp32 on the device tests' checkpoints. So 8 steps of the largest logit (3% of it), as in
    # test_devices; a real bug (a wrong mask, position or cache entry) moves logits by about their whole scale.
    atol = 8 * 2**-8 * float(want.abs().max())
    prompt, steps = PROMPTS.shape[1], want.shape[1]
    compared = 0
    for row in range(want.shape[0]):
        # identical tokens until the rows part, if they do; then only where transformers' top two were
        # within 2 * atol (each may move by atol), and no comparison after it (the prefixes differ)
        differ = (got.sequences[row, prompt:] != expected.sequences[row, prompt:]).nonzero()
        end = int(differ[0]) if len(differ) else steps
        torch.testing.assert_close(have[row, : end + 1], want[row, : end + 1], atol=atol, rtol=0)
        if end < steps:
            top2 = want[row, end].topk(2).values
            assert top2[0] - top2[1] <= 2 * atol, f"row {row} parts at step {end} where the pick was clear"
        compared += end
    assert compared >= steps * want.shape[0] // 2  # most steps are clear: the check is not vacuous


# -- sampling --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        dict(top_k=10),
        dict(top_p=0.8, top_k=0),
        dict(min_p=0.1, top_k=0),
        dict(temperature=0.7),
        dict(repetition_penalty=1.3),
        dict(temperature=1.4, top_k=20, top_p=0.9, min_p=0.02, repetition_penalty=1.2),
        dict(num_return_sequences=2, top_p=0.95, no_repeat_ngram_size=3),
    ],
)
def test_sampling_matches_transformers_with_same_seed(pair, settings):
    expected, got = both(pair, seed=3, max_new_tokens=14, do_sample=True, return_dict_in_generate=True, output_scores=True, **settings)
    assert torch.equal(got.sequences, expected.sequences)
    assert_scores_close(got.scores, expected.scores)


def test_sampling_with_a_generator_is_reproducible_and_leaves_global_rng(pair):
    _, ours = pair
    state = torch.get_rng_state()
    a = ours.generate(PROMPTS, attention_mask=MASK, do_sample=True, max_new_tokens=8, generator=torch.Generator().manual_seed(1))
    b = ours.generate(PROMPTS, attention_mask=MASK, do_sample=True, max_new_tokens=8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)


# -- beam search -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "settings",
    [
        dict(num_beams=4, num_return_sequences=2),
        dict(num_beams=3, length_penalty=0.5, early_stopping=True, eos_token_id=[2, 40]),
        dict(num_beams=4, early_stopping="never", length_penalty=-0.5, num_return_sequences=4),
        dict(num_beams=2, no_repeat_ngram_size=2, output_logits=True),
    ],
)
def test_beam_search_matches_transformers(pair, settings):
    hf, ours = pair
    expected, got = both(pair, max_new_tokens=12, return_dict_in_generate=True, output_scores=True, **settings)
    assert torch.equal(got.sequences, expected.sequences)
    torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, atol=1e-4, rtol=0)
    assert got.beam_indices.tolist() == expected.beam_indices.tolist()
    assert_scores_close(got.scores, expected.scores)
    if settings.get("output_logits"):
        assert_scores_close(got.logits, expected.logits)
    ours_t = ours.compute_transition_scores(got.sequences, got.scores, got.beam_indices)
    hf_t = hf.compute_transition_scores(expected.sequences, expected.scores, expected.beam_indices)
    torch.testing.assert_close(ours_t, hf_t, atol=1e-4, rtol=0)
    # plain tensor output: the same sequences
    assert torch.equal(ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=12, **settings), got.sequences)


def test_beam_sampling_matches_transformers(pair):
    expected, got = both(pair, seed=9, max_new_tokens=10, num_beams=3, do_sample=True, top_k=8, num_return_sequences=3)
    assert torch.equal(got, expected)


def test_beam_search_reorders_the_cache(pair):
    """After beam search the cache holds one row per beam, each the keys of the prompt row it continues."""
    _, ours = pair
    out = ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=10, num_beams=3, return_dict_in_generate=True)
    cache = out.cache
    assert cache.get_seq_length() == PROMPTS.shape[1] + 9 and cache.keys[0].shape[0] == 3 * PROMPTS.shape[0]
    # each beam kept at the end continues a prompt row: its cached keys for the prompt equal that row's
    fresh = KVCache()
    ours(input_ids=PROMPTS.repeat_interleave(3, 0), attention_mask=MASK.repeat_interleave(3, 0), past_key_values=fresh)
    torch.testing.assert_close(cache.keys[0][:, :, : PROMPTS.shape[1]], fresh.keys[0][:, :, : PROMPTS.shape[1]])


# -- scores, logprobs, echo -----------------------------------------------------------------------
def test_logprobs_and_transition_scores_match_transformers(pair):
    hf, ours = pair
    kwargs = dict(max_new_tokens=10, do_sample=True, top_k=5, return_dict_in_generate=True, output_scores=True, output_logits=True)
    expected, got = both(pair, seed=4, **kwargs)
    assert torch.equal(got.sequences, expected.sequences)
    assert_scores_close(got.logits, expected.logits)
    for normalize in (False, True):
        torch.testing.assert_close(
            ours.compute_transition_scores(got.sequences, got.scores, normalize_logits=normalize),
            hf.compute_transition_scores(expected.sequences, expected.scores, normalize_logits=normalize),
            atol=1e-4, rtol=0,
        )  # fmt: skip
    torch.manual_seed(4)
    with_logprobs = ours.generate(PROMPTS, attention_mask=MASK, output_logprobs=True, **kwargs)
    hf_raw = hf.compute_transition_scores(expected.sequences, expected.logits, normalize_logits=True)
    torch.testing.assert_close(with_logprobs.logprobs, hf_raw, atol=1e-4, rtol=0)
    assert with_logprobs.logprobs.shape == (3, 10) and (with_logprobs.logprobs <= 0).all()


def test_logprobs_are_zero_after_eos(pair):
    _, ours = pair
    plain = ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=8)
    eos = int(plain[1, 8])  # row 1 ends after its 3rd new token
    out = ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=8, eos_token_id=eos, output_logprobs=True)
    assert isinstance(out, leanformers.generation.GenerateDecoderOnlyOutput)  # output_logprobs implies the dict
    ended = out.sequences[1, 6:].tolist().index(eos)
    assert (out.logprobs[1, ended + 1 :] == 0).all() and (out.logprobs[1, : ended + 1] < 0).all()


def test_echo_logprobs_equal_a_plain_forward_pass(pair):
    _, ours = pair
    out = ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=4, echo=True, output_logprobs=True)
    logits = ours(input_ids=PROMPTS, attention_mask=MASK).logits
    expected = torch.log_softmax(logits[:, :-1], -1).gather(-1, PROMPTS[:, 1:, None]).squeeze(-1)
    expected = torch.cat([torch.zeros(3, 1), expected], 1) * MASK
    torch.testing.assert_close(out.prompt_logprobs, expected, atol=1e-5, rtol=0)
    assert out.prompt_logprobs.shape == PROMPTS.shape and out.logprobs.shape == (3, 4)
    # the generated tokens are those of a run without echo
    assert torch.equal(out.sequences, ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=4))


def test_prefill_keeps_one_logit_unless_echo():
    model = FakeModel()
    kept = []
    forward = model.forward

    def spy(*args, **kwargs):
        out = forward(*args, **kwargs)
        kept.append(out.logits.shape[1])
        return out

    model.forward = spy
    model.generate(torch.tensor([[3, 4, 5, 6]]), max_new_tokens=3)
    assert kept == [1, 1, 1]
    kept.clear()
    model.generate(torch.tensor([[3, 4, 5, 6]]), max_new_tokens=3, echo=True)
    assert kept == [4, 1, 1]


# -- caches ----------------------------------------------------------------------------------------
def test_cache_reuse_prefills_only_the_new_suffix_and_matches_a_fresh_run():
    model = FakeModel()
    cache = KVCache()
    first = model.generate(torch.tensor([[3, 4, 5, 6]]), max_new_tokens=4, past_key_values=cache)
    assert cache.get_seq_length() == 7  # prompt + 3 of the 4 new tokens went through the model
    # chat: the next prompt is the whole conversation so far plus a new turn
    follow = torch.cat([first, torch.tensor([[9, 10]])], dim=1)
    model.calls.clear()
    again = model.generate(follow, max_new_tokens=3, cache=cache)
    assert model.calls[0] == (3, 7)  # only the last generated token and the new turn are prefilled
    assert torch.equal(again, model.generate(follow, max_new_tokens=3))
    # a prompt that diverges early: the cache is cropped to the common prefix
    model.calls.clear()
    other = model.generate(torch.tensor([[3, 4, 8, 8, 8]]), max_new_tokens=2, cache=cache)
    assert model.calls[0] == (3, 2)
    assert torch.equal(other, model.generate(torch.tensor([[3, 4, 8, 8, 8]]), max_new_tokens=2))
    # the same prompt again still runs its last token to get logits
    model.calls.clear()
    model.generate(torch.tensor([[3, 4, 8, 8, 8]]), max_new_tokens=2, cache=cache)
    assert model.calls[0] == (1, 4)


def test_cache_reuse_on_llama_matches_transformers(pair):
    hf, ours = pair
    cache = KVCache()
    prompt = torch.tensor([[5, 6, 7, 8, 9]])
    first = ours.generate(prompt, max_new_tokens=6, cache=cache)
    follow = torch.cat([first, torch.tensor([[20, 21, 22]])], dim=1)
    got = ours.generate(follow, max_new_tokens=6, cache=cache)
    assert torch.equal(got, hf.generate(follow, attention_mask=torch.ones_like(follow), max_new_tokens=6))
    # another batch size: the cache starts over
    got = ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=5, cache=cache)
    assert torch.equal(got, hf.generate(PROMPTS, attention_mask=MASK, max_new_tokens=5))


def test_default_cache_grows_with_the_tokens_used_not_the_context(pair):
    _, ours = pair
    out = ours.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, return_dict_in_generate=True)
    assert out.cache.keys[0].shape[2] == 7 < ours.config.max_position_embeddings
    grown = KVCache()
    ours.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4, cache=grown)
    assert grown.keys[0].shape[2] == 256  # one growth chunk


def test_a_cache_filled_elsewhere_is_refused(pair):
    _, ours = pair
    cache = KVCache()
    ours(input_ids=torch.tensor([[5, 6, 7]]), past_key_values=cache)
    with pytest.raises(ValueError, match="not recorded"):
        ours.generate(torch.tensor([[5, 6, 7, 8]]), max_new_tokens=2, cache=cache)


# -- stop strings ----------------------------------------------------------------------------------
def byte_level_tokenizers():
    """One byte-level BPE vocabulary (printable ASCII plus the pieces of transformers' examples), as
    transformers' tokenizer and ours."""
    pieces = ["st", "op", "stop", "opera", "sto", "pper", "las", "topper", "to", "pped", "at", "tion"]
    vocab = {t: i for i, t in enumerate([chr(c) for c in range(33, 127)] + pieces)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend), leanformers.PreTrainedTokenizer(tokenizer_object=backend), vocab


@pytest.mark.parametrize(
    "tokens, stops",
    [
        (["st", "op"], True), (["stop"], True), (["st", "opera"], True), (["sto", "pper"], True),
        (["las", "topper"], True), (["s", "to", "pped"], True),
        (["stop", "at"], False), (["st", "op", "at"], False), (["st", "opera", "tion"], False),
        (["a", "b", "c"], False), (["x", "s", "t", "o", "p"], True),
    ],
)  # fmt: skip
def test_stop_string_criteria_cases_from_transformers_docs(tokens, stops):
    hf_tok, our_tok, vocab = byte_level_tokenizers()
    ids = torch.tensor([[vocab[t] for t in tokens]])
    assert HFStopStringCriteria(hf_tok, ["stop"])(ids, None).tolist() == [stops]
    assert StopStringCriteria(our_tok, ["stop"])(ids, None).tolist() == [stops]


def test_stop_strings_in_generate_match_transformers(pair):
    hf_tok, our_tok, vocab = byte_level_tokenizers()
    plain = both(pair, max_new_tokens=16)[1]
    # a stop string made of the text of new tokens 4..6 of row 1: it spans three tokens
    stop = our_tok.decode(plain[1, 9:12].tolist())
    hf, ours = pair
    expected = hf.generate(PROMPTS, attention_mask=MASK, max_new_tokens=16, stop_strings=[stop], tokenizer=hf_tok)
    got = ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=16, stop_strings=stop, tokenizer=our_tok)
    assert torch.equal(got, expected)
    assert stop in our_tok.decode(got[1, 6:12].tolist()) and (got[1, 12:] == 0).all()  # stopped, then padded
    assert not (plain[1, 12:] == 0).all()
    with pytest.raises(ValueError, match="tokenizer"):
        ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=4, stop_strings=[stop])


class ScriptedModel(FakeModel):
    """Produces the tokens of `script` in order, whatever the prompt."""

    def __init__(self, script):
        super().__init__()
        self.script = script

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True, logits_to_keep=0):
        if past_key_values is not None:
            k = torch.zeros(input_ids.shape[0], 1, input_ids.shape[1], 1)
            past_key_values.update(0, k, k)
        produced = int(position_ids[0, -1]) + 1 - self.prompt_len
        logits = torch.zeros(input_ids.shape[0], 1, 32)
        logits[:, 0, self.script[produced]] = 10.0
        return type("Out", (), {"logits": logits, "past_key_values": past_key_values})()


def char_ids(text):
    tok = CharTokenizer()
    inverse = {v if isinstance(v, str) else None: k for k, v in tok.pieces.items()}
    return [inverse[c] for c in text]


@pytest.mark.parametrize("threaded", [False, True])
def test_streaming_holds_back_a_stop_string_split_over_three_tokens(threaded):
    text = "hey cab dog"
    model = ScriptedModel(char_ids(text))
    model.prompt_len = 1
    tok = CharTokenizer()
    pieces = []

    class Collect(TextStreamer):
        def on_finalized_text(self, piece, stream_end=False):
            pieces.append(piece)

    kwargs = dict(max_new_tokens=11, stop_strings=["cab"], tokenizer=tok)
    if threaded:
        streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=10)
        out = model.generate(torch.tensor([[0]]), streamer=streamer, **kwargs)
        pieces = list(streamer)
    else:
        out = model.generate(torch.tensor([[0]]), streamer=Collect(tok, skip_prompt=True), **kwargs)
    assert tok.decode(out[0, 1:].tolist()) == "hey cab"  # generation stops on the token completing "cab"
    assert "".join(pieces) == "hey "  # "c" and "ca" were held back, and the stop string is never shown
    # a near miss is released once it is known not to be a stop string
    model = ScriptedModel(char_ids("ca dog"))
    model.prompt_len = 1
    pieces.clear()
    model.generate(torch.tensor([[0]]), streamer=Collect(tok, skip_prompt=True), max_new_tokens=6, stop_strings="cab", tokenizer=tok)
    assert "".join(pieces) == "ca dog"
    assert pieces[:2] == ["", ""]  # "c" then "ca": both may start "cab"


# -- bad input -------------------------------------------------------------------------------------
def test_bad_input_gets_transformers_errors(pair):
    hf, ours = pair
    ids = PROMPTS[1:2]
    cases = [dict(max_new_tokens=0), dict(max_new_tokens=-2), dict(do_sample=True, temperature=0.0),
             dict(num_beams=2, num_return_sequences=3), dict(bad_words_ids=[[-1]]), dict(bad_words_ids=[3])]  # fmt: skip
    for kwargs in cases:
        with pytest.raises(ValueError):
            hf.generate(ids, **{"max_new_tokens": 3, **kwargs})
        with pytest.raises(ValueError):
            ours.generate(ids, **{"max_new_tokens": 3, **kwargs})
    # transformers' generate() lets these through (top_p=1.1 skips the filter, 0.0 keeps one token);
    # its TopPLogitsWarper rejects them, and so do we, up front
    for top_p in (0.0, 1.1, -0.5):
        with pytest.raises(ValueError, match="top_p"):
            ours.generate(ids, max_new_tokens=3, do_sample=True, top_p=top_p)
    with pytest.raises(ValueError, match="64 tokens.*context"):
        ours.generate(torch.arange(64)[None] % 100 + 3, max_new_tokens=1)
    with pytest.raises(ValueError, match="beam search"):
        ours.generate(ids, max_new_tokens=3, num_beams=2, cache=KVCache())


def test_padding_without_attention_mask_warns_like_transformers(pair):
    _, ours = pair
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        inferred = ours.generate(PROMPTS, max_new_tokens=5)
    assert any("attention_mask" in str(w.message) for w in caught)
    assert torch.equal(inferred, ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=5))


# -- SmolLM2 ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_smollm2_sampling_and_beam_search_match_transformers(smollm2_pair):
    ref, ours = smollm2_pair
    ids = torch.tensor([[504, 3458, 282, 4649, 314, 2564, 28], [1, 1, 1, 504, 2365, 314, 253]])
    mask = torch.tensor([[1] * 7, [0, 0, 0, 1, 1, 1, 1]])
    expected, got = both((ref, ours), seed=0, ids=ids, mask=mask, max_new_tokens=10, do_sample=True, top_p=0.9,
                         temperature=0.8, repetition_penalty=1.2, return_dict_in_generate=True, output_scores=True)  # fmt: skip
    assert torch.equal(got.sequences, expected.sequences)
    assert_scores_close(got.scores, expected.scores)
    expected, got = both((ref, ours), ids=ids, mask=mask, max_new_tokens=8, num_beams=4, num_return_sequences=2,
                         return_dict_in_generate=True, output_scores=True)  # fmt: skip
    assert torch.equal(got.sequences, expected.sequences)
    torch.testing.assert_close(got.sequences_scores, expected.sequences_scores, atol=1e-4, rtol=0)
    assert got.beam_indices.tolist() == expected.beam_indices.tolist()


# -- GPT-2 -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpt2_pair(tmp_path_factory):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                     bos_token_id=1, eos_token_id=2, pad_token_id=0)  # fmt: skip
    hf = transformers.GPT2LMHeadModel(config).eval()
    folder = tmp_path_factory.mktemp("gpt2")
    hf.save_pretrained(folder)
    return hf, leanformers.GPT2LMHeadModel.from_pretrained(folder)


@pytest.mark.parametrize(
    "settings",
    [dict(do_sample=False), dict(do_sample=True, top_k=10, temperature=0.9), dict(num_beams=3, num_return_sequences=2)],
)
def test_gpt2_generation_matches_transformers(gpt2_pair, settings):
    expected, got = both(gpt2_pair, seed=2, max_new_tokens=10, return_dict_in_generate=True, output_scores=True, **settings)
    assert torch.equal(got.sequences, expected.sequences)
    assert_scores_close(got.scores, expected.scores)
