"""Key/value cache for attention.

Attention sees a cache only through `update(layer_idx, k, v) -> (k, v)`, so
caches are swappable. KVCache keeps one buffer per layer, allocated on the
first update from the shapes it is given; `capacity` preallocates the exact
length a generate() call needs, and without it the buffer grows in chunks.
The server's scheduler also stacks the caches of separately prefilled rows
into one batch (`stack_rows`) and drops the leading positions no row uses
any more (`drop_front`), so a batch whose rows come and go holds only the
tokens in use.
"""

import torch

GROWTH_CHUNK = 256


def chunked(length: int) -> int:
    """`length` rounded up to whole growth chunks."""
    return -(-length // GROWTH_CHUNK) * GROWTH_CHUNK


class KVCache:
    def __init__(self, capacity: int | None = None):
        self.capacity = capacity
        self.keys: list[torch.Tensor] = []  # per layer (B, H, capacity, D)
        self.values: list[torch.Tensor] = []
        self.lengths: list[int] = []
        # The tokens the cache holds keys and values for, (B, length), recorded by generate() so that a later
        # call whose prompt starts with them prefills only the rest. None when unknown.
        self.token_ids: torch.Tensor | None = None

    def __len__(self):
        return len(self.keys)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens stored for a layer (before the current forward pass touches it)."""
        return self.lengths[layer_idx] if layer_idx < len(self.lengths) else 0

    def update(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor):
        """Append k, v (B, H, T, D) for a layer; return all keys and values so far as views."""
        if layer_idx == len(self.keys):
            size = max(self.capacity or 0, k.shape[2])
            if self.capacity is None:
                size = chunked(size)
            self.keys.append(k.new_empty(k.shape[0], k.shape[1], size, k.shape[3]))
            self.values.append(v.new_empty(v.shape[0], v.shape[1], size, v.shape[3]))
            self.lengths.append(0)
        start = self.lengths[layer_idx]
        end = start + k.shape[2]
        if end > self.keys[layer_idx].shape[2]:
            self.grow(layer_idx, end)
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys.narrow(2, start, end - start).copy_(k)
        values.narrow(2, start, end - start).copy_(v)
        self.lengths[layer_idx] = end
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    def grow(self, layer_idx: int, needed: int):
        size = chunked(needed)
        for buffers in (self.keys, self.values):
            old = buffers[layer_idx]
            new = old.new_empty(old.shape[0], old.shape[1], size, old.shape[3])
            new[:, :, : self.lengths[layer_idx]] = old[:, :, : self.lengths[layer_idx]]
            buffers[layer_idx] = new

    def crop(self, length: int):
        """Forget everything after the first `length` tokens (reuse a shared prompt prefix)."""
        self.lengths = [min(n, length) for n in self.lengths]
        if self.token_ids is not None:
            self.token_ids = self.token_ids[:, :length]

    def reset(self):
        """Forget everything, buffers included (the next update may bring another batch size or dtype)."""
        self.keys, self.values, self.lengths = [], [], []
        self.token_ids = None

    def reorder(self, index: torch.Tensor):
        """Select batch rows (beam search): row i becomes old row index[i]."""
        self.keys = [k.index_select(0, index) for k in self.keys]
        self.values = [v.index_select(0, index) for v in self.values]
        if self.token_ids is not None:
            self.token_ids = self.token_ids.index_select(0, index)

    def drop_front(self, count: int):
        """Forget the first `count` positions of every row: columns that no row attends to any more."""
        self.keys = [k[:, :, count:] for k in self.keys]
        self.values = [v[:, :, count:] for v in self.values]
        self.lengths = [n - count for n in self.lengths]
        if self.token_ids is not None:
            self.token_ids = self.token_ids[:, count:]

    @classmethod
    def stack_rows(cls, caches: list["KVCache"]) -> "KVCache":
        """One cache holding the rows of `caches` (in order), aligned at their last position: a cache that
        holds fewer positions than the longest is padded on the left with zeros, which the attention mask
        must hide (zeros, not empty memory: a masked NaN would still spread through the weighted sum)."""
        caches = [cache for cache in caches if len(cache)]
        length = max(cache.get_seq_length() for cache in caches)
        stacked = cls()
        for layer in range(len(caches[0])):
            for name in ("keys", "values"):
                parts = [getattr(cache, name)[layer] for cache in caches]
                first = parts[0]
                out = first.new_zeros(sum(p.shape[0] for p in parts), first.shape[1], chunked(length), first.shape[3])
                row = 0
                for cache, part in zip(caches, parts, strict=True):
                    held = cache.lengths[layer]
                    out[row : row + part.shape[0], :, length - held : length] = part[:, :, :held]
                    row += part.shape[0]
                getattr(stacked, name).append(out)
            stacked.lengths.append(length)
        return stacked
