"""Sampling: the warpers (filters of the next-token scores that only sampling applies) and the draw.

As in logits_process.py, each rule is a small pure function on scores (B, V) float that reproduces
transformers' warper value for value (same sort, same cumsum, same comparisons), with transformers' class
of the same name a few lines over it. A filtered token gets `filter_value` (-inf by default).
"""

import torch

from .logits_process import NEG_INF, LogitsProcessor


# -- the rules --------------------------------------------------------------------------------------
def apply_temperature(logits, temperature: float):
    return logits / temperature


def below_kth_best(logits, k: int):
    """(B, V) bool: the scores below each row's k-th best (ties with it are not below, as in transformers)."""
    kth = torch.topk(logits, min(k, logits.shape[-1]))[0][..., -1:]
    return logits < kth


def apply_top_k(logits, top_k: int, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Keep the tokens scoring at least the k-th best score (ties with it are kept too, as in transformers)."""
    return logits.masked_fill(below_kth_best(logits, max(top_k, min_tokens_to_keep)), filter_value)


def top_p_drop(sorted_logits, top_p: float, min_tokens_to_keep: int):
    """(B, N) bool over scores sorted ascending: the low tail holding at most 1 - top_p of the mass (a prefix)."""
    drop = sorted_logits.softmax(dim=-1).cumsum(dim=-1) <= (1 - top_p)
    drop[..., -min_tokens_to_keep:] = False
    return drop


def cut_splits_ties(sorted_logits, drop) -> bool:
    """Whether in some row the last dropped score equals the first kept one (`drop` is a prefix of the row)."""
    cut = drop.sum(-1, keepdim=True)
    last_dropped = sorted_logits.gather(1, (cut - 1).clamp(min=0))
    first_kept = sorted_logits.gather(1, cut.clamp(max=sorted_logits.shape[-1] - 1))
    return bool(((cut > 0) & (cut < sorted_logits.shape[-1]) & (last_dropped == first_kept)).any())


def apply_top_p(logits, top_p: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Nucleus filtering: keep the most likely tokens whose probabilities sum to at least top_p (at least one)."""
    order = None
    candidates = int((logits > NEG_INF).sum(-1).max())
    if filter_value == NEG_INF and candidates < logits.shape[-1]:
        # After top-k only a few tokens are finite: order those rather than the whole vocabulary. The -inf
        # rest has probability 0, would sort first and add nothing to the sums (and stays -inf either way).
        values, indices = logits.topk(candidates, dim=-1)
        order, drop = indices.flip(-1), top_p_drop(values.flip(-1), top_p, min_tokens_to_keep)
        # Equal scores may stand in another order than torch.sort's. That changes which tokens are kept only
        # where equal scores straddle the cut: then the row is sorted whole, as transformers does.
        if cut_splits_ties(values.flip(-1), drop):
            order = None
    if order is None:
        sorted_logits, order = torch.sort(logits, descending=False)
        drop = top_p_drop(sorted_logits, top_p, min_tokens_to_keep)
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, order, ~drop)
    return logits.masked_fill(~keep, filter_value)


def apply_min_p(logits, min_p: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Keep tokens whose probability is at least min_p times the best token's."""
    probs = torch.softmax(logits, dim=-1)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)
    best = torch.topk(probs, min(min_tokens_to_keep, probs.shape[-1]), dim=-1).indices
    drop.scatter_(-1, best, False)
    return logits.masked_fill(drop, filter_value)


def apply_typical_p(logits, mass: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Locally typical sampling: keep the tokens whose surprisal is closest to the entropy, up to `mass`."""
    log_probs = torch.log_softmax(logits, dim=-1)
    entropy = -(log_probs * log_probs.exp()).nansum(-1, keepdim=True)
    distance = (-log_probs - entropy).abs()
    sorted_distance, sorted_indices = torch.sort(distance, descending=False)
    cumulative = logits.gather(-1, sorted_indices).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=1).clamp(max=sorted_distance.shape[-1] - 1)
    drop_sorted = sorted_distance > sorted_distance.gather(1, last[:, None])
    drop_sorted[..., :min_tokens_to_keep] = False
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, sorted_indices, ~drop_sorted)
    return logits.masked_fill(~keep, filter_value)


def apply_epsilon_cutoff(logits, epsilon: float, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Epsilon sampling: drop the tokens with probability below `epsilon`, keeping the best min_tokens_to_keep."""
    drop = (logits.softmax(dim=-1) < epsilon) & below_kth_best(logits, min_tokens_to_keep)
    return logits.masked_fill(drop, filter_value)


def apply_eta_cutoff(logits, epsilon, min_tokens_to_keep: int = 1, filter_value: float = NEG_INF):
    """Eta sampling: drop the tokens with probability below min(epsilon, sqrt(epsilon) * exp(-entropy)).

    `epsilon` a float or a 0-d tensor; the cutoff is computed in float32 from it, as transformers does.
    """
    epsilon = torch.as_tensor(epsilon, device=logits.device)
    entropy = torch.distributions.Categorical(logits=logits).entropy()  # (B,)
    eta = torch.minimum(epsilon, epsilon.sqrt() * torch.exp(-entropy))[..., None]
    drop = (logits.softmax(dim=-1) < eta) & below_kth_best(logits, min_tokens_to_keep)
    return logits.masked_fill(drop, filter_value)


def apply_top_h(logits, top_h: float, filter_value: float = NEG_INF, top_n: int = 100):
    """Top-H: among the `top_n` best tokens, keep the most likely ones while their share of the entropy,
    sum(-p log p) with p renormalized over the top_n, stays within top_h times its total (at least one)."""
    top_logits, top_indices = torch.topk(logits, min(top_n, logits.shape[-1]), dim=-1)
    dist = torch.distributions.Categorical(logits=top_logits)
    cumulative = torch.cumsum(-dist.probs * torch.log(dist.probs), dim=-1)
    keep_top = cumulative <= (dist.entropy() * top_h)[:, None]
    keep_top[:, 0] = True
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, top_indices, keep_top)
    return logits.masked_fill(~keep, filter_value)


# -- transformers' classes ----------------------------------------------------------------------------
def checked_min_tokens_to_keep(value, strictly: bool = False) -> int:
    if not isinstance(value, int) or value < 1:
        kind = "a strictly positive" if strictly else "a positive"
        raise ValueError(f"`min_tokens_to_keep` has to be {kind} integer, but is {value}")
    return value


def checked_cutoff(epsilon, name: str) -> float:
    epsilon = float(epsilon)
    if epsilon <= 0 or epsilon >= 1:
        raise ValueError(f"`{name}` has to be a float > 0 and < 1, but is {epsilon}")
    return epsilon


class TemperatureLogitsWarper(LogitsProcessor):
    """Divide the scores by `temperature` (a float > 0): below 1 sharper, above 1 flatter."""

    def __init__(self, temperature: float):
        if not isinstance(temperature, float) or not temperature > 0:
            message = (f"`temperature` (={temperature}) has to be a strictly positive float, otherwise your next "
                       "token scores will be invalid.")  # fmt: skip
            if isinstance(temperature, float) and temperature == 0.0:
                message += " If you're looking for greedy decoding strategies, set `do_sample=False`."
            raise ValueError(message)
        self.temperature = temperature

    def __call__(self, input_ids, scores):
        return apply_temperature(scores, self.temperature)


class TopKLogitsWarper(LogitsProcessor):
    """Keep the `top_k` best tokens (at least `min_tokens_to_keep`, and every token tied with the k-th)."""

    def __init__(self, top_k: int, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        if not isinstance(top_k, int) or top_k <= 0:
            raise ValueError(f"`top_k` has to be a strictly positive integer, but is {top_k}")
        self.top_k = max(top_k, min_tokens_to_keep)
        self.filter_value = filter_value
        self.min_tokens_to_keep = min_tokens_to_keep

    def __call__(self, input_ids, scores):
        return apply_top_k(scores, self.top_k, filter_value=self.filter_value)


class TopPLogitsWarper(LogitsProcessor):
    """Keep the fewest best tokens whose probabilities sum to at least `top_p` (in [0, 1])."""

    def __init__(self, top_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        top_p = float(top_p)
        if top_p < 0 or top_p > 1.0:
            raise ValueError(f"`top_p` has to be a float > 0 and < 1, but is {top_p}")
        self.top_p = top_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = checked_min_tokens_to_keep(min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        return apply_top_p(scores, self.top_p, self.min_tokens_to_keep, self.filter_value)


class MinPLogitsWarper(LogitsProcessor):
    """Keep the tokens at least `min_p` (in [0, 1]) times as likely as the best one."""

    def __init__(self, min_p: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        if not 0 <= min_p <= 1.0:
            raise ValueError(f"`min_p` has to be a float in the [0, 1] interval, but is {min_p}")
        self.min_p = min_p
        self.filter_value = filter_value
        self.min_tokens_to_keep = checked_min_tokens_to_keep(min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        return apply_min_p(scores, self.min_p, self.min_tokens_to_keep, self.filter_value)


class TypicalLogitsWarper(LogitsProcessor):
    """Locally typical sampling with probability `mass` (strictly between 0 and 1)."""

    def __init__(self, mass: float = 0.9, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        mass = float(mass)
        if not 0 < mass < 1:
            raise ValueError(f"`typical_p` has to be a float > 0 and < 1, but is {mass}")
        self.filter_value = filter_value
        self.mass = mass
        self.min_tokens_to_keep = checked_min_tokens_to_keep(min_tokens_to_keep)

    def __call__(self, input_ids, scores):
        return apply_typical_p(scores, self.mass, self.min_tokens_to_keep, self.filter_value)


class EpsilonLogitsWarper(LogitsProcessor):
    """Drop the tokens less likely than `epsilon` (strictly between 0 and 1)."""

    def __init__(self, epsilon: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1):
        self.epsilon = checked_cutoff(epsilon, "epsilon_cutoff")
        self.filter_value = filter_value
        self.min_tokens_to_keep = checked_min_tokens_to_keep(int(min_tokens_to_keep), strictly=True)

    def __call__(self, input_ids, scores):
        return apply_epsilon_cutoff(scores, self.epsilon, self.min_tokens_to_keep, self.filter_value)


class EtaLogitsWarper(LogitsProcessor):
    """Drop the tokens less likely than min(epsilon, sqrt(epsilon) * exp(-entropy)), epsilon in (0, 1)."""

    def __init__(self, epsilon: float, filter_value: float = NEG_INF, min_tokens_to_keep: int = 1, device="cpu"):
        self.epsilon = torch.tensor(checked_cutoff(epsilon, "eta_cutoff"), device=device)
        self.filter_value = filter_value
        self.min_tokens_to_keep = checked_min_tokens_to_keep(int(min_tokens_to_keep), strictly=True)

    def __call__(self, input_ids, scores):
        return apply_eta_cutoff(scores, self.epsilon, self.min_tokens_to_keep, self.filter_value)


class TopHLogitsWarper(LogitsProcessor):
    """Top-H sampling with entropy share `top_h` in (0, 1] over the 100 best tokens."""

    def __init__(self, top_h: float, filter_value: float = NEG_INF):
        if not 0 < top_h <= 1:
            raise ValueError("`top_h` must be in the range (0, 1].")
        self.top_n = 100  # transformers' cap on the tokens considered
        self.top_h = top_h
        self.filter_value = filter_value

    def __call__(self, input_ids, scores):
        return apply_top_h(scores, self.top_h, self.filter_value, self.top_n)


# -- the draw -----------------------------------------------------------------------------------------
def sample_next_token(scores, generator=None):
    """Draw one token per row from softmax(scores), like transformers' torch.multinomial call. (B, V) -> (B,)"""
    probs = torch.softmax(scores, dim=-1)
    if probs.device.type != "cpu":
        return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
    return multinomial_draw(probs, generator)


def multinomial_draw(probs, generator=None):
    """torch.multinomial(probs, 1)[:, 0] on CPU: the same token from the same random numbers, ~3x faster.

    torch draws one sample as argmax(probs / q), q ~ Exp(1), where each q is -log1p(-u) of a float64
    uniform u, computed in one serial loop (7.5 ms per step for 8 rows of a 49k vocabulary here). The
    same uniforms, in the same order, come from uniform_ on a float64 tensor; the logarithm is then
    vectorised. (B, V) -> (B,)
    """
    if not bool((probs.sum(-1) > 0).all()):  # what torch.multinomial refuses: a nan, an inf, no mass
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    uniform = torch.empty(probs.shape, dtype=torch.float64).uniform_(generator=generator)
    exponential = torch.log1p(uniform.neg_()).neg_().to(probs.dtype)
    return torch.div(probs, exponential).argmax(-1)
