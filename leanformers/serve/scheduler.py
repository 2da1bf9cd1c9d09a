"""The scheduler: one thread owns the model and steps every running sequence as one batch.

Requests put their sequences in a waiting queue. Before each decode step the scheduler admits as many as
fit in `max_batch` rows: their prompts go through the model together, left-padded, with a fresh KVCache
(a prompt alone is exactly what generate() computes for it), which also picks each one's first token; a
sequence that wants its prompt's log-probabilities is prefilled alone, as it keeps the logits of every
position. The new cache rows are stacked into the running batch's, aligned at the last position. So rows
are left-padded: each row has its own positions, and an attention mask hides its padding. One decode step
then runs every row, and each sequence picks its next token from its own row of logits. A sequence that is done, or whose client has
gone, leaves the batch before the next step without disturbing the others, and the positions no row uses
any more are dropped from the front, so the cache holds only the tokens in use.

A failure in one sequence (its sampling, its text, its receiver) ends that sequence with an error; a
failed forward ends the sequences it was running; the thread itself keeps serving.
"""

import threading
from collections import deque

import torch
import torch.nn.functional as F

from ..generation import KVCache
from .sequence import Sequence, Update


class QueueFull(Exception):
    """The waiting queue has no room for a request's sequences: try again later."""


def end_with_error(sequence: Sequence, error: Exception | str):
    sequence.done = True
    try:
        sequence.deliver(Update(sequence.index, error=str(error) or type(error).__name__))
    except Exception:  # the receiver is what failed (its event loop closed): nobody is left to tell
        pass


def select_rows(cache: KVCache, mask, rows: list[int]):
    """Keep `rows` of a cache and of its mask (rows, positions), drop the leading positions none of them
    uses; returns the mask."""
    if len(rows) < mask.shape[0]:
        index = torch.tensor(rows)
        cache.reorder(index)
        mask = mask[index]
    unused = int(mask.any(0).long().argmax())  # the first position some row uses
    if unused:
        cache.drop_front(unused)
        mask = mask[:, unused:]
    return mask


class Scheduler:
    def __init__(self, model, max_batch: int = 8, max_waiting: int = 256):
        self.model = model
        self.max_batch, self.max_waiting = max_batch, max_waiting
        self.waiting: deque[Sequence] = deque()
        self.condition = threading.Condition()
        self.rows: list[Sequence] = []  # the running batch, in cache row order
        self.cache: KVCache | None = None
        self.mask: torch.Tensor | None = None  # (rows, cached positions) long: 1 where a row holds a token
        self.padded = False  # whether the mask hides anything (without padding the model needs no mask)
        self.stopping = False
        self.thread: threading.Thread | None = None

    # -- the requests' side (any thread) ------------------------------------------------------------
    def submit(self, sequences: list[Sequence]):
        """Queue sequences to run; QueueFull when the waiting queue cannot take them all."""
        with self.condition:
            if self.stopping:
                raise QueueFull("the server is shutting down")
            if len(self.waiting) + len(sequences) > self.max_waiting:
                raise QueueFull(f"{len(self.waiting)} sequences are waiting already (at most {self.max_waiting})")
            self.waiting.extend(sequences)
            self.condition.notify()

    def counts(self) -> dict:
        return {"running": len(self.rows), "waiting": len(self.waiting)}

    def start(self):
        self.thread = threading.Thread(target=self.run, name="leanformers-scheduler", daemon=True)
        self.thread.start()

    def stop(self, timeout: float = 5.0):
        """Stop after the current step; sequences still waiting or running end with an error."""
        with self.condition:
            self.stopping = True
            self.condition.notify()
        if self.thread is not None:
            self.thread.join(timeout)
        for sequence in [*self.waiting, *self.rows]:
            if not sequence.done:
                end_with_error(sequence, "the server is shutting down")
        self.waiting.clear()

    # -- the scheduler's thread ---------------------------------------------------------------------
    def run(self):
        while self.cycle():
            pass

    @torch.no_grad()
    def cycle(self) -> bool:
        """One round: drop the rows that are done, admit waiting sequences, run one decode step. Waits while
        there is nothing to do; returns False once the scheduler is stopping."""
        self.leave()
        joining = self.next_waiting()
        if joining is None:
            return False
        self.admit(joining)
        if self.rows:
            self.step()
        return True

    def next_waiting(self) -> list[Sequence] | None:
        """The waiting sequences that fit in the batch (waits while there is nothing to do); None to stop."""
        with self.condition:
            while not (self.stopping or self.waiting or self.rows):
                self.condition.wait()
            if self.stopping:
                return None
            joining = []
            while self.waiting and len(self.rows) + len(joining) < self.max_batch:
                sequence = self.waiting.popleft()
                if not sequence.cancelled:
                    joining.append(sequence)
            return joining

    def prefill(self, sequences: list[Sequence]):
        """Run the prompts as one left-padded batch and pick each one's first token. Returns the sequences
        that go on, with their rows of the new cache and their mask; None when none goes on."""
        width = max(sequence.length for sequence in sequences)
        ids = torch.zeros(len(sequences), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, sequence in enumerate(sequences):
            ids[row, width - sequence.length :] = sequence.ids[0, : sequence.length]
            mask[row, width - sequence.length :] = 1
        echo = any(sequence.params.prompt_logprobs for sequence in sequences)
        try:
            out = self.model(input_ids=ids, attention_mask=None if bool(mask.all()) else mask,
                             past_key_values=KVCache(), use_cache=True, logits_to_keep=0 if echo else 1)
        except Exception as err:
            for sequence in sequences:
                end_with_error(sequence, err)
            return None
        going_on = []
        for row, sequence in enumerate(sequences):
            try:
                if sequence.params.prompt_logprobs:
                    sequence.record_prompt_logprobs(out.logits[row : row + 1, width - sequence.length :])
                if not sequence.advance(out.logits[row : row + 1, -1].float()):
                    going_on.append(row)
            except Exception as err:
                end_with_error(sequence, err)
        if not going_on:
            return None
        cache = out.past_key_values
        return [sequences[row] for row in going_on], cache, select_rows(cache, mask, going_on)

    def admit(self, sequences: list[Sequence]):
        """Prefill the sequences and add the ones that go on to the running batch."""
        echoing = [sequence for sequence in sequences if sequence.params.prompt_logprobs]
        others = [sequence for sequence in sequences if not sequence.params.prompt_logprobs]
        groups = [[sequence] for sequence in echoing] + ([others] if others else [])
        parts = [part for group in groups if (part := self.prefill(group)) is not None]
        if not parts:
            return
        if self.rows:
            parts.insert(0, (self.rows, self.cache, self.mask))
        self.cache = KVCache.stack_rows([cache for _, cache, _ in parts])
        length = self.cache.get_seq_length()
        self.mask = torch.cat([F.pad(mask, (length - mask.shape[1], 0)) for _, _, mask in parts])
        self.rows = [sequence for rows, _, _ in parts for sequence in rows]
        self.padded = not bool(self.mask.all())

    def step(self):
        """One decode step for every row: each row's last token in, each sequence's next token out."""
        batch = len(self.rows)
        tokens = torch.tensor([[sequence.last_token] for sequence in self.rows])  # (B, 1)
        positions = torch.tensor([[sequence.length - 1] for sequence in self.rows])  # (B, 1): padding not counted
        mask = torch.cat([self.mask, self.mask.new_ones(batch, 1)], dim=1)
        try:
            out = self.model(input_ids=tokens, attention_mask=mask if self.padded else None, position_ids=positions,
                             past_key_values=self.cache, use_cache=True, logits_to_keep=1)
        except Exception as err:
            for sequence in self.rows:
                end_with_error(sequence, err)
            return
        self.mask = mask
        logits = out.logits[:, -1].float()  # (B, V)
        for row, sequence in enumerate(self.rows):
            try:
                sequence.advance(logits[row : row + 1])
            except Exception as err:
                end_with_error(sequence, err)

    def leave(self):
        """Drop the rows that are done or cancelled, and the leading positions no remaining row uses."""
        keep = [row for row, sequence in enumerate(self.rows) if not (sequence.done or sequence.cancelled)]
        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self.cache, self.mask, self.padded = [], None, None, False
            return
        self.rows = [self.rows[row] for row in keep]
        self.mask = select_rows(self.cache, self.mask, keep)
        self.padded = not bool(self.mask.all())
