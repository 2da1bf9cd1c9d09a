"""Generation units against transformers: logits processors, GenerationConfig, the decode loop, streamers.

No real checkpoint is needed: the decode loop runs on tiny fake models written here (one that uses the
KVCache like a real attention layer, one that counts), and on a tiny random transformers Llama wrapped
in our forward contract, so generate() is compared token for token with transformers' own generate().
"""

import json
import threading
import warnings
from types import SimpleNamespace

import pytest
import torch
import transformers
from torch import nn
from transformers.generation import logits_process as hf_lp

from leanformers.generation import (
    GenerationConfig,
    GenerationMixin,
    LogitsProcessorList,
    StoppingCriteria,
    TextIteratorStreamer,
    TextStreamer,
    apply_min_length,
    apply_min_new_tokens,
    apply_min_p,
    apply_no_repeat_ngram,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
    apply_typical_p,
    build_logits_processors,
    decode_steps,
    multinomial_draw,
    sample_next_token,
)

VOCAB = 32


# -- fake models ------------------------------------------------------------------------------------
class FakeModel(nn.Module, GenerationMixin):
    """Deterministic causal 'attention': each position averages the (unmasked) inputs so far, through the cache.

    Asserts the forward contract generate() must keep: mask width = past + current tokens, position ids given.
    """

    def __init__(self, vocab=VOCAB, dim=16, context=64, eos=None, pad=None, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.embed = nn.Parameter(torch.randn(vocab, dim, generator=g, dtype=torch.float64))
        self.pos = nn.Parameter(torch.randn(context, dim, generator=g, dtype=torch.float64))
        self.head = nn.Parameter(torch.randn(vocab, dim, generator=g, dtype=torch.float64) * 3)
        self.config = SimpleNamespace(eos_token_id=eos, pad_token_id=pad, bos_token_id=1, max_position_embeddings=context)
        self.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=pad, bos_token_id=1)
        self.calls = []

    @property
    def device(self):
        return self.embed.device

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True, logits_to_keep=0):
        batch, length = input_ids.shape
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        self.calls.append((length, past))
        assert position_ids is not None and position_ids.shape == (batch, length)
        if attention_mask is not None:
            assert attention_mask.shape == (batch, past + length)
        h = self.embed[input_ids] + self.pos[position_ids]  # (B, T, D)
        keys = h[:, None]  # (B, 1, T, D)
        if past_key_values is not None:
            keys, _ = past_key_values.update(0, keys, keys)
        keys = keys[:, 0]  # (B, S, D)
        allowed = torch.ones(length, past + length, dtype=torch.bool).tril(past)[None]  # (1, T, S)
        if attention_mask is not None:
            allowed = allowed & attention_mask[:, None, :].bool()
        weights = allowed.double() / allowed.sum(-1, keepdim=True).clamp(min=1)
        logits = torch.tanh(weights @ keys) @ self.head.T  # (B, T, V)
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits.float(), past_key_values=past_key_values)


class CountingModel(FakeModel):
    """Next token = last token + 1 (mod vocab): EOS arrives at a step known in advance."""

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True, logits_to_keep=0):
        if past_key_values is not None:
            k = torch.zeros(input_ids.shape[0], 1, input_ids.shape[1], 1)
            past_key_values.update(0, k, k)
        logits = torch.nn.functional.one_hot((input_ids + 1) % VOCAB, VOCAB).float() * 10
        if logits_to_keep:
            logits = logits[:, -logits_to_keep:]
        return SimpleNamespace(logits=logits, past_key_values=past_key_values)


def hf_model_config(**kwargs):
    return transformers.LlamaConfig(
        vocab_size=VOCAB * 2,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **kwargs,
    )


class HFLlamaAdapter(nn.Module, GenerationMixin):
    """A tiny transformers Llama behind our forward contract (its own DynamicCache rides on our KVCache)."""

    def __init__(self, hf_model):
        super().__init__()
        self.hf = hf_model
        c = hf_model.config
        self.config = SimpleNamespace(
            eos_token_id=c.eos_token_id,
            pad_token_id=c.pad_token_id,
            bos_token_id=c.bos_token_id,
            max_position_embeddings=c.max_position_embeddings,
        )
        self.generation_config = GenerationConfig.from_model_config(hf_model.generation_config.to_dict())

    @property
    def device(self):
        return self.hf.device

    def forward(self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=True, logits_to_keep=0):
        hf_cache = None
        if past_key_values is not None:
            hf_cache = getattr(past_key_values, "hf_cache", None)
            if hf_cache is None:
                hf_cache = past_key_values.hf_cache = transformers.DynamicCache(config=self.hf.config)
        out = self.hf(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=hf_cache,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
        )
        return SimpleNamespace(logits=out.logits, past_key_values=past_key_values)


@pytest.fixture(scope="module")
def hf_pair():
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_model_config(bos_token_id=1, eos_token_id=2, pad_token_id=0)).eval()
    return hf, HFLlamaAdapter(hf)


class CharTokenizer:
    """decode(ids) -> text, where a few ids stand for the two halves of the UTF-8 bytes of 'é'."""

    pieces = {i: chr(ord("a") + i) for i in range(26)} | {26: " ", 27: "\n", 28: b"\xc3", 29: b"\xa9", 30: "!", 31: "."}

    def decode(self, ids, skip_special_tokens=False):
        data = b""
        for i in ids:
            piece = self.pieces[int(i)]
            data += piece if isinstance(piece, bytes) else piece.encode()
        return data.decode("utf-8", errors="replace")


def hf_warnings_off():
    transformers.logging.set_verbosity_error()
    warnings.simplefilter("ignore")


# -- logits processors vs transformers' classes --------------------------------------------------
@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(1)
    return torch.randn(4, 50, generator=g) * 3


def test_repetition_penalty_matches_transformers(logits):
    ids = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(2))
    for penalty in (1.3, 0.7):
        expected = hf_lp.RepetitionPenaltyLogitsProcessor(penalty)(ids, logits.clone())
        torch.testing.assert_close(apply_repetition_penalty(logits, ids, penalty), expected, rtol=0, atol=0)
    # left padding is not penalized
    pad_lengths = torch.tensor([0, 3, 5, 12])
    expected = hf_lp.RepetitionPenaltyLogitsProcessor(1.3, prompt_ignore_length=pad_lengths)(ids, logits.clone())
    got = apply_repetition_penalty(logits, ids, 1.3, ignore_before=pad_lengths)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_top_k_matches_transformers_with_ties(logits):
    tied = logits.clone()
    tied[:, :6] = 100.0  # six tokens tie for the best score
    for scores in (logits, tied):
        for k in (1, 3, 10, 50, 80):
            expected = hf_lp.TopKLogitsWarper(k)(None, scores.clone())
            torch.testing.assert_close(apply_top_k(scores, k), expected, rtol=0, atol=0)
    assert torch.isfinite(apply_top_k(tied, 3)).sum(-1).tolist() == [6, 6, 6, 6]


def test_top_p_matches_transformers_and_keeps_one(logits):
    for p in (0.9, 0.5, 0.1, 1e-8):
        expected = hf_lp.TopPLogitsWarper(p)(None, logits.clone())
        torch.testing.assert_close(apply_top_p(logits, p), expected, rtol=0, atol=0)
    kept = torch.isfinite(apply_top_p(logits, 1e-8))
    assert kept.sum(-1).tolist() == [1, 1, 1, 1]
    assert (kept.float().argmax(-1) == logits.argmax(-1)).all()


def test_temperature_min_p_typical_ngram_match_transformers(logits):
    for t in (0.5, 1.7):
        torch.testing.assert_close(apply_temperature(logits, t), hf_lp.TemperatureLogitsWarper(t)(None, logits))
    for m in (0.05, 0.3):
        torch.testing.assert_close(apply_min_p(logits, m), hf_lp.MinPLogitsWarper(m)(None, logits.clone()))
    for mass in (0.2, 0.9):
        expected = hf_lp.TypicalLogitsWarper(mass)(None, logits.clone())
        torch.testing.assert_close(apply_typical_p(logits, mass), expected, rtol=0, atol=0)
    ids = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 4, 4], [1, 2, 1, 2, 1], [0, 1, 2, 3, 4]])
    for n in (2, 3):
        expected = hf_lp.NoRepeatNGramLogitsProcessor(n)(ids, logits.clone())
        torch.testing.assert_close(apply_no_repeat_ngram(logits, ids, n), expected, rtol=0, atol=0)


def test_min_length_and_min_new_tokens_mask_eos_like_transformers(logits):
    eos = torch.tensor([3, 7])
    ids = torch.zeros(4, 6, dtype=torch.long)
    for min_new in (1, 2, 5):
        expected = hf_lp.MinNewTokensLengthLogitsProcessor(4, min_new, eos)(ids, logits.clone())
        torch.testing.assert_close(apply_min_new_tokens(logits, 6 - 4, min_new, eos), expected, rtol=0, atol=0)
    for min_length in (3, 6, 7):
        expected = hf_lp.MinLengthLogitsProcessor(min_length, eos)(ids, logits.clone())
        torch.testing.assert_close(apply_min_length(logits, 6, min_length, eos), expected, rtol=0, atol=0)
    assert apply_min_length(logits, 6, 7, eos)[:, [3, 7]].eq(-float("inf")).all()


def test_processors_ignore_eos_and_suppressed_ids_outside_the_vocabulary(logits):
    config = GenerationConfig(min_new_tokens=2, suppress_tokens=[5, 99], begin_suppress_tokens=[6, 100])
    eos = torch.tensor([3, 60])  # 60 lies outside the 50-token vocabulary: nothing to suppress there
    processors = build_logits_processors(config, prompt_length=6, eos_token_ids=eos, vocab_size=logits.shape[-1])
    scores = processors(torch.zeros(4, 6, dtype=torch.long), logits.clone())
    assert scores[:, [3, 5, 6]].eq(-float("inf")).all()
    others = torch.ones(logits.shape[-1], dtype=torch.bool)
    others[[3, 5, 6]] = False
    torch.testing.assert_close(scores[:, others], logits[:, others], rtol=0, atol=0)


def test_sample_next_token_uses_global_rng_like_transformers(logits):
    torch.manual_seed(5)
    expected = torch.multinomial(torch.softmax(logits, -1), num_samples=1).squeeze(1)
    torch.manual_seed(5)
    assert torch.equal(sample_next_token(logits), expected)
    a = sample_next_token(logits, torch.Generator().manual_seed(3))
    b = sample_next_token(logits, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_multinomial_draw_picks_what_torch_multinomial_picks_and_leaves_the_same_generator_state():
    theirs, ours = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    scores = torch.randn(8, 5000, generator=torch.Generator().manual_seed(0)) * 4
    scores[2, 100:] = -float("inf")  # a row with a few candidates, as after top-k
    probs = torch.softmax(scores, -1)
    for _ in range(50):
        expected = torch.multinomial(probs, num_samples=1, generator=theirs).squeeze(1)
        assert torch.equal(multinomial_draw(probs, ours), expected)
    assert torch.equal(theirs.get_state(), ours.get_state())
    bad = probs.clone()
    bad[1, 0] = float("nan")
    with pytest.raises(RuntimeError, match="probability tensor contains either `inf`, `nan` or element < 0"):
        multinomial_draw(bad)
    with pytest.raises(RuntimeError, match="probability tensor contains either `inf`, `nan` or element < 0"):
        sample_next_token(torch.full((1, 10), -float("inf")))


# -- GenerationConfig -------------------------------------------------------------------------------
def test_generation_config_fields_and_defaults_match_transformers():
    hf_warnings_off()
    ours, theirs = GenerationConfig().to_dict(), transformers.GenerationConfig().to_dict()
    for key, value in ours.items():
        if not key.startswith("_"):
            assert key in theirs and theirs[key] == value, key
    hf_defaults = transformers.GenerationConfig._get_default_generation_params()
    from leanformers.generation import GLOBAL_DEFAULTS

    for key, value in GLOBAL_DEFAULTS.items():
        assert hf_defaults[key] == value, key
    assert GLOBAL_DEFAULTS["max_length"] == 20 and GLOBAL_DEFAULTS["top_k"] == 50


@pytest.mark.parametrize(
    "kwargs, hf_reject",
    [
        (dict(max_new_tokens=0), lambda: transformers.GenerationConfig(max_new_tokens=0)),
        (dict(max_new_tokens=-3), lambda: transformers.GenerationConfig(max_new_tokens=-3)),
        (dict(do_sample=True, temperature=0.0), lambda: hf_lp.TemperatureLogitsWarper(0.0)),
        (dict(do_sample=True, temperature=-1.0), lambda: hf_lp.TemperatureLogitsWarper(-1.0)),
        (dict(do_sample=True, top_p=1.5), lambda: hf_lp.TopPLogitsWarper(1.5)),
        (dict(do_sample=True, top_p=-0.1), lambda: hf_lp.TopPLogitsWarper(-0.1)),
        (dict(do_sample=True, top_k=-1), lambda: hf_lp.TopKLogitsWarper(-1)),
        (dict(repetition_penalty=-1.0), lambda: hf_lp.RepetitionPenaltyLogitsProcessor(-1.0)),
        (dict(min_new_tokens=-1), lambda: hf_lp.MinNewTokensLengthLogitsProcessor(3, -1, 2)),
        (dict(no_repeat_ngram_size=-2), lambda: hf_lp.NoRepeatNGramLogitsProcessor(-2)),
        (dict(num_return_sequences=2), lambda: transformers.GenerationConfig(num_return_sequences=2)),
        (dict(do_sample=True, min_p=1.5), lambda: hf_lp.MinPLogitsWarper(1.5)),
    ],
)
def test_generation_config_rejects_what_transformers_rejects(kwargs, hf_reject):
    hf_warnings_off()
    with pytest.raises(ValueError):
        hf_reject()
    with pytest.raises(ValueError):
        GenerationConfig(**kwargs)
    config = GenerationConfig()
    with pytest.raises(ValueError):
        config.update(**kwargs)


def test_generation_config_rejects_top_p_zero_and_error_names_the_value():
    with pytest.raises(ValueError, match="top_p.*0"):
        GenerationConfig(do_sample=True, top_p=0.0)
    with pytest.raises(ValueError, match="greedy"):
        GenerationConfig(do_sample=True, temperature=0.0)
    GenerationConfig(do_sample=False, temperature=0.0)  # ignored when not sampling, as in transformers


def test_generation_config_save_loads_in_transformers(tmp_path):
    hf_warnings_off()
    config = GenerationConfig(
        do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=33, eos_token_id=[2, 5], pad_token_id=0, foo="bar"
    )
    config.save_pretrained(tmp_path)
    assert not [p for p in tmp_path.iterdir() if p.name != "generation_config.json"]  # no temp file left
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path)
    for key in ("do_sample", "temperature", "top_p", "max_new_tokens", "eos_token_id", "pad_token_id", "foo"):
        assert getattr(theirs, key) == getattr(config, key), key
    assert theirs.top_k is None and theirs.max_length is None
    # transformers' file loads back in ours, equal to the original
    theirs.save_pretrained(tmp_path / "hf")
    again = GenerationConfig.from_pretrained(tmp_path / "hf")
    assert again == config
    assert again.transformers_version == transformers.__version__
    assert repr(again) == repr(config)
    assert repr(config).startswith("GenerationConfig {") and '"temperature": 0.7' in repr(config)


def test_generation_config_from_pretrained_bad_json_names_file(tmp_path):
    (tmp_path / "generation_config.json").write_text('{"do_sample": true,')
    with pytest.raises(ValueError, match="generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text('{"do_sample": true, "temperature": 0}')
    with pytest.raises(ValueError, match="generation_config.json.*temperature"):
        GenerationConfig.from_pretrained(tmp_path)
    (tmp_path / "generation_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="has no generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        GenerationConfig.from_pretrained(tmp_path / "missing")


def test_generation_config_from_model_config_and_update_match_transformers():
    hf_warnings_off()
    model_config = hf_model_config(bos_token_id=1, eos_token_id=[2, 3], pad_token_id=0)
    ours = GenerationConfig.from_model_config(model_config.to_dict())
    theirs = transformers.GenerationConfig.from_model_config(model_config)
    assert json.loads(ours.to_json_string(ignore_metadata=True)) == json.loads(theirs.to_json_string(ignore_metadata=True))
    assert ours._from_model_config is True
    config = GenerationConfig(top_k=5)
    assert config.update(top_k=3, temperature=0.5, unknown=1) == {"unknown": 1}
    assert config.top_k == 3 and config.temperature == 0.5
    loaded, unused = GenerationConfig.from_dict({"top_k": 5}, return_unused_kwargs=True, do_sample=True)
    assert loaded.do_sample is True and unused == {}


# -- the decode loop ------------------------------------------------------------------------------
def test_max_length_counts_prompt_and_max_new_tokens_wins():
    model = FakeModel()
    prompt = torch.tensor([[3, 4, 5, 6, 7]])
    assert model.generate(prompt, max_new_tokens=4).shape == (1, 9)
    assert model.generate(prompt, max_length=8).shape == (1, 8)
    with pytest.warns(UserWarning, match="max_new_tokens"):
        assert model.generate(prompt, max_length=8, max_new_tokens=6).shape == (1, 11)
    assert model.generate(prompt).shape == (1, 25)  # default: 20 new tokens
    model.generation_config.max_length = 12  # a model's own max_length counts the prompt
    assert model.generate(prompt).shape == (1, 12)
    with pytest.raises(ValueError, match="max_length"):
        model.generate(prompt, max_length=5)


def test_prompt_is_prefilled_once_then_one_token_per_step():
    model = FakeModel()
    prompt = torch.tensor([[3, 4, 5, 6, 7]])
    model.calls.clear()
    model.generate(prompt, max_new_tokens=4)
    assert model.calls == [(5, 0), (1, 5), (1, 6), (1, 7)]
    with_cache = model.generate(prompt, max_new_tokens=6)
    assert torch.equal(model.generate(prompt, max_new_tokens=6, use_cache=False), with_cache)


def test_eos_stops_rows_and_pads_them():
    model = CountingModel(eos=9, pad=0)
    prompt = torch.tensor([[4, 5, 6], [1, 2, 3], [5, 6, 7]])
    out = model.generate(prompt, max_new_tokens=10)
    # row 0 reaches 9 after 3 tokens, row 2 after 2; row 1 after 6 -> the loop stops there
    assert out.tolist() == [
        [4, 5, 6, 7, 8, 9, 0, 0, 0],
        [1, 2, 3, 4, 5, 6, 7, 8, 9],
        [5, 6, 7, 8, 9, 0, 0, 0, 0],
    ]
    # eos as a list; pad defaults to the first eos id when the model has none
    model = CountingModel(eos=None, pad=None)
    out = model.generate(torch.tensor([[4], [1]]), max_new_tokens=10, eos_token_id=[6, 7])
    assert out.tolist() == [[4, 5, 6, 6, 6, 6], [1, 2, 3, 4, 5, 6]]


def test_min_new_tokens_delays_eos():
    model = CountingModel(eos=9, pad=0)
    out = model.generate(torch.tensor([[7]]), max_new_tokens=5, min_new_tokens=3)
    # 8, then 9 is forbidden at step 2 -> the next best (0, a tie at score 0 resolved by argmax) is taken
    assert out.shape[1] == 6 and out[0, 2].item() != 9


def test_left_padded_batch_equals_one_at_a_time():
    model = FakeModel(pad=0)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=8)
    for row, prompt in enumerate(prompts):
        alone = model.generate(torch.tensor([prompt]), max_new_tokens=8)
        assert batched[row, width:].tolist() == alone[0, len(prompt):].tolist()
    # no attention_mask with pad tokens in the batch: warned, and the padding is inferred from pad_token_id
    with pytest.warns(UserWarning, match="attention_mask"):
        inferred = model.generate(ids, max_new_tokens=8)
    assert torch.equal(inferred, batched)


def test_right_padding_warns(caplog):
    model = FakeModel(pad=0)
    model.generate(torch.tensor([[5, 6, 7], [8, 9, 0]]), attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]), max_new_tokens=2)
    assert "right-padding" in caplog.text


def test_sampling_is_reproducible_with_a_generator():
    model = FakeModel()
    prompt = torch.tensor([[3, 4, 5], [6, 7, 8]])
    kwargs = dict(max_new_tokens=12, do_sample=True, temperature=1.5, top_k=0)
    a = model.generate(prompt, generator=torch.Generator().manual_seed(7), **kwargs)
    b = model.generate(prompt, generator=torch.Generator().manual_seed(7), **kwargs)
    c = model.generate(prompt, generator=torch.Generator().manual_seed(8), **kwargs)
    assert torch.equal(a, b) and not torch.equal(a, c)
    out = model.generate(prompt, generator=torch.Generator().manual_seed(7), num_return_sequences=3, **kwargs)
    assert out.shape == (6, 15) and torch.equal(out[0, :3], out[2, :3])


def test_return_dict_scores_logits_and_user_processors_and_criteria():
    model = FakeModel()
    prompt = torch.tensor([[3, 4, 5]])

    def ban_token_2(input_ids, scores):
        return scores.index_fill(1, torch.tensor([2]), -float("inf"))

    class StopAfter(StoppingCriteria):
        def __call__(self, input_ids, scores):
            return torch.full((input_ids.shape[0],), input_ids.shape[1] >= 6)

    out = model.generate(
        prompt,
        max_new_tokens=8,
        return_dict_in_generate=True,
        output_scores=True,
        output_logits=True,
        repetition_penalty=1.5,
        logits_processor=LogitsProcessorList([ban_token_2]),
        stopping_criteria=[StopAfter()],
    )
    assert out.sequences.shape == (1, 6) and out["sequences"] is out.sequences
    assert len(out.scores) == 3 and len(out.logits) == 3 and out.scores[0].shape == (1, VOCAB)
    assert (out.scores[0][:, 2] == -float("inf")).all() and torch.isfinite(out.logits[0]).all()
    assert out.sequences[0, 3:].tolist() == [int(s.argmax()) for s in out.scores]
    assert out.keys() == ["sequences", "scores", "logits", "cache"]
    assert out.past_key_values.get_seq_length() == 5  # every token but the last went through the model


def test_decode_steps_yields_each_token():
    model = CountingModel(eos=9, pad=0)
    steps = list(decode_steps(model, torch.tensor([[5]]), max_new_tokens=10, eos_token_ids=torch.tensor([9]), pad_token_id=0))
    assert [int(s.tokens) for s in steps] == [6, 7, 8, 9]
    assert steps[-1].sequences.tolist() == [[5, 6, 7, 8, 9]] and not steps[-1].unfinished.any()


def test_bad_generate_arguments_raise():
    model = FakeModel(eos=None)
    prompt = torch.tensor([[3, 4, 5]])
    for kwargs in (dict(max_new_tokens=0), dict(max_new_tokens=-1), dict(do_sample=True, top_p=0.0),
                   dict(do_sample=True, top_p=1.5), dict(do_sample=True, temperature=0.0)):  # fmt: skip
        with pytest.raises(ValueError):
            model.generate(prompt, **kwargs)
    with pytest.raises(ValueError, match="not_a_setting"):
        model.generate(prompt, max_new_tokens=2, not_a_setting=1)
    with pytest.raises(ValueError, match="num_return_sequences.*num_beams"):
        model.generate(prompt, max_new_tokens=2, num_beams=2, num_return_sequences=3)
    with pytest.raises(ValueError, match="beam search"):
        model.generate(prompt, max_new_tokens=2, num_beams=2, streamer=TextStreamer(CharTokenizer()))


def test_prompt_at_context_limit_is_a_clear_error():
    model = FakeModel(context=16)
    with pytest.raises(ValueError, match="16 tokens.*context.*16"):
        model.generate(torch.arange(16)[None] % VOCAB, max_new_tokens=1)
    with pytest.raises(ValueError, match="10.*8.*18.*16"):
        model.generate(torch.arange(10)[None], max_new_tokens=8)
    assert model.generate(torch.arange(10)[None], max_new_tokens=6).shape == (1, 16)
    assert model.generate(torch.arange(10)[None]).shape == (1, 16)  # the default length stops at the context


# -- parity with transformers' generate on a tiny Llama ----------------------------------------------
def test_greedy_left_padded_batch_matches_transformers(hf_pair):
    hf_warnings_off()
    hf, ours = hf_pair
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14], [0, 0, 0, 0, 15, 16]])
    mask = (ids != 0).long()
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False)
    assert torch.equal(ours.generate(ids, attention_mask=mask, max_new_tokens=10), expected)
    # EOS on a token greedy actually produces: rows stop and pad like transformers'
    eos = int(expected[0, 8])
    expected = hf.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos)
    assert torch.equal(ours.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos), expected)


@pytest.mark.parametrize(
    "settings",
    [
        dict(temperature=0.8),
        dict(top_k=5, top_p=0.8, repetition_penalty=1.3),
        dict(top_p=0.5, min_p=0.05, no_repeat_ngram_size=2, temperature=1.3),
        dict(num_return_sequences=3, typical_p=0.7),
        dict(min_new_tokens=6, eos_token_id=[2, 17, 30], top_k=4),
    ],
)
def test_sampling_matches_transformers_with_same_seed(hf_pair, settings):
    hf_warnings_off()
    hf, ours = hf_pair
    ids = torch.tensor([[0, 3, 4, 5], [6, 7, 8, 9]])
    mask = (ids != 0).long()
    torch.manual_seed(11)
    expected = hf.generate(
        ids, attention_mask=mask, max_new_tokens=12, do_sample=True, return_dict_in_generate=True, output_scores=True, **settings
    )
    torch.manual_seed(11)
    got = ours.generate(
        ids, attention_mask=mask, max_new_tokens=12, do_sample=True, return_dict_in_generate=True, output_scores=True, **settings
    )
    assert torch.equal(got.sequences, expected.sequences)
    assert len(got.scores) == len(expected.scores) == got.sequences.shape[1] - ids.shape[1]
    for a, b in zip(got.scores, expected.scores, strict=True):
        torch.testing.assert_close(a, b)


def test_model_generation_config_and_user_config_merge_like_transformers(hf_pair):
    hf_warnings_off()
    hf, ours = hf_pair
    ids = torch.tensor([[0, 3, 4, 5], [6, 7, 8, 9]])
    mask = (ids != 0).long()
    saved_hf, saved_ours = hf.generation_config, ours.generation_config
    try:
        hf.generation_config = transformers.GenerationConfig(**saved_hf.to_diff_dict(), do_sample=True, temperature=0.6, top_p=0.9)
        ours.generation_config = GenerationConfig.from_dict(hf.generation_config.to_dict())
        for kwargs in (dict(max_new_tokens=8), dict(max_new_tokens=8, top_k=4, temperature=1.2), dict()):
            torch.manual_seed(5)
            expected = hf.generate(ids, attention_mask=mask, **kwargs)
            torch.manual_seed(5)
            assert torch.equal(ours.generate(ids, attention_mask=mask, **kwargs), expected), kwargs
        torch.manual_seed(5)
        expected = hf.generate(ids, attention_mask=mask, generation_config=transformers.GenerationConfig(max_new_tokens=6, top_k=3))
        torch.manual_seed(5)
        got = ours.generate(ids, attention_mask=mask, generation_config=GenerationConfig(max_new_tokens=6, top_k=3))
        assert torch.equal(got, expected)
    finally:
        hf.generation_config, ours.generation_config = saved_hf, saved_ours


# -- streamers ---------------------------------------------------------------------------------------
def test_text_streamer_receives_exactly_the_generated_text(capsys):
    tok = CharTokenizer()
    model = CountingModel(eos=None)
    prompt = torch.tensor([[20]])
    out = model.generate(prompt, max_new_tokens=12, streamer=TextStreamer(tok, skip_prompt=True))
    printed = capsys.readouterr().out
    assert printed == tok.decode(out[0, 1:].tolist()) + "\n"


def test_text_streamer_holds_back_half_characters_and_symbols():
    pieces = []

    class Collect(TextStreamer):
        def on_finalized_text(self, text, stream_end=False):
            pieces.append(text)

    tok = CharTokenizer()
    streamer = Collect(tok)
    for token in [2, 0, 1, 28, 29, 26, 30, 3, 26, 7, 27, 8]:  # "cab" "é" " " "!" "d" " " "h" "\n" "i"
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == "cabé !d h\ni"
    assert pieces[3] == ""  # after 0xC3 alone, nothing is emitted
    assert pieces[6] == ""  # "!" waits: a symbol may still merge with the next token
    with pytest.raises(ValueError, match="batch size 1"):
        streamer.put(torch.tensor([[1], [2]]))


def test_text_iterator_streamer_from_a_thread():
    tok = CharTokenizer()
    model = CountingModel(eos=None)
    streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=10)
    prompt = torch.tensor([[20]])
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=model.generate(prompt, max_new_tokens=9, streamer=streamer)))
    thread.start()
    text = "".join(streamer)
    thread.join()
    assert text == tok.decode(result["out"][0, 1:].tolist())
    import queue

    with pytest.raises(queue.Empty):
        next(iter(TextIteratorStreamer(tok, timeout=0.01)))


def test_top_p_after_top_k_on_a_large_vocabulary_matches_transformers():
    # after top-k, apply_top_p orders only the finite candidates instead of the whole vocabulary
    logits = torch.randn(16, 50_000, generator=torch.Generator().manual_seed(7)) * 3
    logits[3, :40] = 9.0  # ties around the k-th value keep more than k tokens in a row
    for k, p in ((50, 0.9), (50, 0.3), (1, 0.9), (200, 0.99), (20, 1e-6)):
        expected = hf_lp.TopPLogitsWarper(p)(None, hf_lp.TopKLogitsWarper(k)(None, logits.clone()))
        got = apply_top_p(apply_top_k(logits, k), p)
        assert torch.equal(torch.isinf(got), torch.isinf(expected)), (k, p)
        torch.testing.assert_close(got, expected)


def test_incomplete_stopping_criteria_and_streamer_subclasses_are_refused():
    from leanformers.generation import BaseStreamer

    class NoCall(StoppingCriteria):
        pass

    class NoEnd(BaseStreamer):
        def put(self, value):
            pass

    with pytest.raises(TypeError, match="abstract"):
        NoCall()
    with pytest.raises(TypeError, match="abstract"):
        NoEnd()
