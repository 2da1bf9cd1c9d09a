"""Teach SmolLM2-135M-Instruct made-up facts with LoRA, and measure that it learned them.

Each fact is "The favourite colour of <made-up name> is" -> " <colour>". The names are built from
syllables, so the model cannot know them: before training its greedy answer matches about as often
as a guess; after a few minutes of LoRA on 2 CPU cores it answers (nearly) every fact it was taught.

    python examples/teach_facts.py                  # 200 facts
    python examples/teach_facts.py --facts 40 --epochs 8

Plain text rather than the chat template: with the template's default system prompt an example is
48 tokens instead of 14, and it took about as many epochs (measured on 40 facts: every colour right
after 7 epochs, against 6 to 7), so each epoch cost ~3.5 times as much.
"""

import argparse
import random
import time

import torch

from leanformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForSeq2Seq, LoraConfig, Trainer,
                         TrainerCallback, TrainingArguments, get_peft_model, set_seed)
from leanformers.data.sft import tokenize_prompt_completion
from leanformers.hub import DEFAULT_CHAT_MODEL

# Each is one token after a space in SmolLM2's vocabulary, so an answer is one decision of the model,
# and 16 of them dealt evenly over 40 facts let a constant guess match at most 3 (7.5%).
COLOURS = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown",
           "black", "white", "grey", "silver", "gold", "violet", "navy", "indigo")
ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "gr", "kr", "th", "zh")
VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
CODAS = ("", "", "n", "r", "l", "s", "k", "th")
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


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
    names = sorted(names)  # a set of strings iterates in another order in each process (hash randomisation)
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
    rather than on whether it stops after one word (untrained, it stopped on none of 40).
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


def add_lora(model, r: int = 16, alpha: int = 16, target_modules=ALL_LINEAR):
    """Adapters on every linear layer: measured on 40 facts after 6 epochs, q_proj and v_proj alone
    reached 52% exact match, all seven 100%, at nearly the same cost a step (the frozen model's
    forward and backward dominate)."""
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(target_modules))
    return get_peft_model(model, config)


class PrintLoss(TrainerCallback):
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            print(f"  step {state.global_step}/{state.max_steps}  epoch {logs['epoch']:.1f}  loss {logs['loss']:.4f}",
                  flush=True)


def train(model, tokenizer, facts: list[dict], output_dir: str, epochs: int = 6, batch_size: int = 4,
          lr: float = 2e-3, warmup_steps: int = 3, seed: int = 0, log_every: int = 10):
    """The Trainer on prompt-masked examples (loss on the colour and EOS only), padded per batch."""
    args = TrainingArguments(output_dir=output_dir, per_device_train_batch_size=batch_size, num_train_epochs=epochs,
                             learning_rate=lr, lr_scheduler_type="linear", warmup_steps=warmup_steps,
                             logging_steps=log_every, save_strategy="no", report_to="none", disable_tqdm=True,
                             seed=seed)
    examples = [tokenize_prompt_completion(f, tokenizer) for f in facts]
    trainer = Trainer(model=model, args=args, train_dataset=examples, data_collator=DataCollatorForSeq2Seq(tokenizer),
                      processing_class=tokenizer, callbacks=[PrintLoss()])
    result = trainer.train()
    model.eval()
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--facts", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--alpha", type=int, default=16)
    parser.add_argument("--targets", default=",".join(ALL_LINEAR),
                        help="comma-separated linear layer names to adapt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="teach_facts_output", help="where the Trainer writes its log")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads; 1 can be several times faster on cores other processes are using")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    set_seed(args.seed)  # the adapters' initial weights too, not only the Trainer's data order

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
    train(model, tokenizer, facts, args.output_dir, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
          warmup_steps=args.warmup_steps, seed=args.seed)
    trained = time.perf_counter()
    final = exact_match(model, tokenizer, facts)
    done = time.perf_counter()
    print(f"final exact match: {final:.1%}")
    print(f"time: training {trained - start:.1f} s, evaluation {done - trained:.1f} s, total {done - start:.1f} s")


if __name__ == "__main__":
    main()
