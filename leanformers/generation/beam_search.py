"""Beam search bookkeeping, one step at a time, for the decode loop.

The decode loop runs the model on the B * num_beams running beams and hands each step's processed log
probabilities to `BeamSearch.step`, which picks the next running beams (the loop then reorders its KV cache
and sequence buffer by the returned row index) and keeps the best finished hypotheses. The algorithm is
transformers' vectorised one (top-K candidates, K = max(2, 1 + number of EOS ids) * num_beams, finished
beams scored with the length penalty, the same early-stopping heuristic), so the same beams win.
"""

import torch

NEG = -1.0e9


class BeamSearch:
    def __init__(self, batch, num_beams, prompt_len, max_length, *, num_eos, length_penalty, early_stopping,
                 do_sample, generator, stopping_criteria, fill_value, device):  # fmt: skip
        self.batch, self.num_beams = batch, num_beams
        self.prompt_len, self.max_length = prompt_len, max_length
        self.length_penalty, self.early_stopping = length_penalty, early_stopping
        self.do_sample, self.generator = do_sample, generator
        self.criteria = stopping_criteria
        self.fill_value = fill_value
        self.k = max(2, 1 + num_eos) * num_beams
        self.top_mask = torch.arange(self.k, device=device) < num_beams  # (K,) candidates that may finish
        max_new = max_length - prompt_len
        self.running_scores = torch.zeros(batch, num_beams, device=device)
        self.running_scores[:, 1:] = NEG  # only the first beam's continuations count at the first step
        self.running_beam_indices = torch.full((batch, num_beams, max_new), -1, dtype=torch.int32, device=device)
        self.finished = torch.full((batch, num_beams, max_length), fill_value, dtype=torch.long, device=device)
        self.finished_scores = torch.full((batch, num_beams), NEG, device=device)
        self.finished_beam_indices = self.running_beam_indices.clone()
        self.is_finished = torch.zeros(batch, num_beams, dtype=torch.bool, device=device)
        self.improvable = torch.ones(batch, 1, dtype=torch.bool, device=device)
        self.row_offset = torch.arange(batch, device=device)[:, None] * num_beams  # (B, 1)

    def step(self, log_probs, sequences, cur_len, scores_so_far=None):
        """log_probs (B*N, V) processed; sequences (B*N, max_length) running beams, valid up to cur_len.

        Returns (next running sequences (B*N, max_length), source row of each (B*N,), keep going: bool tensor).
        """
        B, N, V = self.batch, self.num_beams, log_probs.shape[-1]
        accumulated = (log_probs.view(B, N, V) + self.running_scores[:, :, None]).view(B, N * V)
        if self.do_sample:
            picked = torch.multinomial(accumulated.softmax(-1), self.k, generator=self.generator)
            values = accumulated.gather(1, picked)
            values, order = values.sort(dim=-1, descending=True)
            picked = picked.gather(1, order)
        else:
            values, picked = torch.topk(accumulated, self.k)  # (B, K)
        source_beam = picked // V
        tokens = picked % V
        candidates = gather_beams(sequences.view(B, N, -1), source_beam)  # (B, K, max_length)
        candidates[:, :, cur_len] = tokens
        beam_indices = gather_beams(self.running_beam_indices, source_beam)
        beam_indices[:, :, cur_len - self.prompt_len] = (source_beam + self.row_offset).to(beam_indices.dtype)
        hits = self.criteria(candidates.flatten(0, 1)[:, : cur_len + 1], scores_so_far).view(B, self.k)

        # the best N candidates that did not just finish keep running
        running_values = values + hits.to(torch.float32) * NEG
        best = torch.topk(running_values, N)[1]
        next_sequences = gather_beams(candidates, best)
        self.running_scores = gather_beams(running_values, best)
        self.running_beam_indices = gather_beams(beam_indices, best)
        source_rows = (gather_beams(source_beam, best) + self.row_offset).flatten()

        self.update_finished(candidates, values, beam_indices, hits, cur_len)
        cur_len += 1
        self.update_improvable(cur_len)
        keep_going = (
            self.improvable.any()
            & ~(self.is_finished.all() & (self.early_stopping is True))
            & ~hits.all()
        )
        return next_sequences.flatten(0, 1), source_rows, keep_going

    def update_finished(self, candidates, values, beam_indices, hits, cur_len):
        """Merge the top-N candidates that just finished into the finished hypotheses, keeping the best N."""
        just_finished = hits & self.top_mask[None, :]
        scores = values / ((cur_len + 1 - self.prompt_len) ** self.length_penalty)
        batch_full = self.is_finished.all(-1, keepdim=True) & (self.early_stopping is True)
        scores = scores + batch_full.to(torch.float32) * NEG
        scores = scores + (~self.improvable).to(torch.float32) * NEG
        scores = scores + (~just_finished) * NEG
        merged_scores = torch.cat((self.finished_scores, scores), dim=1)
        best = torch.topk(merged_scores, self.num_beams)[1]
        self.finished = gather_beams(torch.cat((self.finished, candidates), dim=1), best)
        self.finished_scores = gather_beams(merged_scores, best)
        self.finished_beam_indices = gather_beams(torch.cat((self.finished_beam_indices, beam_indices), dim=1), best)
        self.is_finished = gather_beams(torch.cat((self.is_finished, just_finished), dim=1), best)

    def update_improvable(self, cur_len):
        """Can a running beam still beat the worst finished one? (transformers' heuristic, per early_stopping)"""
        if self.early_stopping == "never" and self.length_penalty > 0.0:
            best_length = self.max_length - self.prompt_len
        else:
            best_length = cur_len - self.prompt_len
        best_running = self.running_scores[:, :1] / (best_length**self.length_penalty)
        worst_finished = torch.where(self.is_finished, self.finished_scores.min(dim=1, keepdim=True)[0], NEG)
        self.improvable = self.improvable & (best_running > worst_finished).any(-1, keepdim=True)

    def result(self, num_return_sequences):
        """(sequences (B*R, prompt + longest), sequence scores (B*R,), beam indices (B*R, longest)), best first."""
        sequences = self.finished[:, :num_return_sequences].flatten(0, 1)
        scores = self.finished_scores[:, :num_return_sequences].flatten()
        beam_indices = self.finished_beam_indices[:, :num_return_sequences].flatten(0, 1)
        longest = int((beam_indices >= 0).sum(dim=1).max())
        return sequences[:, : self.prompt_len + longest], scores, beam_indices[:, :longest]


def gather_beams(tensor, index):
    """tensor (B, N, ...) -> (B, K, ...) taking beam index[b, k] of row b."""
    while index.dim() < tensor.dim():
        index = index.unsqueeze(-1)
    return torch.take_along_dim(tensor, index, dim=1)
