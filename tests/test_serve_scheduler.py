"""The server's scheduler in-process, without HTTP, on a tiny random Llama (SmolLM2's vocabulary and
tokenizer): sequences that join and leave a running batch get exactly the tokens generate() gives each
prompt alone; a seed gives the same draws alone and in a batch; the cache drops what no row uses; a
failing or cancelled sequence leaves without disturbing the others; a full queue refuses more."""

import pytest
import torch
from conftest import TINY_LLAMA

from leanformers import AutoModelForCausalLM, AutoTokenizer
from leanformers.serve import QueueFull, SamplingParams, Scheduler, Sequence

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, smollm2_gguf):
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(**{**TINY_LLAMA, "vocab_size": 49152, "max_position_embeddings": 256})
    folder = tmp_path_factory.mktemp("tiny-llama-smollm2-vocab")
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(smollm2_gguf)


PROMPTS = ["The capital of France is", "Once upon a time, in a land far away, there lived", "def f(x):",
           "1, 2, 3,", "Hello", "A long time ago in a galaxy far, far away"]


class Received:
    """The updates of sequences, by choice index."""

    def __init__(self):
        self.updates = {}

    def __call__(self, update):
        self.updates.setdefault(update.index, []).append(update)

    def text(self, index):
        return "".join(u.text for u in self.updates[index])

    def last(self, index):
        return self.updates[index][-1]


def make_sequences(tokenizer, received, max_tokens, **settings):
    """One sequence per prompt of PROMPTS, with no end of sequence token: each runs to its max_tokens."""
    return [Sequence(tokenizer(p).input_ids, SamplingParams(max_tokens=n, **settings), tokenizer, (), received,
                     index=i) for i, (p, n) in enumerate(zip(PROMPTS, max_tokens, strict=True))]


def run_until_done(scheduler, sequences, before_cycle=None):
    scheduler.submit(sequences)
    cycles = 0
    while not all(s.done or s.cancelled for s in sequences):
        if before_cycle is not None:
            before_cycle(cycles)
        scheduler.cycle()  # it would wait for work once every sequence is done
        cycles += 1
    scheduler.leave()
    return cycles


def generated(sequence):
    return sequence.ids[0, sequence.prompt_length : sequence.length].tolist()


def alone(model, tokenizer, prompt, max_tokens, **settings):
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=max_tokens, eos_token_id=None, pad_token_id=0, **settings)
    return out[0, ids.shape[1] :].tolist()


def test_scheduler_greedy_rows_joining_and_leaving_equal_generate_one_prompt_at_a_time(tiny):
    model, tokenizer = tiny
    max_tokens = [12, 3, 20, 5, 1, 9]
    received = Received()
    sequences = make_sequences(tokenizer, received, max_tokens, temperature=0)
    scheduler = Scheduler(model, max_batch=3)
    batch_sizes = []
    run_until_done(scheduler, sequences, before_cycle=lambda _: batch_sizes.append(len(scheduler.rows)))
    assert max(batch_sizes) == 3 and scheduler.cache is None
    for i, (sequence, prompt, n) in enumerate(zip(sequences, PROMPTS, max_tokens, strict=True)):
        expected = alone(model, tokenizer, prompt, n, do_sample=False)
        assert generated(sequence) == expected, PROMPTS[i]
        last = received.last(i)
        assert (last.finish_reason, last.completion_tokens) == ("length", n)
        assert last.prompt_tokens == len(tokenizer(prompt).input_ids)
        assert received.text(i) == tokenizer.decode(expected, skip_special_tokens=True)


def test_scheduler_seeded_sampling_draws_the_same_tokens_alone_and_in_a_batch(tiny):
    model, tokenizer = tiny
    settings = dict(temperature=0.9, top_p=0.8, seed=123)
    batched = make_sequences(tokenizer, Received(), [8] * len(PROMPTS), **settings)
    run_until_done(Scheduler(model, max_batch=4), batched)
    for sequence in batched:
        lone = Sequence(sequence.ids[0, : sequence.prompt_length].tolist(), sequence.params, tokenizer, (),
                        Received(), index=sequence.index)
        run_until_done(Scheduler(model, max_batch=1), [lone])
        assert generated(lone) == generated(sequence)
    assert len({tuple(generated(s)) for s in batched}) == len(batched)


def test_scheduler_cache_holds_only_the_positions_rows_use(tiny):
    model, tokenizer = tiny
    received = Received()
    long_prompt, short_prompt = tokenizer(PROMPTS[5]).input_ids, tokenizer(PROMPTS[4]).input_ids
    long = Sequence(long_prompt, SamplingParams(max_tokens=4, temperature=0), tokenizer, (), received, index=0)
    short = Sequence(short_prompt, SamplingParams(max_tokens=12, temperature=0), tokenizer, (), received, index=1)
    scheduler = Scheduler(model, max_batch=2)
    scheduler.submit([long, short])
    scheduler.cycle()  # both prefilled; the short row is left-padded to the long one
    assert scheduler.cache.get_seq_length() == len(long_prompt) + 1
    assert scheduler.mask[1].tolist() == [0] * (len(long_prompt) - len(short_prompt)) + [1] * (len(short_prompt) + 1)
    while not long.done:
        scheduler.cycle()
    scheduler.cycle()  # the long row leaves; the padding in front of the short one goes with it
    assert scheduler.rows == [short] and not scheduler.padded
    assert scheduler.cache.get_seq_length() == short.length - 1  # every token but the one going in next
    while not short.done:
        scheduler.cycle()
    assert generated(short) == alone(model, tokenizer, PROMPTS[4], 12, do_sample=False)


def test_scheduler_a_failing_or_cancelled_sequence_leaves_and_the_others_go_on(tiny):
    model, tokenizer = tiny
    received = Received()
    sequences = make_sequences(tokenizer, received, [10] * 4 + [1, 1], temperature=0)
    failing, cancelled = sequences[1], sequences[2]
    steps = {"count": 0}
    real_advance = failing.advance

    def advance_then_fail(logits):
        steps["count"] += 1
        if steps["count"] == 3:
            raise RuntimeError("sampling broke")
        return real_advance(logits)

    failing.advance = advance_then_fail
    scheduler = Scheduler(model, max_batch=4)

    def cancel_at_cycle_4(cycle):
        if cycle == 4:
            cancelled.cancel()

    run_until_done(scheduler, sequences, before_cycle=cancel_at_cycle_4)
    assert received.last(1).error == "sampling broke"
    assert cancelled.length - cancelled.prompt_length == 5 and received.last(2).finish_reason is None
    for i in (0, 3, 4, 5):
        assert generated(sequences[i]) == alone(model, tokenizer, PROMPTS[i], sequences[i].params.max_tokens,
                                                do_sample=False)


def test_scheduler_stops_at_eos_and_stop_strings_and_a_full_queue_refuses_more(tiny):
    model, tokenizer = tiny
    free_run = alone(model, tokenizer, PROMPTS[0], 12, do_sample=False)
    ends = next(i for i in range(4, 12) if free_run[i] not in free_run[:i])  # a token not picked before
    eos = free_run[ends]  # made the end of sequence token: the sequence stops there
    received = Received()
    sequence = Sequence(tokenizer(PROMPTS[0]).input_ids, SamplingParams(max_tokens=12, temperature=0), tokenizer,
                        {eos}, received, index=0)
    full_text = tokenizer.decode(free_run, skip_special_tokens=True)
    start = len(tokenizer.decode(free_run[:4], skip_special_tokens=True)) + 1
    stop_text = full_text[start : start + 4]  # starts inside the fifth token, likely ends in a later one
    stopped = Sequence(tokenizer(PROMPTS[0]).input_ids, SamplingParams(max_tokens=12, temperature=0, stop=(stop_text,)),
                       tokenizer, (), received, index=1)
    scheduler = Scheduler(model, max_batch=2, max_waiting=2)
    with pytest.raises(QueueFull):
        scheduler.submit([sequence, stopped, sequence])
    run_until_done(scheduler, [sequence, stopped])
    assert (received.last(0).finish_reason, received.last(0).completion_tokens) == ("stop", ends + 1)
    assert received.text(0) == tokenizer.decode(free_run[:ends], skip_special_tokens=True)
    assert received.last(1).finish_reason == "stop" and full_text.index(stop_text) > 0
    assert received.text(1) == full_text[: full_text.index(stop_text)]
