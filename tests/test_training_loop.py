"""The hand-written training loop's helpers against transformers: every learning-rate schedule step by
step, their errors, set_seed, and the seed's loop (DataLoader + DataCollatorWithPadding, AdamW,
get_scheduler("linear"), tqdm) run as written with leanformers imports, loss for loss against the same
loop written with transformers and datasets."""

import pickle
import random

import numpy as np
import pytest
import torch
import transformers

import leanformers
from leanformers import get_scheduler, set_seed
from leanformers.hub import bundled_model_path

CASES = [
    ("linear", 3, 20, None),
    ("linear", 0, 7, None),
    ("cosine", 4, 25, None),
    ("cosine", 2, 16, {"num_cycles": 1.5}),
    ("cosine_with_restarts", 3, 30, {"num_cycles": 3}),
    ("polynomial", 2, 15, {"lr_end": 1e-4, "power": 2.0}),
    ("polynomial", 0, 10, None),
    ("constant", None, None, None),
    ("constant_with_warmup", 5, None, None),
    ("inverse_sqrt", 4, None, None),
    ("inverse_sqrt", 0, None, {"timescale": 7}),
]


def learning_rates(get, name, warmup, total, extra, steps=40):
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.AdamW([param], lr=1e-3)
    scheduler = get(name, optimizer, num_warmup_steps=warmup, num_training_steps=total,
                    scheduler_specific_kwargs=extra)
    rates = []
    for _ in range(steps):
        rates.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("name, warmup, total, extra", CASES)
def test_scheduler_learning_rates_match_transformers_step_by_step(name, warmup, total, extra):
    ours = learning_rates(get_scheduler, name, warmup, total, extra)
    theirs = learning_rates(transformers.get_scheduler, name, warmup, total, extra)
    assert len(ours) == len(theirs) == 40
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == pytest.approx(b, rel=1e-12, abs=1e-15), f"{name} at step {step}"


def test_named_schedule_functions_match_transformers():
    for ours, theirs, kwargs in (
        (leanformers.get_linear_schedule_with_warmup, transformers.get_linear_schedule_with_warmup,
         dict(num_warmup_steps=2, num_training_steps=9)),
        (leanformers.get_cosine_schedule_with_warmup, transformers.get_cosine_schedule_with_warmup,
         dict(num_warmup_steps=1, num_training_steps=12, num_cycles=0.75)),
        (leanformers.get_constant_schedule_with_warmup, transformers.get_constant_schedule_with_warmup,
         dict(num_warmup_steps=3)),
    ):
        rates = {}
        for get in (ours, theirs):
            optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
            scheduler = get(optimizer, **kwargs)
            rates[get] = []
            for _ in range(15):
                rates[get].append(scheduler.get_last_lr()[0])
                optimizer.step()
                scheduler.step()
        assert len(rates[ours]) == 15
        assert rates[ours] == pytest.approx(rates[theirs], rel=1e-12)


def test_scheduler_state_round_trips_through_a_checkpoint():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    scheduler = get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=10)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    state = pickle.loads(pickle.dumps(scheduler.state_dict()))
    resumed_optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    resumed = get_scheduler("cosine", resumed_optimizer, num_warmup_steps=2, num_training_steps=10)
    resumed.load_state_dict(state)
    assert resumed.get_last_lr() == scheduler.get_last_lr()
    optimizer.step(), scheduler.step(), resumed_optimizer.step(), resumed.step()
    assert resumed.get_last_lr() == scheduler.get_last_lr() != [1e-3]


def test_scheduler_bad_input_is_a_clear_error():
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)
    with pytest.raises(ValueError, match=r"unknown scheduler 'linearr'; known: linear, cosine, cosine_with_restarts, "
                                         r"polynomial, constant, constant_with_warmup, inverse_sqrt"):
        get_scheduler("linearr", optimizer, num_warmup_steps=0, num_training_steps=10)
    with pytest.raises(ValueError, match="linear requires `num_training_steps`"):
        get_scheduler("linear", optimizer, num_warmup_steps=0)
    with pytest.raises(ValueError, match="cosine requires `num_warmup_steps`"):
        get_scheduler("cosine", optimizer, num_training_steps=10)
    with pytest.raises(ValueError, match="num_warmup_steps must be >= 0, got -1"):
        get_scheduler("linear", optimizer, num_warmup_steps=-1, num_training_steps=10)
    with pytest.raises(TypeError, match="the linear scheduler takes no num_cycles"):
        get_scheduler("linear", optimizer, 0, 10, scheduler_specific_kwargs={"num_cycles": 2})
    with pytest.raises(ValueError, match=r"lr_end \(0.01\) must be smaller than initial lr \(0.001\)"):
        get_scheduler("polynomial", optimizer, 0, 10, scheduler_specific_kwargs={"lr_end": 0.01})
    assert optimizer.param_groups[0]["lr"] == 1e-3  # a refused scheduler left the optimizer alone


def test_set_seed_seeds_python_numpy_and_torch():
    set_seed(123)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    transformers.set_seed(123)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def sentence_pairs():
    rng = random.Random(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "fast", "home", "bird", "sang", "today", "slowly"]
    rows = {"sentence1": [], "sentence2": [], "idx": [], "label": []}
    for i in range(20):
        first = " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
        same = i % 2 == 0
        second = first if same else " ".join(rng.choice(words) for _ in range(rng.randint(3, 9)))
        rows["sentence1"].append(first)
        rows["sentence2"].append(second)
        rows["idx"].append(i)
        rows["label"].append(int(same))
    return rows


def run_seed_loop(lib, datasets_lib, folder, torch_loader):
    """The seed's hand-written loop, as written; `lib` is leanformers or transformers."""
    raw_datasets = datasets_lib.DatasetDict({"train": datasets_lib.Dataset.from_dict(sentence_pairs())})
    tokenizer = lib.AutoTokenizer.from_pretrained(folder)

    def tokenize_function(example):
        return tokenizer(example["sentence1"], example["sentence2"], truncation=True)

    tokenized_datasets = raw_datasets.map(tokenize_function, batched=True)
    data_collator = lib.DataCollatorWithPadding(tokenizer=tokenizer)
    tokenized_datasets = tokenized_datasets.remove_columns(["sentence1", "sentence2", "idx"])
    tokenized_datasets = tokenized_datasets.rename_column("label", "labels")
    tokenized_datasets.set_format("torch")
    train_dataloader = torch_loader(tokenized_datasets["train"], shuffle=True, batch_size=8, collate_fn=data_collator,
                                    generator=torch.Generator().manual_seed(0))

    model = lib.AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    adamw = getattr(lib, "AdamW", torch.optim.AdamW)  # transformers v5 has no AdamW of its own: torch's
    optimizer = adamw(model.parameters(), lr=3e-4)
    device = torch.device("cpu")
    model.to(device)
    num_epochs = 3
    num_training_steps = num_epochs * len(train_dataloader)
    lr_scheduler = lib.get_scheduler("linear", optimizer=optimizer, num_warmup_steps=0,
                                     num_training_steps=num_training_steps)
    losses, rates = [], []
    model.train()
    for epoch in range(num_epochs):
        for batch in train_dataloader:
            batch = {k: v.to(device) for k, v in batch.items()}
            outputs = model(**batch)
            loss = outputs.loss
            loss.backward()
            optimizer.step()
            rates.append(lr_scheduler.get_last_lr()[0])
            lr_scheduler.step()
            optimizer.zero_grad()
            losses.append(loss.item())
    return losses, rates, lr_scheduler.get_last_lr()[0]


@pytest.mark.slow
def test_seed_hand_written_loop_runs_with_leanformers_imports_and_matches_transformers(tmp_path):
    """all-MiniLM-L6-v2 under a 2-label head (saved once by transformers, dropout off so both runs are
    deterministic), trained for 3 epochs of 3 batches by the seed's loop in each library."""
    import datasets
    from torch.utils.data import DataLoader

    minilm = bundled_model_path("all-minilm-l6-v2")
    torch.manual_seed(0)
    start = transformers.AutoModelForSequenceClassification.from_pretrained(
        minilm, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    start.save_pretrained(tmp_path)
    transformers.AutoTokenizer.from_pretrained(minilm).save_pretrained(tmp_path)

    ours = run_seed_loop(leanformers, leanformers, tmp_path, DataLoader)
    theirs = run_seed_loop(transformers, datasets, tmp_path, DataLoader)
    losses, rates, final_rate = ours
    assert len(losses) == 9 and final_rate == 0.0  # 3 epochs x ceil(20 / 8) batches, the linear schedule ran out
    assert rates == pytest.approx(theirs[1], rel=1e-12)
    for step, (a, b) in enumerate(zip(losses, theirs[0], strict=True)):
        assert a == pytest.approx(b, abs=1e-4), f"loss at step {step}"
    assert losses[-1] < losses[0]  # it learned
    assert rates[0] == 3e-4


def test_mean_token_loss_weights_by_tokens_and_keeps_the_training_mode(llama_checkpoint):
    from leanformers import LlamaForCausalLM
    from leanformers.training.evaluation import mean_token_loss

    ref, folder = llama_checkpoint("gqa")
    model = LlamaForCausalLM.from_pretrained(folder).train()
    short, long = torch.randint(0, 128, (1, 4)), torch.randint(0, 128, (1, 11))
    with torch.no_grad():  # the oracle: transformers' mean losses, weighted by their 3 and 10 predictions
        expected = (ref(input_ids=short, labels=short).loss * 3 + ref(input_ids=long, labels=long).loss * 10) / 13
    loss, count = mean_token_loss(model, [{"input_ids": short, "labels": short}, {"input_ids": long, "labels": long}])
    assert count == 13 and loss == pytest.approx(expected.item(), abs=1e-5)
    assert model.training
    with pytest.raises(ValueError, match="no token to score"):
        mean_token_loss(model, [{"input_ids": short, "labels": torch.full_like(short, -100)}])
