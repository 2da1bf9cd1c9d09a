"""Gradient (activation) checkpointing: with it, each layer is recomputed in backward, and the loss and
every gradient stay those of the plain backward and of transformers' checkpointed one, for every head of
Llama, GPT-2 and BERT; it stays off in eval, under no_grad and in generation; dropout draws the same
masks again; LoRA's adapters get the same gradients, reentrant checkpoints included."""

import warnings

import pytest
import torch
import transformers
from conftest import TINY_LLAMA
from test_bert import TINY_BERT
from test_gpt2 import TINY_GPT2

import leanformers
from leanformers import GPT2LMHeadModel, LlamaForCausalLM, LoraConfig, get_peft_model

FAMILIES = {
    "llama": (transformers.LlamaConfig, TINY_LLAMA, dict(classifier_dropout=0.0)),
    "gpt2": (transformers.GPT2Config, TINY_GPT2, dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                                      classifier_dropout=0.0)),
    "bert": (transformers.BertConfig, TINY_BERT, dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)),
}
HEADS = {
    "llama": ["LlamaModel", "LlamaForCausalLM", "LlamaForSequenceClassification", "LlamaForTokenClassification",
              "LlamaForQuestionAnswering"],
    "gpt2": ["GPT2Model", "GPT2LMHeadModel", "GPT2ForSequenceClassification", "GPT2ForTokenClassification",
             "GPT2ForQuestionAnswering"],
    "bert": ["BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertForTokenClassification",
             "BertForQuestionAnswering", "BertForMultipleChoice"],
}
LAYER_CLASSES = ("LlamaDecoderLayer", "GPT2Block", "BertLayer")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """(family, head class name, dropout) -> (transformers model, folder it saved itself to); without
    dropout unless asked, so that transformers' training forward is the same function as ours."""
    made = {}

    def make(family, head, dropout=False):
        if (family, head, dropout) not in made:
            config_class, tiny, no_dropout = FAMILIES[family]
            torch.manual_seed(0)
            config = config_class(**tiny, **({} if dropout else no_dropout), num_labels=2 if "Question" in head else 3)
            model = getattr(transformers, head)(config)
            folder = tmp_path_factory.mktemp(f"{head}-dropout" if dropout else head)
            model.save_pretrained(folder)
            made[family, head, dropout] = (model, folder)
        return made[family, head, dropout]

    return make


def batch_for(head, seed=0):
    """Token ids and the head's labels; multiple choice takes (batch, choices, seq)."""
    g = torch.Generator().manual_seed(seed)
    B, T = 2, 7
    ids = torch.randint(3, 128, (B, 3, T) if "MultipleChoice" in head else (B, T), generator=g)
    if head.endswith(("CausalLM", "LMHeadModel")):
        return {"input_ids": ids, "labels": ids}
    if head.endswith("MaskedLM"):
        return {"input_ids": ids, "labels": torch.where(torch.rand(ids.shape, generator=g) < 0.4, ids, -100)}
    if head.endswith(("SequenceClassification", "MultipleChoice")):
        return {"input_ids": ids, "labels": torch.randint(0, 3, (B,), generator=g)}
    if head.endswith("TokenClassification"):
        return {"input_ids": ids, "labels": torch.randint(0, 3, (B, T), generator=g)}
    if head.endswith("QuestionAnswering"):
        return {"input_ids": ids, "start_positions": torch.tensor([1, 5]), "end_positions": torch.tensor([3, 6])}
    return {"input_ids": ids}


def objective(out):
    """The loss, or for a base model a fixed random projection of its outputs (a plain sum would give the
    last LayerNorm's input no gradient)."""
    if out.get("loss") is not None:
        return out.loss
    total = 0.0
    for i, t in enumerate(t for t in (out.last_hidden_state, out.get("pooler_output")) if t is not None):
        total = total + (t * torch.randn(t.shape, generator=torch.Generator().manual_seed(i))).sum()
    return total


def loss_and_gradients(model, batch, seed=0):
    """(loss, {parameter name: gradient}) of one training forward and backward."""
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = objective(model.train()(**batch))
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def assert_same_gradients(got, expected, atol):
    assert got and sorted(got) == sorted(expected)
    for (name, a), (_, b) in zip(sorted(got.items()), sorted(expected.items()), strict=True):
        assert a is not None and b is not None, name
        torch.testing.assert_close(a, b, atol=atol, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


def count_layer_calls(model) -> list:
    """A list that gets one entry per call of any decoder/encoder layer of `model`. A pre-hook: a recompute
    stops as soon as it has rebuilt what backward needs, before a forward hook would run."""
    calls = []
    for module in model.modules():
        if type(module).__name__ in LAYER_CLASSES:
            module.register_forward_pre_hook(lambda *args: calls.append(1))
    return calls


def checkpoint_nodes(loss) -> set:
    """Names of the reentrant checkpoint nodes in loss's autograd graph."""
    seen, stack, found = set(), [loss.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "CheckpointFunction" in node.name():
            found.add(node.name())
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


@pytest.mark.parametrize("family,head", [(f, h) for f, heads in HEADS.items() for h in heads])
def test_checkpointed_gradients_match_plain_and_transformers(checkpoint, family, head):
    ref, folder = checkpoint(family, head)
    ours = getattr(leanformers, head).from_pretrained(folder)
    batch = batch_for(head)
    plain_loss, plain = loss_and_gradients(ours, batch)

    calls = count_layer_calls(ours)
    ours.gradient_checkpointing_enable()
    assert ours.is_gradient_checkpointing
    loss, grads = loss_and_gradients(ours, batch)
    n_layers = ours.config.num_hidden_layers
    assert len(calls) == 2 * n_layers  # each layer ran again in backward
    torch.testing.assert_close(loss, plain_loss, atol=1e-6, rtol=0)
    assert_same_gradients(grads, plain, atol=1e-6)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers 5 renamed it activation_checkpointing_enable
        ref.gradient_checkpointing_enable()
        try:
            ref_loss, ref_grads = loss_and_gradients(ref, batch)
        finally:
            ref.gradient_checkpointing_disable()
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=0)
    assert_same_gradients(grads, ref_grads, atol=1e-4)


@pytest.mark.parametrize("family,head", [("llama", "LlamaForCausalLM"), ("gpt2", "GPT2LMHeadModel"),
                                         ("bert", "BertForMaskedLM")])
def test_checkpointing_is_off_in_eval_under_no_grad_and_after_disable(checkpoint, family, head):
    _, folder = checkpoint(family, head)
    model = getattr(leanformers, head).from_pretrained(folder)
    n_layers = model.config.num_hidden_layers
    calls = count_layer_calls(model)
    batch = batch_for(head)
    model.gradient_checkpointing_enable()

    objective(model.eval()(**batch)).backward()
    assert len(calls) == n_layers
    calls.clear()
    with torch.no_grad():
        model.train()(**batch)
    assert len(calls) == n_layers
    calls.clear()
    objective(model.train()(**batch)).backward()
    assert len(calls) == 2 * n_layers

    calls.clear()
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing
    objective(model(**batch)).backward()
    assert len(calls) == n_layers


def test_checkpointing_set_on_the_base_model_reaches_its_head(checkpoint):
    _, folder = checkpoint("llama", "LlamaForSequenceClassification")
    model = leanformers.LlamaForSequenceClassification.from_pretrained(folder)
    calls = count_layer_calls(model)
    model.model.gradient_checkpointing_enable()
    assert model.is_gradient_checkpointing
    objective(model.train()(**batch_for("LlamaForSequenceClassification"))).backward()
    assert len(calls) == 2 * model.config.num_hidden_layers


def test_transformers_5_names_enable_and_disable_checkpointing(checkpoint):
    _, folder = checkpoint("gpt2", "GPT2LMHeadModel")
    model = GPT2LMHeadModel.from_pretrained(folder)
    calls = count_layer_calls(model)
    model.activation_checkpointing_enable({"use_reentrant": True})
    assert model.is_activation_checkpointing
    loss = objective(model.train()(**batch_for("GPT2LMHeadModel")))
    assert checkpoint_nodes(loss) == {"CheckpointFunctionBackward"}  # use_reentrant reached torch's checkpoint
    loss.backward()
    assert len(calls) == 2 * model.config.num_hidden_layers
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing and not model.is_gradient_checkpointing


@pytest.mark.parametrize("family,head", [("llama", "LlamaForCausalLM"), ("bert", "BertForSequenceClassification")])
def test_reentrant_checkpointing_gives_the_plain_gradients(checkpoint, family, head):
    _, folder = checkpoint(family, head)
    model = getattr(leanformers, head).from_pretrained(folder)
    batch = batch_for(head)
    plain_loss, plain = loss_and_gradients(model, batch)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    loss = objective(model.train()(**batch))
    assert checkpoint_nodes(loss) == {"CheckpointFunctionBackward"}
    model.gradient_checkpointing_disable()
    model.gradient_checkpointing_enable()
    assert not checkpoint_nodes(objective(model(**batch)))  # back to the default, non-reentrant checkpoint
    model.gradient_checkpointing_enable({"use_reentrant": True})
    got_loss, got = loss_and_gradients(model, batch)
    torch.testing.assert_close(got_loss, plain_loss, atol=1e-6, rtol=0)
    assert_same_gradients(got, plain, atol=1e-6)


def test_dropout_draws_the_same_masks_when_recomputed(checkpoint):
    _, folder = checkpoint("gpt2", "GPT2LMHeadModel", dropout=True)
    model = GPT2LMHeadModel.from_pretrained(folder)
    assert model.config.resid_pdrop == model.config.attn_pdrop == 0.1
    batch = batch_for("GPT2LMHeadModel")
    with torch.no_grad():
        eval_loss = model.eval()(**batch).loss
    plain_loss, plain = loss_and_gradients(model, batch, seed=3)
    assert abs(plain_loss - eval_loss) > 1e-4  # dropout is at work
    model.gradient_checkpointing_enable()
    loss, grads = loss_and_gradients(model, batch, seed=3)
    torch.testing.assert_close(loss, plain_loss, atol=1e-6, rtol=0)
    assert_same_gradients(grads, plain, atol=1e-6)
    # Without restoring the RNG state the recompute draws other masks: what the test above relies on.
    model.gradient_checkpointing_enable({"preserve_rng_state": False})
    _, unpreserved = loss_and_gradients(model, batch, seed=3)
    assert not torch.allclose(unpreserved["transformer.h.0.mlp.c_fc.weight"], plain["transformer.h.0.mlp.c_fc.weight"],
                              atol=1e-4)


def test_use_cache_is_turned_off_while_training_with_checkpointing_and_generation_still_caches(llama_checkpoint):
    _, folder = llama_checkpoint("untied")
    model = LlamaForCausalLM.from_pretrained(folder)
    ids = batch_for("LlamaForCausalLM")["input_ids"]
    with torch.no_grad():
        expected = model.eval().generate(ids, max_new_tokens=5, do_sample=False)
    model.gradient_checkpointing_enable()
    calls = count_layer_calls(model)
    with pytest.warns(UserWarning, match="use_cache=True is incompatible with gradient checkpointing"):
        out = model.train()(ids, use_cache=True)
    assert out.cache is None
    out.logits.sum().backward()
    assert len(calls) == 2 * model.config.num_hidden_layers
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no use_cache warning: nothing is checkpointed without grad
        got = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(got, expected)
    assert len(calls) == 5 * model.config.num_hidden_layers  # a prefill and four one-token steps: the cache is used


def lora_model(folder):
    torch.manual_seed(0)  # lora_A's init
    model = get_peft_model(LlamaForCausalLM.from_pretrained(folder),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a fresh lora_B is zero, which would leave lora_A without gradient
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_lora_adapters_get_the_same_gradients_with_checkpointing(llama_checkpoint, use_reentrant):
    _, folder = llama_checkpoint("gqa")
    batch = batch_for("LlamaForCausalLM", seed=2)
    plain_loss, plain = loss_and_gradients(lora_model(folder), batch)
    assert len(plain) == 2 * 3 * TINY_LLAMA["num_hidden_layers"]  # only the adapters train

    model = lora_model(folder)
    calls = count_layer_calls(model)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": use_reentrant})
    assert model.is_gradient_checkpointing
    loss, grads = loss_and_gradients(model, batch)
    assert len(calls) == 2 * TINY_LLAMA["num_hidden_layers"]
    torch.testing.assert_close(loss, plain_loss, atol=1e-6, rtol=0)
    assert_same_gradients(grads, plain, atol=1e-6)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_input_require_grads_hook_is_added_and_removed(llama_checkpoint):
    _, folder = llama_checkpoint("gqa")
    model = lora_model(folder)
    ids = batch_for("LlamaForCausalLM")["input_ids"]
    embed = model.get_input_embeddings()
    outputs = []
    embed.register_forward_hook(lambda module, inputs, output: outputs.append(output))
    model(ids)
    model.enable_input_require_grads()
    model.enable_input_require_grads()  # a second call adds no second hook
    model(ids)
    model.disable_input_require_grads()
    model(ids)
    assert [o.requires_grad for o in outputs] == [False, True, False]
