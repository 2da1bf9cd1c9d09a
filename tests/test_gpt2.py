"""GPT-2 family against transformers: tiny random checkpoints written by transformers, loaded by both."""

import json

import pytest
import torch
import transformers

import leanformers
from leanformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, GPT2Model

TINY_GPT2 = dict(vocab_size=128, n_embd=32, n_layer=2, n_head=4, n_positions=32, bos_token_id=1, eos_token_id=2,
                 pad_token_id=0)
HEADS = ["GPT2Model", "GPT2LMHeadModel", "GPT2ForSequenceClassification", "GPT2ForTokenClassification",
         "GPT2ForQuestionAnswering"]


@pytest.fixture(scope="session")
def gpt2_checkpoint(tmp_path_factory):
    """head class name -> (transformers model, folder it saved itself to)."""
    made = {}

    def make(head, **overrides):
        key = (head, json.dumps(overrides, sort_keys=True))
        if key not in made:
            torch.manual_seed(0)
            config = transformers.GPT2Config(**{**TINY_GPT2, "num_labels": 2 if "Question" in head else 3, **overrides})
            model = getattr(transformers, head)(config).eval()
            folder = tmp_path_factory.mktemp(f"gpt2-{head}")
            model.save_pretrained(folder)
            made[key] = (model, folder)
        return made[key]

    return make


def random_ids(batch, length, seed=0, vocab=128):
    return torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def labels_for(head, ids, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T = ids.shape
    if head == "GPT2LMHeadModel":
        labels = ids.clone()
        labels[:, :2] = -100
        return {"labels": labels}
    if head == "GPT2ForSequenceClassification":
        return {"labels": torch.randint(0, 3, (B,), generator=g)}
    if head == "GPT2ForTokenClassification":
        labels = torch.randint(0, 3, (B, T), generator=g)
        labels[:, 0] = -100
        return {"labels": labels}
    if head == "GPT2ForQuestionAnswering":  # the last row's end lies outside the sequence: clamped and ignored
        return {"start_positions": torch.randint(0, T, (B,), generator=g),
                "end_positions": torch.cat([torch.randint(0, T, (B - 1,), generator=g), torch.tensor([T + 5])])}
    return {}


def main_outputs(out):
    return [out[k] for k in ("last_hidden_state", "logits", "start_logits", "end_logits") if k in out]


@pytest.mark.parametrize("head", HEADS)
def test_gpt2_logits_and_loss_match_transformers(gpt2_checkpoint, head):
    ref, folder = gpt2_checkpoint(head)
    ours = getattr(leanformers, head).from_pretrained(folder)
    ids = random_ids(3, 10, seed=1)
    labels = labels_for(head, ids)
    with torch.no_grad():
        expected, got = ref(ids, **labels), ours(ids, **labels)
    for a, b in zip(main_outputs(got), main_outputs(expected), strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    if labels:
        torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)


def pad_rows(rows, side, pad_id=0):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    spans = []
    for i, row in enumerate(rows):
        span = slice(width - len(row), width) if side == "left" else slice(0, len(row))
        ids[i, span], mask[i, span] = row, 1
        spans.append(span)
    return ids, mask, spans


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("head", HEADS)
def test_gpt2_padded_batch_equals_unpadded_rows(gpt2_checkpoint, head, side):
    _, folder = gpt2_checkpoint(head)
    model = getattr(leanformers, head).from_pretrained(folder)
    rows = [random_ids(1, n, seed=n)[0] for n in (8, 4, 6)]
    ids, mask, spans = pad_rows(rows, side)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask)
        for i, (row, span) in enumerate(zip(rows, spans)):
            alone = model(row[None])
            for a, b in zip(main_outputs(batched), main_outputs(alone), strict=True):
                got = a[i] if a.dim() == 2 and head == "GPT2ForSequenceClassification" else a[i, span]
                assert not torch.isnan(got).any()
                torch.testing.assert_close(got, b[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("head", ["GPT2LMHeadModel", "GPT2ForSequenceClassification", "GPT2ForQuestionAnswering"])
def test_gpt2_save_pretrained_loads_back_in_transformers(gpt2_checkpoint, tmp_path, head):
    ref, folder = gpt2_checkpoint(head)
    getattr(leanformers, head).from_pretrained(folder).save_pretrained(tmp_path)
    reloaded = getattr(transformers, head).from_pretrained(tmp_path).eval()
    ids = random_ids(2, 9, seed=2)
    with torch.no_grad():
        for a, b in zip(main_outputs(reloaded(ids)), main_outputs(ref(ids)), strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_gpt2_conv1d_weights_keep_the_checkpoint_layout(gpt2_checkpoint, tmp_path):
    ref, folder = gpt2_checkpoint("GPT2LMHeadModel")
    ours = GPT2LMHeadModel.from_pretrained(folder)
    c_attn = ours.transformer.h[0].attn.c_attn.weight
    assert c_attn.shape == (32, 96) == ref.transformer.h[0].attn.c_attn.weight.shape
    assert ours.lm_head.weight is ours.transformer.wte.weight
    ours.save_pretrained(tmp_path)
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "model.safetensors"))
    assert "lm_head.weight" not in saved
    torch.testing.assert_close(saved["transformer.h.0.attn.c_attn.weight"], ref.transformer.h[0].attn.c_attn.weight)


def test_gpt2_greedy_generation_matches_transformers(gpt2_checkpoint):
    ref, folder = gpt2_checkpoint("GPT2LMHeadModel")
    ours = AutoModelForCausalLM.from_pretrained(folder)
    rows = [random_ids(1, n, seed=10 + n)[0] for n in (5, 3)]
    ids, mask, _ = pad_rows(rows, "left")
    settings = dict(max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    expected = ref.generate(ids, attention_mask=mask, **settings)
    got = ours.generate(ids, attention_mask=mask, **settings)
    assert torch.equal(got, expected)
    for i, row in enumerate(rows):  # a batched result equals the one-prompt-at-a-time results
        alone = ours.generate(row[None], **settings)
        assert torch.equal(alone[0], expected[i, -alone.shape[1]:])


def test_gpt2_incremental_decoding_with_cache_equals_full_forward(gpt2_checkpoint):
    _, folder = gpt2_checkpoint("GPT2LMHeadModel")
    model = GPT2LMHeadModel.from_pretrained(folder)
    ids = random_ids(2, 10, seed=3)
    with torch.no_grad():
        full = model(ids).logits
        out = model(ids[:, :6], use_cache=True)
        steps = [out.logits]
        for t in range(6, 10):
            out = model(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)


def test_gpt2_hidden_states_and_attentions_match_transformers(gpt2_checkpoint):
    _, folder = gpt2_checkpoint("GPT2Model")
    ref = transformers.GPT2Model.from_pretrained(folder, attn_implementation="eager").eval()  # SDPA returns no weights
    ours = GPT2Model.from_pretrained(folder)
    ids = random_ids(2, 7, seed=4)
    with torch.no_grad():
        expected = ref(ids, output_hidden_states=True, output_attentions=True)
        got = ours(ids, output_hidden_states=True, output_attentions=True)
        plain = ours(ids)
    assert plain.hidden_states is None and plain.attentions is None
    assert len(got.hidden_states) == len(expected.hidden_states) == 3
    assert len(got.attentions) == len(expected.attentions) == 2
    for a, b in zip(got.hidden_states + got.attentions, expected.hidden_states + expected.attentions, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_gpt2_variants_scale_by_layer_and_n_inner_match_transformers(gpt2_checkpoint):
    ref, folder = gpt2_checkpoint("GPT2LMHeadModel", scale_attn_by_inverse_layer_idx=True, n_inner=40,
                                  activation_function="relu", tie_word_embeddings=False)
    ours = GPT2LMHeadModel.from_pretrained(folder)
    assert ours.lm_head.weight is not ours.transformer.wte.weight
    ids = random_ids(2, 8, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)


def test_gpt2_config_aliases_and_task_specific_params_round_trip(tmp_path):
    params = {"text-generation": {"do_sample": True, "max_length": 50}}
    transformers.GPT2Config(**TINY_GPT2, task_specific_params=params, my_key=[1, 2]).save_pretrained(tmp_path / "a")
    config = GPT2Config.from_pretrained(tmp_path / "a")
    assert config.task_specific_params == params and config.my_key == [1, 2]
    assert config.hidden_size == config.n_embd == 32 and config.num_hidden_layers == 2
    assert config.max_position_embeddings == 32 and config.num_attention_heads == 4
    assert GPT2Config(hidden_size=48, num_attention_heads=6).n_embd == 48
    config.save_pretrained(tmp_path / "b")
    saved = json.loads((tmp_path / "b" / "config.json").read_text())
    assert saved["task_specific_params"] == params and saved["n_embd"] == 32 and "hidden_size" not in saved
    theirs = transformers.AutoConfig.from_pretrained(tmp_path / "b")
    assert theirs.task_specific_params == params and theirs.hidden_size == 32


def test_gpt2_random_init_matches_transformers_parameter_names():
    config = GPT2Config(**TINY_GPT2)
    model = GPT2LMHeadModel(config)
    reference = transformers.GPT2LMHeadModel(transformers.GPT2Config(**TINY_GPT2))
    assert set(model.state_dict()) == set(reference.state_dict()) - {"lm_head.weight"} | {"lm_head.weight"}
    assert model.num_parameters() == reference.num_parameters()
    assert 0.01 < model.transformer.h[0].attn.c_attn.weight.std().item() < 0.03
    assert model.transformer.h[0].attn.c_proj.weight.std().item() < 0.015  # scaled by 1/sqrt(2 * n_layer)


def test_gpt2_input_longer_than_max_position_embeddings_is_a_clear_error(gpt2_checkpoint):
    _, folder = gpt2_checkpoint("GPT2LMHeadModel")
    model = GPT2LMHeadModel.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"40 tokens long.*max_position_embeddings=32"):
        model(random_ids(1, 40))
    out = model(random_ids(1, 30), use_cache=True)
    with pytest.raises(ValueError, match=r"35 tokens long \(30 cached \+ 5 new\).*=32"):
        model(random_ids(1, 5), past_key_values=out.past_key_values)
