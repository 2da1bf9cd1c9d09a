"""Qwen2/2.5, Qwen3 and Mistral (the Llama-style decoder by config) and Gemma 3 (its own file) against
transformers: tiny random checkpoints written by transformers itself, tied and untied, with grouped-query
attention."""

import json

import pytest
import torch
import transformers

from leanformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                         Gemma3TextConfig, Gemma3TextForSequenceClassification, Gemma3TextModel, LlamaConfig,
                         LlamaForCausalLM, LlamaModel, MistralConfig, Qwen2Config, Qwen3Config)

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=64, bos_token_id=1, eos_token_id=2, pad_token_id=0)

FAMILIES = {
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    # a window on the layers from max_window_layers on: the second layer slides, the first does not
    "qwen2-window": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                     {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 1}),
    # head_dim 24 is not hidden_size / heads (16)
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, {"head_dim": 24}),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {"sliding_window": 4}),
    # a local layer (window 4, its own rope base) then a global one; head_dim and the score scale of their own,
    # the final logits soft-capped (the attention cap is a key Gemma 3 keeps and ignores, as transformers does)
    "gemma3_text": (transformers.Gemma3TextConfig, transformers.Gemma3ForCausalLM,
                    {"sliding_window": 4, "layer_types": ["sliding_attention", "full_attention"], "head_dim": 24,
                     "query_pre_attn_scalar": 20, "rope_parameters": {
                         "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                         "full_attention": {"rope_type": "default", "rope_theta": 10000.0}},
                     "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0}),
}
CASES = [(family, tied) for family in FAMILIES for tied in (False, True)]
CASE_IDS = [f"{family}-{'tied' if tied else 'untied'}" for family, tied in CASES]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(family, tied) -> (transformers model with eager attention, folder it was saved to)."""
    made = {}

    def make(family, tied):
        if (family, tied) not in made:
            config_class, model_class, extra = FAMILIES[family]
            torch.manual_seed(0)
            config = config_class(**TINY, **extra, tie_word_embeddings=tied)
            config._attn_implementation = "eager"  # computes the window into its mask, as written
            model = model_class(config).eval()
            with torch.no_grad():  # norms start as the identity (Gemma's at zero): move them off it
                for name, weight in model.named_parameters():
                    if "norm" in name:
                        weight.add_(torch.randn_like(weight) * 0.2)
            folder = tmp_path_factory.mktemp(f"{family}-{tied}")
            model.save_pretrained(folder)
            made[family, tied] = model, folder
        return made[family, tied]

    return make


def random_ids(batch, length, seed=0):
    return torch.randint(3, 128, (batch, length), generator=torch.Generator().manual_seed(seed))


def padded_batch(side, lengths=(13, 6, 9), seed=0):
    """Rows of the given lengths padded with 0 on one side: (ids, attention_mask)."""
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        span = slice(width - n, width) if side == "left" else slice(0, n)
        ids[i, span], mask[i, span] = random_ids(1, n, seed=seed + i)[0], 1
    return ids, mask


@pytest.mark.parametrize(("family", "tied"), CASES, ids=CASE_IDS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_family_logits_and_loss_match_transformers_with_padding(checkpoint, family, tied, side):
    ref, folder = checkpoint(family, tied)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    assert ours.config.model_type == family.removesuffix("-window")
    ids, mask = padded_batch(side)
    # no label on a row's first real token: left of it sit only pad positions, whose outputs are arbitrary
    # (transformers' eager attention averages over all keys there, SDPA gives zeros)
    first_real = mask.cumsum(-1) == 1
    labels = ids.masked_fill((mask == 0) | first_real, -100)
    with torch.no_grad():
        expected = ref(ids, attention_mask=mask, labels=labels)
        got = ours(ids, attention_mask=mask, labels=labels)
    real = mask.bool()
    torch.testing.assert_close(got.logits[real], expected.logits[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
    with torch.no_grad():  # the Trainer's loss-only forward (over Gemma's capped logits too)
        loss_only = ours(ids, attention_mask=mask, labels=labels, skip_logits=True)
    assert loss_only.logits is None
    torch.testing.assert_close(loss_only.loss, expected.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("family", "tied"), CASES, ids=CASE_IDS)
def test_family_greedy_generation_matches_transformers(checkpoint, family, tied):
    ref, folder = checkpoint(family, tied)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = padded_batch("left", lengths=(7, 3))
    settings = dict(max_new_tokens=32, do_sample=False, pad_token_id=0, eos_token_id=None)
    expected = ref.generate(ids, attention_mask=mask, **settings)
    got = ours.generate(ids, attention_mask=mask, **settings)
    assert got.shape == (2, 7 + 32)
    assert torch.equal(got, expected)


@pytest.mark.parametrize(("family", "tied"), CASES, ids=CASE_IDS)
def test_family_save_pretrained_loads_back_in_transformers(checkpoint, tmp_path, family, tied):
    ref, folder = checkpoint(family, tied)
    AutoModelForCausalLM.from_pretrained(folder).save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert type(reloaded) is type(ref)
    assert reloaded.config.tie_word_embeddings == tied
    ids = random_ids(2, 12, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["mistral", "gemma3_text"])
def test_window_longer_prompt_in_one_forward_and_through_the_cache(checkpoint, family):
    ref, folder = checkpoint(family, False)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    assert ours.config.sliding_window == 4
    ids = random_ids(2, 14, seed=7)
    with torch.no_grad():
        expected = ref(ids).logits
        full = ours(ids).logits
        out = ours(ids[:, :1], use_cache=True)
        steps = [out.logits]
        for t in range(1, ids.shape[1]):
            out = ours(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
        sdpa = transformers.AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
        unwindowed = AutoModelForCausalLM.from_pretrained(folder, sliding_window=None)(ids).logits
    torch.testing.assert_close(full, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.cat(steps, 1), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(sdpa(ids).logits, expected, atol=1e-4, rtol=0)  # both reference paths slide
    # the window matters from the fifth token on, and not before
    assert (unwindowed[:, 4:] - expected[:, 4:]).abs().max() > 1e-2
    torch.testing.assert_close(unwindowed[:, :4], expected[:, :4], atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["mistral", "gemma3_text"])
def test_window_generation_from_a_long_prompt_matches_transformers(checkpoint, family):
    ref, folder = checkpoint(family, True)
    ours = AutoModelForCausalLM.from_pretrained(folder)
    ids, mask = padded_batch("left", lengths=(12, 5), seed=11)
    settings = dict(max_new_tokens=32, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert torch.equal(ours.generate(ids, attention_mask=mask, **settings),
                       ref.generate(ids, attention_mask=mask, **settings))


def test_family_configs_dispatch_and_keep_their_shapes(checkpoint):
    _, folder = checkpoint("qwen3", False)
    config = AutoConfig.from_pretrained(folder)
    assert type(config) is Qwen3Config and config.head_dim == 24 and config.qk_norm
    base = AutoModel.from_pretrained(folder)
    assert type(base) is LlamaModel
    attn = base.layers[0].self_attn
    assert attn.q_proj.bias is None and attn.o_proj.bias is None and attn.q_norm.weight.shape == (24,)
    qwen2 = AutoModel.from_pretrained(checkpoint("qwen2", False)[1]).layers[0].self_attn
    assert qwen2.q_proj.bias is not None and qwen2.v_proj.bias is not None and qwen2.o_proj.bias is None
    assert not hasattr(qwen2, "q_norm")
    window = AutoConfig.from_pretrained(checkpoint("qwen2-window", False)[1])
    assert type(window) is Qwen2Config
    assert [window.layer_window(i) for i in range(2)] == [None, 4]
    assert Qwen2Config().sliding_window is None  # without use_sliding_window there is none
    assert MistralConfig().layer_window(0) == 4096
    # read through the Llama classes, a family's config.json still builds its own config
    assert type(LlamaConfig.from_pretrained(folder)) is Qwen3Config
    assert type(LlamaForCausalLM.from_pretrained(checkpoint("mistral", False)[1]).config) is MistralConfig


def write_gguf(model, path, arch, add_metadata=None):
    """The tiny checkpoint as an F32 GGUF file with llama.cpp's names (Qwen's q/k rows are not permuted);
    add_metadata(writer) adds more keys (a tokenizer)."""
    import gguf

    names = {"embed_tokens": "token_embd", "norm": "output_norm", "lm_head": "output"}
    layer_names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                   "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm",
                   "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
                   "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm",
                   "post_attention_layernorm": "ffn_norm"}
    config = model.config
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_vocab_size(config.vocab_size)
    if add_metadata is not None:
        add_metadata(writer)
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        parts = name.removeprefix("model.").split(".")
        if parts[0] == "layers":
            module, kind = ".".join(parts[2:-1]), parts[-1]
            gguf_name = f"blk.{parts[1]}.{layer_names[module]}.{kind}"
        else:
            gguf_name = f"{names[parts[0]]}.{parts[-1]}"
        writer.add_tensor(gguf_name, tensor.float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize(("family", "tied"), [("qwen2", True), ("qwen3", False)])
def test_qwen_gguf_loads_as_its_family(checkpoint, tmp_path, family, tied):
    ref, _ = checkpoint(family, tied)
    path = tmp_path / f"{family}.gguf"
    write_gguf(ref, path, family)
    ours = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=path.name)
    assert ours.config.model_type == family and ours.config.architectures == [f"{family.title()}ForCausalLM"]
    assert ours.config.tie_word_embeddings == tied
    ids = random_ids(2, 12, seed=9)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, ref(ids).logits, atol=1e-4, rtol=0)


def test_gemma3_config_reads_v4_keys_as_transformers_does():
    v4 = dict(TINY, num_hidden_layers=7, rope_theta=5e5, rope_local_base_freq=20.0, sliding_window_pattern=3,
              rope_scaling={"rope_type": "linear", "factor": 8.0}, query_pre_attn_scalar=30)
    ours, theirs = Gemma3TextConfig(**v4), transformers.Gemma3TextConfig(**v4)
    assert ours.layer_types == theirs.layer_types == ["sliding_attention", "sliding_attention", "full_attention"] * 2 + [
        "sliding_attention"]
    for kind in ("sliding_attention", "full_attention"):
        for key in ("rope_type", "rope_theta", "factor"):
            assert ours.rope_parameters[kind].get(key) == theirs.rope_parameters[kind].get(key), (kind, key)
    assert ours.rope_parameters["full_attention"]["factor"] == 8.0  # scaling only on the global layers
    with pytest.raises(ValueError, match="layer_types must name one of"):
        Gemma3TextConfig(**dict(TINY, layer_types=["sliding_attention"]))
    with pytest.raises(ValueError, match="layer_types must name one of"):
        Gemma3TextConfig(**dict(TINY, layer_types=["sliding_attention", "local"]))
    with pytest.raises(ValueError, match="use_bidirectional_attention"):
        Gemma3TextConfig(**dict(TINY, use_bidirectional_attention=True))


def test_gemma3_base_model_and_classification_head_match_transformers(checkpoint, tmp_path):
    ref, folder = checkpoint("gemma3_text", False)
    base = AutoModel.from_pretrained(folder)
    assert type(base) is Gemma3TextModel and type(AutoConfig.from_pretrained(folder)) is Gemma3TextConfig
    ids, mask = padded_batch("right")
    with torch.no_grad():
        expected = ref.model(ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(base(ids, attention_mask=mask).last_hidden_state[mask.bool()],
                                   expected[mask.bool()], atol=1e-4, rtol=0)
    torch.manual_seed(1)
    head = transformers.Gemma3TextForSequenceClassification(ref.config).eval()
    head.save_pretrained(tmp_path)
    ours = AutoModelForSequenceClassification.from_pretrained(tmp_path)
    assert type(ours) is Gemma3TextForSequenceClassification
    labels = torch.tensor([1, 0, 1])
    with torch.no_grad():
        got, want = ours(ids, attention_mask=mask, labels=labels), head(ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(got.logits, want.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.loss, want.loss, atol=1e-5, rtol=0)


def test_gemma3_bfloat16_rounds_the_embedding_scale_as_transformers(tmp_path):
    config_class, model_class, extra = FAMILIES["gemma3_text"]
    torch.manual_seed(0)
    model_class(config_class(**dict(TINY, hidden_size=80), **extra)).save_pretrained(tmp_path)  # sqrt(80) = 8.944
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    ours = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16)
    ids = random_ids(2, 9, seed=3)
    with torch.no_grad():
        embeddings = ours.model.embed_tokens(ids)
        assert torch.equal(embeddings, theirs.model.embed_tokens(ids))
        unrounded = (ours.model.embed_tokens.weight[ids].float() * 80**0.5).bfloat16()
        assert not torch.equal(embeddings, unrounded)  # the factor is rounded to 8.9375 first, as in transformers
        got, want = ours(ids).logits.float(), theirs(ids).logits.float()
    assert (got - want).abs().max() < 0.05  # bf16 rounding of two implementations, not a different model


def test_qwen2_gguf_byte_level_tokenizer_matches_transformers(checkpoint, tmp_path):
    """A qwen2 file's tokenizer: byte-level BPE split by Qwen2's regex (tokenizer.ggml.pre = "qwen2"), with
    control tokens kept whole. The vocabulary is trained here on the 1 MB corpus, so that its merges cover
    words, digits, Chinese and emoji, and written as llama.cpp writes one."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from test_minilm import build_corpus

    corpus = build_corpus()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=2000, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    state = json.loads(bpe.to_str())["model"]
    tokens = sorted(state["vocab"], key=state["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in state["merges"]]

    def add_tokenizer(writer):
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("qwen2")
        writer.add_token_list(tokens)
        writer.add_token_types([3 if t in specials else 1 for t in tokens])
        writer.add_token_merges(merges)
        writer.add_eos_token_id(tokens.index("<|endoftext|>"))

    path = tmp_path / "qwen2.gguf"
    write_gguf(checkpoint("qwen2", False)[0], path, "qwen2", add_tokenizer)
    ours = AutoTokenizer.from_pretrained(path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path, gguf_file=path.name)
    lines = corpus + ["<|im_start|>user\nHi 12345 there<|im_end|>", "don't  I'M  x\r\n\r\ny", "数字123456"]
    got, expected = ours(lines)["input_ids"], theirs(lines)["input_ids"]
    assert len(got) == len(expected) == len(lines)
    for line, a, b in zip(lines, got, expected, strict=True):
        assert a == b, line[:60]
    assert got[-3][0] == tokens.index("<|im_start|>")  # a control token stays whole
    assert ours.decode(got[-2]) == lines[-2]
