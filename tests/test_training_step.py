"""One training step against transformers: the loss and every gradient, from the plain forward (logits, then
the loss) and from skip_logits=True (the loss a block of rows at a time, no logits), with -100 labels and
num_items_in_batch; LoRA's against peft; and the hand-written backward passes (linear_cross_entropy,
RMSNorm, the gated MLP's down projection) against autograd's own."""

import copy

import peft
import pytest
import torch
import torch.nn.functional as F

from leanformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM, LoraConfig, get_peft_model
from leanformers.models import layers


def random_batch(batch=3, length=20, vocab=128, seed=0):
    """ids, and labels that mask a prompt in each row and the padded end of the last row with -100."""
    ids = torch.randint(3, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    labels = ids.clone()
    labels[:, :5] = -100
    labels[-1, -6:] = -100
    return ids, labels


def training_step(model, ids, labels, **kwargs):
    """The output and the named gradients of one forward and backward pass."""
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=labels, **kwargs)
    out.loss.backward()
    return out, {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def assert_same_gradients(got: dict, expected: dict):
    for (name, grad), (ref_name, ref_grad) in zip(sorted(got.items()), sorted(expected.items()), strict=True):
        assert name == ref_name
        torch.testing.assert_close(grad, ref_grad, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("variant", ["untied", "tied", "gqa"])
@pytest.mark.parametrize("num_items_in_batch", [None, 37])
def test_training_step_matches_transformers_with_and_without_logits(llama_checkpoint, variant, num_items_in_batch):
    ref, folder = llama_checkpoint(variant)
    ref = copy.deepcopy(ref).train()
    ours = LlamaForCausalLM.from_pretrained(folder).train()
    ids, labels = random_batch()
    count = None if num_items_in_batch is None else torch.tensor(num_items_in_batch)
    expected, expected_grads = training_step(ref, ids, labels, num_items_in_batch=count)
    got, grads = training_step(ours, ids, labels, num_items_in_batch=count)
    torch.testing.assert_close(got.logits, expected.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
    assert_same_gradients(grads, expected_grads)

    got, grads = training_step(ours, ids, labels, num_items_in_batch=count, skip_logits=True)
    assert got.logits is None
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
    assert_same_gradients(grads, expected_grads)


def our_name(peft_name: str) -> str:
    """base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight -> ours, without .default."""
    return peft_name.replace("base_model.model.", "base_model.", 1).replace(".default", "")


def test_lora_training_step_without_logits_matches_peft(llama_checkpoint):
    ref, folder = llama_checkpoint("gqa")
    config = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    theirs = peft.get_peft_model(copy.deepcopy(ref), peft.LoraConfig(**config)).train()
    ours = get_peft_model(LlamaForCausalLM.from_pretrained(folder), LoraConfig(**config)).train()
    generator = torch.Generator().manual_seed(1)
    adapters = dict(ours.named_parameters())
    with torch.no_grad():  # the same adapter weights on both sides, lora_B non-zero as after some training
        for name, param in theirs.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
                adapters[our_name(name)].copy_(param)
    ids, labels = random_batch(seed=2)
    expected, expected_grads = training_step(theirs, ids, labels, num_items_in_batch=torch.tensor(40))
    got, grads = training_step(ours, ids, labels, num_items_in_batch=torch.tensor(40), skip_logits=True)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
    expected_grads = {our_name(name): grad for name, grad in expected_grads.items()}
    assert len(grads) == 3 * 2 * 2  # lora_A and lora_B of three layers in each of the two decoder layers
    assert_same_gradients(grads, expected_grads)


def test_skip_logits_with_an_adapter_on_the_lm_head_computes_the_same_loss(llama_checkpoint):
    _, folder = llama_checkpoint("untied")
    model = get_peft_model(LlamaForCausalLM.from_pretrained(folder), LoraConfig(r=2, target_modules=["lm_head"]))
    ids, labels = random_batch()
    expected, expected_grads = training_step(model, ids, labels)
    got, grads = training_step(model, ids, labels, skip_logits=True)
    assert got.logits is None
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
    assert_same_gradients(grads, expected_grads)


def test_gpt2_training_step_without_logits_equals_the_plain_one():
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=96, n_positions=32, n_embd=32, n_layer=2, n_head=4, attn_pdrop=0.0, resid_pdrop=0.0,
                        embd_pdrop=0.0)
    model = GPT2LMHeadModel(config).train()
    ids, labels = random_batch(vocab=96)
    expected, expected_grads = training_step(model, ids, labels, num_items_in_batch=30)
    got, grads = training_step(model, ids, labels, num_items_in_batch=30, skip_logits=True)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
    assert_same_gradients(grads, expected_grads)


@pytest.mark.usefixtures("native_kernels_off")  # the packed copies are built on torch's paths only
def test_training_step_without_logits_drops_the_packed_decode_copies(llama_checkpoint):
    _, folder = llama_checkpoint("untied")
    model = LlamaForCausalLM.from_pretrained(folder)
    ids, labels = random_batch()
    model.generate(ids, max_new_tokens=3, do_sample=False)  # batched decode steps pack the weights
    assert model.lm_head.packed.version is not None and model.model.layers[0].mlp.down_proj.packed.version is not None
    training_step(model.train(), ids, labels, skip_logits=True)  # neither layer's forward runs here
    assert all(m.packed.version is None for m in model.modules() if isinstance(m, layers.Linear))


def test_bf16_autocast_training_step_without_logits_follows_the_plain_one(llama_checkpoint):
    _, folder = llama_checkpoint("gqa")
    model = LlamaForCausalLM.from_pretrained(folder).train()
    ids, labels = random_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, expected_grads = training_step(model, ids, labels, num_items_in_batch=40)
        got, grads = training_step(model, ids, labels, num_items_in_batch=40, skip_logits=True)
    assert got.loss.dtype == torch.float32 and all(g.dtype == torch.float32 for g in grads.values())
    torch.testing.assert_close(got.loss, expected.loss, atol=2e-6, rtol=0)  # bf16 logits too (fp32 ones: 1e-5 off)
    for name, grad in grads.items():  # bf16 rounding apart (the blocks sum lm_head's gradient in bf16)
        torch.testing.assert_close(grad, expected_grads[name], atol=2e-2, rtol=5e-2, msg=lambda m: f"{name}: {m}")


def test_skip_logits_needs_labels(llama_checkpoint):
    _, folder = llama_checkpoint("untied")
    with pytest.raises(ValueError, match="needs labels"):
        LlamaForCausalLM.from_pretrained(folder)(random_batch()[0], skip_logits=True)


def plain_cross_entropy(hidden, weight, labels, num_items_in_batch=None):
    return layers.causal_lm_loss(F.linear(hidden, weight), labels, num_items_in_batch=num_items_in_batch)


@pytest.mark.parametrize("weight_trains", [True, False])
def test_linear_cross_entropy_in_blocks_of_rows_matches_the_plain_loss(monkeypatch, weight_trains):
    vocab = 50
    monkeypatch.setattr(layers, "LOSS_BLOCK_ELEMENTS", 3 * vocab)  # three rows a block: 40 scored rows in 14 blocks
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 16, 8, generator=generator)
    weight = torch.randn(vocab, 8, generator=generator)
    labels = torch.randint(0, vocab, (3, 16), generator=generator)
    labels[0, :5] = labels[2, 10:] = -100
    for num_items_in_batch in (None, torch.tensor(55)):
        results = []
        for loss_fn in (plain_cross_entropy, layers.linear_cross_entropy):
            h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_(weight_trains)
            loss = loss_fn(h, w, labels, num_items_in_batch=num_items_in_batch)
            loss.backward()
            results.append((loss, h.grad, w.grad))
        (expected, *expected_grads), (got, *grads) = results
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
        assert (grads[1] is None) == (not weight_trains)
        for grad, expected_grad in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(grad, expected_grad, atol=1e-5, rtol=1e-4)


def test_linear_cross_entropy_with_no_scored_label_and_a_second_backward():
    hidden = torch.randn(2, 4, 8, requires_grad=True)
    weight = torch.randn(10, 8, requires_grad=True)
    unscored = torch.full((2, 4), -100)
    assert layers.linear_cross_entropy(hidden, weight, unscored).isnan()  # 0 / 0, as F.cross_entropy's mean
    loss = layers.linear_cross_entropy(hidden, weight, unscored, num_items_in_batch=5)
    loss.backward()
    assert loss == 0 and not hidden.grad.any() and not weight.grad.any()
    loss = layers.linear_cross_entropy(hidden, weight, torch.randint(0, 10, (2, 4)))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward twice"):
        loss.backward()


def backward_results(fn, inputs, trains, grad):
    """fn's output and its inputs' gradients, each input trained when `trains(i)` says so."""
    inputs = [t.clone().requires_grad_(trains(i)) for i, t in enumerate(inputs)]
    out = fn(*inputs)
    out.backward(grad)
    return [out, *(t.grad for t in inputs)]


@pytest.mark.parametrize("trains", ["all", "inputs", "weights"])
def test_rms_norm_and_silu_gated_linear_backward_match_autograd(trains):
    generator = torch.Generator().manual_seed(0)
    x, weight = torch.randn(2, 5, 16, generator=generator), torch.rand(16, generator=generator) + 0.5
    grad = torch.randn(2, 5, 16, generator=generator)
    is_trained = {"all": lambda i: True, "inputs": lambda i: i == 0, "weights": lambda i: i == 1}[trains]
    expected = backward_results(lambda x, w: F.rms_norm(x, w.shape, w, 1e-6), [x, weight], is_trained, grad)
    got = backward_results(lambda x, w: layers.RMSNormFunction.apply(x, w, 1e-6), [x, weight], is_trained, grad)
    for got_tensor, expected_tensor in zip(got, expected, strict=True):
        torch.testing.assert_close(got_tensor, expected_tensor, atol=1e-5, rtol=1e-4)

    gate, up = torch.randn(2, 5, 24, generator=generator), torch.randn(2, 5, 24, generator=generator)
    down, bias = torch.randn(16, 24, generator=generator), torch.randn(16, generator=generator)
    is_trained = {"all": lambda i: True, "inputs": lambda i: i < 2, "weights": lambda i: i >= 2}[trains]
    inputs = [gate, up, down, bias]
    expected = backward_results(lambda g, u, w, b: F.linear(F.silu(g) * u, w, b), inputs, is_trained, grad)
    got = backward_results(layers.SiluGatedLinear.apply, inputs, is_trained, grad)
    for got_tensor, expected_tensor in zip(got, expected, strict=True):
        torch.testing.assert_close(got_tensor, expected_tensor, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_smollm2_training_step_without_logits_matches_transformers(smollm2_pair):
    ref, ours = smollm2_pair
    ref, ours = copy.deepcopy(ref).train(), copy.deepcopy(ours).train()
    ids, labels = random_batch(batch=2, length=48, vocab=49152, seed=3)
    expected, expected_grads = training_step(ref, ids, labels, num_items_in_batch=torch.tensor(70))
    got, grads = training_step(ours, ids, labels, num_items_in_batch=torch.tensor(70), skip_logits=True)
    torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)
    assert_same_gradients(grads, expected_grads)


def kept_activation_bytes(model, ids, labels, monkeypatch, recompute: bool) -> int:
    """Bytes of the activations one training forward keeps for the backward pass (distinct storages, no
    parameters): every tensor autograd keeps passes through RecomputedNormOutputs.pack, which is watched."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}
    pack = layers.RecomputedNormOutputs.pack if recompute else lambda self, t: t

    def watched_pack(self, t):
        packed = pack(self, t)
        if isinstance(packed, torch.Tensor) and packed.untyped_storage().data_ptr() not in params:
            kept[packed.untyped_storage().data_ptr()] = packed.untyped_storage().nbytes()
        return packed

    monkeypatch.setattr(layers.RecomputedNormOutputs, "pack", watched_pack)
    model(input_ids=ids, labels=labels, skip_logits=True)
    return sum(kept.values())


def test_norm_outputs_kept_for_the_backward_are_recomputed_bit_for_bit(llama_checkpoint, monkeypatch):
    """A linear layer after an RMSNorm keeps its input for the backward pass; the decoder keeps a recipe
    instead (RecomputedNormOutputs). The gradients are bit-identical to those of the graph that keeps the
    norm's output, and the activations kept per step are smaller by two (B, T, hidden) tensors per layer."""
    _, folder = llama_checkpoint("untied")
    model = LlamaForCausalLM.from_pretrained(folder).train()
    ids, labels = random_batch()
    got, grads = training_step(model, ids, labels, skip_logits=True)
    recomputed_bytes = kept_activation_bytes(model, ids, labels, monkeypatch, recompute=True)
    kept_bytes = kept_activation_bytes(model, ids, labels, monkeypatch, recompute=False)
    expected, expected_grads = training_step(model, ids, labels, skip_logits=True)  # pack keeps every tensor
    assert torch.equal(got.loss, expected.loss)
    for (name, grad), (ref_name, ref_grad) in zip(sorted(grads.items()), sorted(expected_grads.items()), strict=True):
        assert name == ref_name and torch.equal(grad, ref_grad), name
    hidden = model.config.hidden_size
    assert kept_bytes - recomputed_bytes == 2 * model.config.num_hidden_layers * ids.numel() * hidden * 4


def test_a_recipe_is_not_taken_for_a_tensor_that_reuses_a_dead_outputs_memory():
    hooks = layers.RecomputedNormOutputs()
    x, weight = torch.randn(3, 8, requires_grad=True), torch.ones(8, requires_grad=True)
    with hooks:
        out = layers.rms_norm(x, weight, 1e-6)
        packed_view = hooks.pack(out.view(24))
        address = out.untyped_storage().data_ptr()
        del out
        stranger = torch.zeros(3, 8)
        hooks.recipes[stranger.untyped_storage().data_ptr()] = hooks.recipes.pop(address)
        assert hooks.pack(stranger) is stranger
    assert torch.equal(hooks.unpack(packed_view), F.rms_norm(x, (8,), weight, 1e-6).detach().view(24))
    assert layers.RecomputedNormOutputs.active is None
