"""Every test here runs on each device torch has: the CPU always, the GPU when there is one. Each compares
with transformers on that same device: where the model lands and its logits (fp32 and bf16), generate,
the Trainer in fp32, bf16 and fp16, and pipelines. The checkpoints are tiny random ones that transformers
writes, with a word-level tokenizer built here, so nothing needs a packaged model."""

import math
from itertools import pairwise

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors

import leanformers
from leanformers import Trainer, TrainingArguments, pipeline
from leanformers.training.arguments import cpu_has_bf16

from conftest import TINY_LLAMA
from test_bert import TINY_BERT
from test_gpt2 import TINY_GPT2
from test_pipelines import assert_same
from trainer_parity import PARITY, as_records, lm_data, run_both, train_losses
from trainer_run import pad_collate

# Tiny models: a second CPU thread gains nothing, and on a shared machine it made this file ~8x slower
pytestmark = pytest.mark.usefixtures("one_thread")
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
LABELS = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
# family -> (transformers class that writes it, its config, the Auto class both libraries load it with).
# initializer_range=0.2 spreads the logits, so a greedy choice is not a near-tie that last-bit differences
# between the two implementations' kernels could flip.
FAMILIES = {
    "llama": ("LlamaForCausalLM", transformers.LlamaConfig(**TINY_LLAMA, initializer_range=0.2),
              "AutoModelForCausalLM"),
    "gpt2": ("GPT2LMHeadModel", transformers.GPT2Config(**TINY_GPT2, initializer_range=0.2), "AutoModelForCausalLM"),
    # a local layer with a 4-token window, then a global one
    "gemma3_text": ("Gemma3ForCausalLM", transformers.Gemma3TextConfig(
        **TINY_LLAMA, head_dim=16, sliding_window=4, layer_types=["sliding_attention", "full_attention"],
        initializer_range=0.2), "AutoModelForCausalLM"),
    "bert": ("BertForSequenceClassification", transformers.BertConfig(**TINY_BERT, initializer_range=0.2, **LABELS),
             "AutoModelForSequenceClassification"),
}
SPECIALS = ["[PAD]", "[BOS]", "[EOS]", "[UNK]", "[CLS]", "[SEP]"]  # ids 0, 1, 2 as the configs' pad, bos, eos
WORDS = ("the a cat dog sat on mat ran fast slow good bad film food was is it and very not I loved this "
         "terrible service cold fine guess worst purchase bright warm full of life").split()
TEXTS = ["I loved this film", "terrible service and cold food", "it was fine I guess", "the worst purchase",
         "bright warm and full of life", "a cat sat on the mat and it was very good"]
# Left-padded prompts for generate (0 is the pad id), so the mask's path to the device is exercised too
PROMPTS = torch.tensor([[0, 0, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14], [0, 0, 0, 0, 15, 16]])
MASK = (PROMPTS != 0).long()


def word_tokenizer(family: str):
    """A word-level tokenizer whose vocabulary is the checkpoints' 128 ids; BERT's wraps a text in [CLS] ...
    [SEP], the decoders' pad on the left (as a decoder's tokenizer does for batched generation)."""
    tokens = SPECIALS + WORDS
    tokens += [f"w{i}" for i in range(128 - len(tokens))]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    if family == "bert":
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 4), ("[SEP]", 5)])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                                bos_token="[BOS]", eos_token="[EOS]",
                                                padding_side="right" if family == "bert" else "left")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """family -> folder with a tiny random model and a word-level tokenizer, both saved by transformers; and
    "llama-hot", the Llama with initializer_range=1.0, whose fp16 gradients overflow at the scaler's first
    scales (so the scaler skips steps)."""
    folders = {}
    for family, (head, config, _) in FAMILIES.items():
        folders[family] = tmp_path_factory.mktemp(f"devices-{family}")
        torch.manual_seed(0)
        getattr(transformers, head)(config).save_pretrained(folders[family])
        word_tokenizer(family).save_pretrained(folders[family])
    folders["llama-hot"] = tmp_path_factory.mktemp("devices-llama-hot")
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY_LLAMA, initializer_range=1.0)).save_pretrained(
        folders["llama-hot"])
    return folders


def load_both(folder, auto: str, device: str, placement: str = "device_map", **kwargs):
    """(transformers' model, ours) from the same folder, put on `device` by from_pretrained(device_map=...)
    or by .to(device) after loading."""
    loaded = []
    for lib in (transformers, leanformers):
        if placement == "device_map":
            loaded.append(getattr(lib, auto).from_pretrained(folder, device_map=device, **kwargs))
        else:
            loaded.append(getattr(lib, auto).from_pretrained(folder, **kwargs).to(device))
    return tuple(model.eval() for model in loaded)


def random_batch(device: str, batch: int = 3, length: int = 10, seed: int = 0):
    """Ids of real words and a right-padded attention mask (row i has i pad tokens), on `device`."""
    ids = torch.randint(6, 6 + len(WORDS), (batch, length), generator=torch.Generator().manual_seed(seed))
    mask = (torch.arange(length)[None, :] < length - torch.arange(batch)[:, None]).long()
    return ids.masked_fill(mask == 0, 0).to(device), mask.to(device)


def forward_both(ref, ours, family: str, device: str):
    """Both models' outputs for one padded batch (with labels for the language models, so the loss is
    computed on the device too); returns (transformers' output, ours, the mask)."""
    ids, mask = random_batch(device)
    labels = {} if family == "bert" else {"labels": ids.masked_fill(mask == 0, -100)}
    with torch.no_grad():
        return ref(ids, attention_mask=mask, **labels), ours(ids, attention_mask=mask, **labels), mask


def real_logits(output, family: str, mask):
    """The logits of real tokens (a padded position's logits are whatever each implementation leaves there)."""
    return output.logits if family == "bert" else output.logits[mask.bool()]


# -- placement and fp32 logits -------------------------------------------------------------------------
@pytest.mark.parametrize("placement", ["device_map", "to"])
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("device", DEVICES)
def test_logits_match_transformers_on_the_device(tiny, device, family, placement):
    ref, ours = load_both(tiny[family], FAMILIES[family][2], device, placement)
    assert ours.device.type == device and ours.device == ref.device
    assert all(p.device == ours.device for p in ours.parameters())
    assert all(b.device == ours.device for b in ours.buffers())  # rotary frequencies, position ids
    expected, got, mask = forward_both(ref, ours, family, device)
    assert got.logits.device == expected.logits.device
    torch.testing.assert_close(real_logits(got, family, mask), real_logits(expected, family, mask), atol=1e-4, rtol=0)
    if family != "bert":
        torch.testing.assert_close(got.loss, expected.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_device_map_spellings_place_the_model_where_transformers_does(tiny, device):
    spellings = [device, torch.device(device), {"": device}, "auto", *([0, "cuda:0"] if device == "cuda" else [])]
    for spelling in spellings:
        ref = transformers.AutoModelForCausalLM.from_pretrained(tiny["llama"], device_map=spelling)
        ours = leanformers.AutoModelForCausalLM.from_pretrained(tiny["llama"], device_map=spelling)
        assert ours.device == ref.device, spelling
    with pytest.raises(ValueError, match="places modules on different devices"):
        leanformers.AutoModelForCausalLM.from_pretrained(tiny["llama"], device_map={"model": device, "lm_head": "cpu"})


# -- generate --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text"])
@pytest.mark.parametrize("device", DEVICES)
def test_greedy_generate_matches_transformers_on_the_device(tiny, device, family):
    ref, ours = load_both(tiny[family], "AutoModelForCausalLM", device)
    ids, mask = PROMPTS.to(device), MASK.to(device)
    expected = ref.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    assert got.device == expected.device and got.device.type == device
    assert got.shape == expected.shape and torch.equal(got, expected)
    # ids left on the CPU are moved to the model's device by our generate()
    assert torch.equal(ours.generate(PROMPTS, attention_mask=MASK, max_new_tokens=12, do_sample=False), got)


@pytest.mark.parametrize("device", DEVICES)
def test_sampling_with_a_seed_on_the_device(tiny, device):
    ref, ours = load_both(tiny["llama"], "AutoModelForCausalLM", device)
    ids, mask = PROMPTS.to(device), MASK.to(device)
    settings = dict(attention_mask=mask, do_sample=True, top_k=50, temperature=0.9, max_new_tokens=12)
    runs = []
    for model in (ref, ours, ours):
        torch.manual_seed(0)
        runs.append(model.generate(ids, **settings))
    expected, got, again = runs
    assert got.device.type == device and got.shape[0] == PROMPTS.shape[0]
    assert PROMPTS.shape[1] < got.shape[1] <= PROMPTS.shape[1] + 12
    assert torch.equal(got[:, :PROMPTS.shape[1]], ids)
    assert int(got.min()) >= 0 and int(got.max()) < TINY_LLAMA["vocab_size"]
    assert torch.equal(again, got)  # the same seed, the same tokens
    assert torch.equal(got, expected)  # and the same draws as transformers' torch.multinomial


# -- bf16 ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("device", DEVICES)
def test_bf16_logits_close_to_transformers_bf16_on_the_device(tiny, device, family):
    ref, ours = load_both(tiny[family], FAMILIES[family][2], device, dtype=torch.bfloat16)
    assert ours.dtype == ref.dtype == torch.bfloat16 and ours.device == ref.device
    expected, got, mask = forward_both(ref, ours, family, device)
    assert got.logits.dtype == expected.logits.dtype
    want, have = real_logits(expected, family, mask).float(), real_logits(got, family, mask).float()
    # bf16 keeps 8 significant bits: one rounding moves a value by up to 2**-8 of it. The two implementations
    # round at different places (order of additions, where a norm or softmax goes to fp32 and back), and this
    # adds up over two layers: measured, each side's bf16 logits are up to ~6 such steps of the largest logit
    # from the fp32 ones, and up to ~3 from each other. So: 8 steps of the largest logit (3% of it). A real
    # bug (a wrong mask, position or norm) moves logits by about their whole scale.
    atol = 8 * 2**-8 * float(want.abs().max())
    torch.testing.assert_close(have, want, atol=atol, rtol=0)
    # The same top token wherever transformers' top two are more than atol apart. (assert_close alone lets
    # each of the two move by atol, so it would allow a flip up to 2 * atol.)
    top2 = want.topk(2, dim=-1).values
    clear = (top2[:, 0] - top2[:, 1]) > atol
    assert clear.float().mean() > 0.5  # most positions are clear: the check is not vacuous
    assert torch.equal(have.argmax(-1)[clear], want.argmax(-1)[clear])


# -- Trainer ---------------------------------------------------------------------------------------------------
def precision_refused(device: str, precision: str) -> str | None:
    """Our error's message when TrainingArguments refuses this precision on this device, else None."""
    if device == "cpu" and precision == "fp16":
        return "fp16 mixed precision needs a GPU"
    if device == "cpu" and precision == "bf16" and not cpu_has_bf16():
        return "this CPU has no bf16 instructions"
    return None


# Losses within: fp32 runs the same float math in a different order. Under autocast the matmuls round
# to 8 significant bits in bf16 (see the bf16 test) or 11 in fp16, and each step's update starts from
# slightly different weights, so a loss of ~6 may differ in its second (bf16) or third (fp16) decimal.
# Measured on a CPU (fp16 autocast forced there for the measurement): up to 0.006 in bf16, 0.001 in fp16.
LOSS_TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2, "fp16": 1e-2}


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("device", DEVICES)
def test_trainer_on_the_device_matches_transformers(tiny, tmp_path, device, precision):
    args = {**PARITY, "max_steps": 6, "use_cpu": device == "cpu", **({precision: True} if precision != "fp32" else {})}
    refused = precision_refused(device, precision)
    if refused:
        with pytest.raises(ValueError, match=refused):
            TrainingArguments(str(tmp_path), **args)
        return
    ref, ours = run_both(tiny["llama"], args, lm_data(24))
    assert ours.args.device.type == device and ref.args.device.type == device
    assert all(p.device.type == device for p in ours.model.parameters())
    assert ours.model.dtype == torch.float32  # mixed precision keeps fp32 weights
    expected, got = train_losses(ref), train_losses(ours)
    assert len(got) == 6
    for want, have in zip(expected, got, strict=True):
        assert have["step"] == want["step"]
        assert have["loss"] == pytest.approx(want["loss"], abs=LOSS_TOLERANCE[precision])
        assert have["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-12)
    held_out = lm_data(6)
    assert ours.evaluate(leanformers.Dataset.from_dict(held_out))["eval_loss"] == pytest.approx(
        ref.evaluate(as_records(held_out))["eval_loss"], abs=LOSS_TOLERANCE[precision])
    if precision == "fp16":
        assert_fp16_skips_keep_the_schedule_and_resume(tiny["llama-hot"], tmp_path)


def assert_fp16_skips_keep_the_schedule_and_resume(folder, tmp_path):
    """fp16 on the Llama whose gradients overflow at the scaler's first scales. A step the scaler skips (its
    gradient norm is inf or nan) leaves the schedule where it is, as in transformers; and a run resumed from
    a checkpoint written after such steps goes on with the scaler's reduced scale, as the whole run did."""

    def train(out, resume=None):
        args = {**PARITY, "max_steps": 6, "fp16": True, "save_strategy": "steps", "save_steps": 3}
        trainer = Trainer(leanformers.AutoModelForCausalLM.from_pretrained(folder),
                          TrainingArguments(str(out), **args),
                          train_dataset=leanformers.Dataset.from_dict(lm_data(24)), data_collator=pad_collate)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    whole = train(tmp_path / "whole")
    logged = train_losses(whole)
    skipped = [not math.isfinite(e["grad_norm"]) for e in logged]
    assert any(skipped[:3])  # before the checkpoint at step 3: it holds a scale below the initial one
    # warm-up to step 3, then linear decay: every step that updates the weights changes the rate
    rates = [e["learning_rate"] for e in logged]
    assert [b == a for a, b in pairwise(rates)] == skipped[:-1]
    resumed = train(tmp_path / "resumed", resume=tmp_path / "whole" / "checkpoint-3")
    assert resumed.scaler.get_scale() == whole.scaler.get_scale() < 2.0**16
    for want, have in zip(logged, train_losses(resumed), strict=True):
        assert have["step"] == want["step"] and have["learning_rate"] == want["learning_rate"]
        assert have["loss"] == pytest.approx(want["loss"], abs=1e-4)  # a GPU's backward kernels may add in any order


# -- pipelines ----------------------------------------------------------------------------------------------------
# task -> (the checkpoint it runs, the call's settings)
PIPELINE_CASES = {"text-generation": ("llama", {"max_new_tokens": 8, "do_sample": False}),
                  "text-classification": ("bert", {"top_k": None})}


@pytest.mark.parametrize("placement", ["device", "device_map", None])
@pytest.mark.parametrize("task", PIPELINE_CASES)
@pytest.mark.parametrize("device", DEVICES)
def test_pipeline_matches_transformers_on_the_device(tiny, device, task, placement):
    family, settings = PIPELINE_CASES[task]
    kwargs = {"model": str(tiny[family]), **({placement: device} if placement else {})}
    ref, ours = transformers.pipeline(task, **kwargs), pipeline(task, **kwargs)
    if placement is None:  # transformers' default: the first GPU when there is one
        first_gpu = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        assert ours.model.device == ref.model.device == first_gpu
    else:
        assert ours.model.device.type == device
    if placement == "device":  # (transformers moves a model device_map put on the CPU to a GPU when there is one)
        assert ours.model.device == ref.model.device
    assert_same(ours(TEXTS[0], **settings), ref(TEXTS[0], **settings))
    assert_same(ours(TEXTS, batch_size=3, **settings), ref(TEXTS, batch_size=3, **settings))


@pytest.mark.parametrize("device", DEVICES)
def test_pipeline_moves_a_model_object_to_the_device(tiny, device):
    ours = leanformers.AutoModelForSequenceClassification.from_pretrained(tiny["bert"])
    classifier = pipeline("text-classification", model=ours, tokenizer=leanformers.AutoTokenizer.from_pretrained(
        tiny["bert"]), device=device)
    assert ours.device.type == device
    ref = transformers.pipeline("text-classification", model=str(tiny["bert"]), device=device)
    assert_same(classifier(TEXTS, top_k=None), ref(TEXTS, top_k=None))
    with pytest.raises(ValueError, match="pass device= or device_map=, not both"):
        pipeline("text-classification", model=str(tiny["bert"]), device=device, device_map=device)
