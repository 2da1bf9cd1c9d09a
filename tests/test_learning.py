"""LoRA fine-tuning teaches SmolLM2-135M-Instruct facts it cannot know (examples/teach_facts.py): greedy
exact match on 40 made-up facts goes from about chance to >= 90% within the issue's six minutes."""

import importlib.util
import time
from collections import Counter
from pathlib import Path

import pytest

from leanformers import AutoModelForCausalLM, AutoTokenizer, set_seed
from leanformers.hub import DEFAULT_CHAT_MODEL

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "teach_facts.py"


def load_example():
    spec = importlib.util.spec_from_file_location("teach_facts", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


teach_facts = load_example()


def test_make_facts_is_deterministic_with_distinct_names_and_evenly_dealt_colours():
    facts = teach_facts.make_facts(40, seed=3)
    assert facts == teach_facts.make_facts(40, seed=3)
    assert facts != teach_facts.make_facts(40, seed=4)
    assert len({f["name"] for f in facts}) == 40
    counts = Counter(f["colour"] for f in facts)
    assert set(counts) == set(teach_facts.COLOURS)  # 40 facts > 16 colours: each is someone's answer
    assert max(counts.values()) == 3  # so answering one colour always scores at most 3 / 40
    assert all(f["prompt"] == f"The favourite colour of {f['name']} is" and f["completion"] == f" {f['colour']}"
               for f in facts)


def test_first_word_ignores_punctuation_case_and_what_follows():
    assert teach_facts.first_word(" Teal.\nThe favourite") == "teal"
    assert teach_facts.first_word(" a light blue") == "a"
    assert teach_facts.first_word("   ") == ""


@pytest.mark.slow
def test_lora_teaches_40_made_up_facts_in_under_six_minutes(tmp_path, one_thread):
    # Over 60 s: 80 LoRA steps on a 135M model, the fewest that reached 100% on every seed tried (6 epochs
    # left one seed at 75%). Measured 117 s and 184 s on a 2-core machine with a load of 5 and of 9.
    start = time.perf_counter()
    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(DEFAULT_CHAT_MODEL)
    model = AutoModelForCausalLM.from_pretrained(DEFAULT_CHAT_MODEL)
    for colour in teach_facts.COLOURS:  # one token each, so an answer is one greedy decision
        assert len(tokenizer(" " + colour, add_special_tokens=False)["input_ids"]) == 1, colour
    facts = teach_facts.make_facts(40, seed=0)

    baseline = teach_facts.exact_match(model, tokenizer, facts)
    model = teach_facts.add_lora(model)
    result = teach_facts.train(model, tokenizer, facts, str(tmp_path), epochs=8, seed=0)
    final = teach_facts.exact_match(model, tokenizer, facts)
    elapsed = time.perf_counter() - start

    assert result.global_step == 80
    assert baseline <= 0.10, f"the untrained model already knows {baseline:.0%} of the made-up facts"
    assert final >= 0.90, f"after LoRA training: {final:.0%} exact match (baseline {baseline:.0%})"
    assert elapsed < 360, f"took {elapsed:.0f} s"
