"""Teach SmolLM2-135M-Instruct made-up facts with LoRA, and measure that it learned them.

Each fact is "The favourite colour of <made-up name> is" -> " <colour>". The names are built from
syllables, so the model cannot know them: before training its greedy answer matches about as often
as a guess; after a few minutes of LoRA on 2 CPU cores it answers (nearly) every fact it was taught.

    python examples/teach_facts.py                  # 200 facts
    python examples/teach_facts.py --facts 40 --epochs 8
"""

import argparse
import random
import time

import torch
from torch.utils.data import DataLoader

from leanformers import (AdamW, AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, LoraConfig,
                         get_peft_model, get_scheduler, set_seed)
from leanformers.data.sft import tokenize_prompt_completion
from leanformers.hub import DEFAULT_CHAT_MODEL

# Each is one token after a space in SmolLM2's vocabulary, so an answer is one decision of the model,
# and 16 of them dealt evenly over 40 facts let a constant guess match at most 3 (7.5%).
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown",
           "black", "white", "grey", "silver", "gold", "violet", "navy", "indigo")
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "th", "zh")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
CODAS = ("", "", "n", "r", "l", "s", "k", "th")


def made_up_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables)).capitalize()


def make_facts(n: int, seed: int = 0) -> list[dict]:
    """n facts {"name", "colour", "prompt", "completion"} with distinct names, the same for the same seed.

    Colours are dealt in turn (then shuffled), so every colour is some fact's answer and none is the
    answer of more than ceil(n / len(COLOURS)) facts: the model must learn each name, not the common colour.
    """
    rng = random.Random(seed)
    names = set()
    while len(names) < n:
        names.add(f"{made_up_word(rng, 2)} {made_up_word(rng, 3)}")
    names = sorted(names)
    rng.shuffle(names)
    colours = [COLOURS[i % len(COLOURS)] for i in range(n)]
    rng.shuffle(colours)
    return [{"name": name, "colour": colour, "prompt": f"The favourite colour of {name} is", "completion": f" {colour}"}
            for name, colour in zip(names, colours)]


def first_word(text: str) -> str:
    words = text.split()
    return words[0].strip(".,;:!?\"'").lower() if words else ""


@torch.no_grad()
def exact_match(model, tokenizer, facts: list[dict], batch_size: int = 40, max_new_tokens: int = 3) -> float:
    """The share of facts whose greedy continuation's first word is the colour.

    The first word, not the whole continuation, so the untrained model is scored on what it knows
    rather than on whether it stops after one word (it never does).
    """
    was_training = model.training
    model.eval()
    hits = 0
    for start in range(0, len(facts), batch_size):
        chunk = facts[start:start + batch_size]
        # Left padding puts every prompt's last token at the end, where generation continues.
        batch = tokenizer([f["prompt"] for f in chunk], padding=True, padding_side="left", return_tensors="pt")
        out = model.generate(batch["input_ids"], attention_mask=batch["attention_mask"],
                             max_new_tokens=max_new_tokens, do_sample=False)
        answers = tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        hits += sum(first_word(answer) == fact["colour"] for answer, fact in zip(answers, chunk))
    model.train(was_training)
    return hits / len(facts)


def add_lora(model, r: int = 16, alpha: int = 16, target_modules=("q_proj", "k_proj", "v_proj", "o_proj",
                                                                   "gate_proj", "up_proj", "down_proj")):
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(target_modules)))


def train(model, tokenizer, facts: list[dict], epochs: int = 6, batch_size: int = 4, lr: float = 2e-3,
          warmup_steps: int = 3, seed: int = 0, log_every: int = 10) -> list[float]:
    """A plain loop: prompt-masked examples, padded batches, AdamW on the adapters, linear decay."""
    set_seed(seed)
    examples = [tokenize_prompt_completion(f, tokenizer) for f in facts]
    loader = DataLoader(examples, batch_size=batch_size, shuffle=True, collate_fn=DataCollatorForSeq2Seq(tokenizer),
                        generator=torch.Generator().manual_seed(seed))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = AdamW(params, lr=lr, weight_decay=0.0)
    total = epochs * len(loader)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=warmup_steps, num_training_steps=total)
    model.train()
    losses = []
    for epoch in range(epochs):
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if log_every and len(losses) % log_every == 0:
                print(f"  step {len(losses)}/{total}  epoch {epoch + 1}  loss {sum(losses[-log_every:]) / log_every:.4f}",
                      flush=True)
    model.eval()
    return losses


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                        help="comma-separated linear layer names to adapt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_CHAT_MODEL)
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_CHAT_MODEL)
    facts = make_facts(args.facts, args.seed)
    print(f"{len(facts)} facts, e.g. {facts[0]['prompt']!r} -> {facts[0]['completion']!r}")

    start = time.perf_counter()
    baseline = exact_match(model, tokenizer, facts)
    print(f"baseline exact match: {baseline:.1%}  ({time.perf_counter() - start:.1f} s)")

    model = add_lora(model, args.r, args.alpha, args.targets.split(","))
    model.print_trainable_parameters()
    start = time.perf_counter()
    train(model, tokenizer, facts, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
          warmup_steps=args.warmup_steps, seed=args.seed)
    trained = time.perf_counter()
    final = exact_match(model, tokenizer, facts)
    done = time.perf_counter()
    print(f"final exact match: {final:.1%}")
    print(f"time: training {trained - start:.1f} s, evaluation {done - trained:.1f} s, total {done - start:.1f} s")


if __name__ == "__main__":
    main()
