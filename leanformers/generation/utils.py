"""The decode loop (a Python generator, one step per new token) and generate() on top of it.

`decode_steps` runs a model through its forward(): the prompt once (prefill,
logits for the last position only), then one token per step through a
preallocated KVCache. It yields a DecodeStep per new token, so generate(),
streaming and the CLI all share one loop. `GenerationMixin.generate` merges
the generation settings (the user's, then the model's generation config,
then transformers' global defaults), checks the lengths against the model's
context, runs the loop and assembles transformers' outputs.
"""

import copy
import time
import warnings
from dataclasses import dataclass, fields

import torch

from .cache import KVCache
from .config import GLOBAL_DEFAULTS, GenerationConfig
from .logits_process import LogitsProcessorList, build_logits_processors, sample_next_token

# Settings we read but do not implement: generate() refuses them rather than silently ignoring them.
UNSUPPORTED = {
    "num_beams": lambda v: v > 1,
    "stop_strings": lambda v: bool(v),
    "bad_words_ids": lambda v: bool(v),
    "suppress_tokens": lambda v: bool(v),
    "begin_suppress_tokens": lambda v: bool(v),
    "forced_bos_token_id": lambda v: True,
    "forced_eos_token_id": lambda v: True,
    "sequence_bias": lambda v: bool(v),
    "guidance_scale": lambda v: v != 1,
    "exponential_decay_length_penalty": lambda v: True,
    "renormalize_logits": lambda v: bool(v),
    "remove_invalid_values": lambda v: bool(v),
    "epsilon_cutoff": lambda v: 0.0 < v < 1.0,
    "eta_cutoff": lambda v: 0.0 < v < 1.0,
    "output_attentions": lambda v: bool(v),
    "output_hidden_states": lambda v: bool(v),
}


# -- stopping criteria -----------------------------------------------------------------------
class StoppingCriteria:
    """Called after each step as `criteria(input_ids, scores) -> (B,) bool`: True marks a row as done.

    `scores` is the tuple of processed scores so far when `output_scores` is on, else None (as in transformers).
    """

    def __call__(self, input_ids, scores, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(input_ids, scores)")


class StoppingCriteriaList(list):
    def __call__(self, input_ids, scores, **kwargs):
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for criteria in self:
            done = done | criteria(input_ids, scores, **kwargs)
        return done

    @property
    def max_length(self):
        for criteria in self:
            if isinstance(criteria, MaxLengthCriteria):
                return criteria.max_length
        return None


class MaxLengthCriteria(StoppingCriteria):
    """Done once the sequences, prompt included, hold `max_length` tokens."""

    def __init__(self, max_length: int):
        self.max_length = max_length

    def __call__(self, input_ids, scores, **kwargs):
        done = input_ids.shape[1] >= self.max_length
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class MaxTimeCriteria(StoppingCriteria):
    """Done once `max_time` seconds have passed since `initial_timestamp` (default: creation)."""

    def __init__(self, max_time: float, initial_timestamp: float | None = None):
        self.max_time = max_time
        self.initial_timestamp = time.time() if initial_timestamp is None else initial_timestamp

    def __call__(self, input_ids, scores, **kwargs):
        done = time.time() - self.initial_timestamp > self.max_time
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class EosTokenCriteria(StoppingCriteria):
    """Done for the rows whose last token is one of `eos_token_id` (int, list or 1-D tensor)."""

    def __init__(self, eos_token_id):
        self.eos_token_id = torch.as_tensor(eos_token_id, dtype=torch.long).reshape(-1)

    def __call__(self, input_ids, scores, **kwargs):
        self.eos_token_id = self.eos_token_id.to(input_ids.device)
        return torch.isin(input_ids[:, -1], self.eos_token_id)


# -- outputs ------------------------------------------------------------------------------------
@dataclass
class GenerateDecoderOnlyOutput:
    """What generate() returns with return_dict_in_generate=True (attribute, key and index access)."""

    sequences: torch.Tensor
    scores: tuple | None = None
    logits: tuple | None = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    cache: KVCache | None = None

    @property
    def past_key_values(self):
        return self.cache

    def keys(self):
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self):
        return tuple(getattr(self, name) for name in self.keys())

    def __getitem__(self, key):
        if isinstance(key, str):
            if key == "past_key_values":
                key = "cache"
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key):
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())


@dataclass
class DecodeStep:
    """One step of the decode loop."""

    tokens: torch.Tensor  # (B,) the token appended to each row (pad_token_id for rows already done)
    scores: torch.Tensor  # (B, V) float32 processed scores the tokens were picked from
    logits: torch.Tensor  # (B, V) float32 raw next-token logits
    unfinished: torch.Tensor  # (B,) bool, rows still generating after this step
    sequences: torch.Tensor  # (B, prompt + steps so far): a view of the loop's buffer
    cache: KVCache | None = None  # the cache after this step's forward (None without use_cache)


# -- the loop -----------------------------------------------------------------------------------
@torch.no_grad()
def decode_steps(
    model,
    input_ids,
    attention_mask=None,
    *,
    max_new_tokens: int,
    processors=None,
    do_sample: bool = False,
    generator=None,
    eos_token_ids=None,
    pad_token_id=None,
    stopping_criteria=None,
    use_cache: bool = True,
    copy_logits: bool = False,
    score_history: list | None = None,
):
    """Yield a DecodeStep per new token until `max_new_tokens` or every row is done.

    input_ids (B, T) long; attention_mask (B, T) long or None (None means no padding). eos_token_ids is a
    1-D long tensor or None; rows that produce one are done and get `pad_token_id` from then on.
    `score_history` (a list, or None) collects each step's scores for stopping criteria that read them.
    Host syncs: one per step ("is every row done?"), and only when there is an EOS or a stopping criterion.
    """
    batch, prompt_len = input_ids.shape
    if prompt_len == 0:
        raise ValueError("generation needs at least one prompt token (input_ids has length 0)")
    total = prompt_len + max_new_tokens
    device = input_ids.device
    sequences = input_ids.new_empty(batch, total)
    sequences[:, :prompt_len] = input_ids
    if attention_mask is not None:
        mask = attention_mask.new_ones(batch, total)
        mask[:, :prompt_len] = attention_mask
        positions = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 0)
    else:
        mask = None
        positions = torch.arange(prompt_len, device=device).unsqueeze(0).expand(batch, -1)
    all_positions = positions  # grows only without a cache, where every step re-reads the whole sequence
    cache = KVCache(capacity=total) if use_cache else None
    check_done = eos_token_ids is not None or bool(stopping_criteria)
    if eos_token_ids is not None and pad_token_id is None:
        raise ValueError("an EOS token is set but no pad_token_id to fill the rows that are done")
    scores_arg = tuple(score_history) if score_history is not None else None
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    step_input = input_ids
    length = prompt_len
    for _ in range(max_new_tokens):
        step_mask = mask[:, :length] if mask is not None else None
        if use_cache:
            out = model(
                input_ids=step_input,
                attention_mask=step_mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            returned = getattr(out, "past_key_values", None)
            cache = returned if returned is not None else cache
        else:
            out = model(
                input_ids=sequences[:, :length],
                attention_mask=step_mask,
                position_ids=all_positions,
                past_key_values=None,
                use_cache=False,
                logits_to_keep=1,
            )
        logits = out.logits[:, -1]
        logits = logits.to(torch.float32, copy=True) if copy_logits else logits.float()
        scores = processors(sequences[:, :length], logits) if processors else logits
        tokens = sample_next_token(scores, generator) if do_sample else torch.argmax(scores, dim=-1)
        if eos_token_ids is not None:
            tokens = torch.where(unfinished, tokens, pad_token_id)
        sequences[:, length] = tokens
        length += 1
        if check_done:
            done = torch.isin(tokens, eos_token_ids) if eos_token_ids is not None else torch.zeros_like(unfinished)
            if stopping_criteria:
                if score_history is not None:
                    score_history.append(scores)
                    scores_arg = tuple(score_history)
                done = done | stopping_criteria(sequences[:, :length], scores_arg)
            unfinished = unfinished & ~done
        yield DecodeStep(tokens, scores, logits, unfinished, sequences[:, :length], cache)
        if check_done and not bool(unfinished.any()):
            return
        step_input = tokens[:, None]
        positions = positions[:, -1:] + 1
        if not use_cache:
            all_positions = torch.cat([all_positions, positions], dim=1)


# -- generate() ------------------------------------------------------------------------------------
class GenerationMixin:
    """generate() for any model whose forward follows the leanformers decoding contract (see decode_steps)."""

    @torch.no_grad()
    def generate(
        self,
        input_ids=None,
        attention_mask=None,
        generation_config=None,
        streamer=None,
        generator=None,
        logits_processor=None,
        stopping_criteria=None,
        **kwargs,
    ):
        """Continue each prompt row; returns (B * num_return_sequences, prompt + new) token ids,
        or a GenerateDecoderOnlyOutput with return_dict_in_generate=True.

        Keyword arguments override the generation config (`max_new_tokens=`, `do_sample=`, ...).
        `generator` (a torch.Generator) makes sampling reproducible without touching the global RNG.
        """
        inputs = kwargs.pop("inputs", None)
        if inputs is not None:
            if input_ids is not None:
                raise ValueError("pass the prompt as `input_ids` or as `inputs`, not both")
            input_ids = inputs
        config, has_default_max_length = self._prepare_generation_config(generation_config, kwargs)
        for name, is_used in UNSUPPORTED.items():
            value = getattr(config, name, None)
            if value is not None and is_used(value):
                raise ValueError(f"generate() does not support `{name}={value!r}` yet")

        device = self.device
        eos = config.eos_token_id
        eos_token_ids = None
        if eos is not None:
            eos_token_ids = torch.as_tensor(eos, dtype=torch.long, device=device).reshape(-1)
            if (eos_token_ids < 0).any():
                warnings.warn(f"`eos_token_id` should be non-negative integers, but is {eos}", stacklevel=2)
        pad_token_id = config.pad_token_id
        if pad_token_id is None and eos_token_ids is not None:
            pad_token_id = int(eos_token_ids[0])

        # Inputs
        if input_ids is None:
            if config.bos_token_id is None:
                raise ValueError("`bos_token_id` has to be defined when no `input_ids` are provided.")
            input_ids = torch.full((1, 1), config.bos_token_id, dtype=torch.long, device=device)
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        input_ids = input_ids.to(device)
        batch, prompt_len = input_ids.shape
        if attention_mask is not None:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask has shape {tuple(attention_mask.shape)} but input_ids has {tuple(input_ids.shape)}"
                )
            attention_mask = attention_mask.to(device)
        elif pad_token_id is not None and bool((input_ids == pad_token_id).any()):
            # As transformers: padding is inferred from pad_token_id unless it doubles as EOS (then a prompt
            # may hold it for real, e.g. between chat turns, and nothing is masked).
            can_infer = eos_token_ids is None or not bool((eos_token_ids == pad_token_id).any())
            if can_infer:
                attention_mask = (input_ids != pad_token_id).long()
            if can_infer or batch > 1:
                warnings.warn(
                    f"The input contains pad_token_id={pad_token_id} but no attention_mask was passed; "
                    + (
                        "padding is inferred from pad_token_id. "
                        if can_infer
                        else "it equals the EOS token, so padding cannot be inferred and pad tokens are attended to. "
                    )
                    + "Pass the tokenizer's attention_mask to obtain reliable results.",
                    stacklevel=2,
                )
        if pad_token_id is not None and batch > 1:
            if attention_mask is not None:
                right_padded = bool((attention_mask[:, -1] == 0).any())
            else:
                right_padded = bool((input_ids[:, -1] == pad_token_id).any())
            if right_padded:
                warnings.warn(
                    "A decoder-only architecture is being used, but right-padding was detected! For correct "
                    "generation results, please set `padding_side='left'` when initializing the tokenizer.",
                    stacklevel=2,
                )
        if attention_mask is not None and bool((attention_mask == 1).all()):
            attention_mask = None  # no padding: the model takes its faster causal path
        if config.num_return_sequences > 1:
            input_ids = input_ids.repeat_interleave(config.num_return_sequences, dim=0)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(config.num_return_sequences, dim=0)

        max_new_tokens = self._prepare_generated_length(config, prompt_len, has_default_max_length)

        # Processors and stopping criteria
        pad_lengths = None
        if attention_mask is not None and config.repetition_penalty != 1.0:
            pad_lengths = (attention_mask != 0).int().argmax(dim=1)
        processors = build_logits_processors(
            config, prompt_len, eos_token_ids=eos_token_ids, pad_lengths=pad_lengths, user_processors=logits_processor
        )
        criteria = StoppingCriteriaList(stopping_criteria or ())
        if config.max_time is not None:
            criteria.append(MaxTimeCriteria(config.max_time))

        return_dict = config.return_dict_in_generate
        want_scores = bool(return_dict and config.output_scores)
        want_logits = bool(return_dict and config.output_logits)
        scores, raw_logits = [], []
        if streamer is not None:
            streamer.put(input_ids.cpu())
        steps = decode_steps(
            self,
            input_ids,
            attention_mask,
            max_new_tokens=max_new_tokens,
            processors=processors,
            do_sample=config.do_sample,
            generator=generator,
            eos_token_ids=eos_token_ids,
            pad_token_id=pad_token_id,
            stopping_criteria=criteria,
            use_cache=config.use_cache,
            copy_logits=want_logits,
            score_history=[] if want_scores and criteria else None,
        )
        sequences, cache = input_ids, None
        for step in steps:
            sequences, cache = step.sequences, step.cache
            if want_scores:
                scores.append(step.scores)
            if want_logits:
                raw_logits.append(step.logits)
            if streamer is not None:
                streamer.put(step.tokens.cpu())
        if streamer is not None:
            streamer.end()
        sequences = sequences.clone()  # release the loop's preallocated buffer
        if not return_dict:
            return sequences
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=tuple(scores) if want_scores else None,
            logits=tuple(raw_logits) if want_logits else None,
            cache=cache,
        )

    def _prepare_generation_config(self, generation_config, kwargs):
        """Merge: kwargs > the generation_config passed > self.generation_config > GLOBAL_DEFAULTS.

        Returns the merged copy and whether max_length was left at its global default.
        """
        model_config = getattr(self, "generation_config", None) or GenerationConfig()
        has_default_max_length = (
            kwargs.get("max_length") is None
            and (generation_config is None or generation_config.max_length is None)
            and model_config.max_length is None
        )
        config = copy.deepcopy(generation_config) if generation_config is not None else GenerationConfig()
        config.update(
            defaults_only=True,
            **{k: v for k, v in model_config.to_dict().items() if not k.startswith("_") and k != "transformers_version"},
        )
        config.update(defaults_only=True, **GLOBAL_DEFAULTS)
        unused = config.update(**kwargs)
        if unused:
            raise ValueError(
                f"The following generate() arguments are neither generation settings nor used by the model: "
                f"{sorted(unused)}"
            )
        return config, has_default_max_length

    def _prepare_generated_length(self, config, prompt_len: int, has_default_max_length: bool) -> int:
        """Resolve max_length / max_new_tokens / min_new_tokens as transformers does; check the context size."""
        context = getattr(self.config, "max_position_embeddings", None)
        if context is not None and prompt_len >= context:
            raise ValueError(
                f"The prompt has {prompt_len} tokens, but the model's context (max_position_embeddings) is "
                f"{context} tokens: shorten the prompt to at most {context - 1} tokens."
            )
        if config.max_new_tokens is not None:
            if not has_default_max_length and config.max_length is not None:
                warnings.warn(
                    f"Both `max_new_tokens` (={config.max_new_tokens}) and `max_length` (={config.max_length}) seem to "
                    "have been set. `max_new_tokens` will take precedence.",
                    stacklevel=3,
                )
            config.max_length = prompt_len + config.max_new_tokens
        elif has_default_max_length:
            # transformers' default: 20 new tokens, never past the model's context
            config.max_length = prompt_len + config.max_length
            if context is not None:
                config.max_length = min(config.max_length, context)
        if config.min_new_tokens is not None:
            config.min_length = prompt_len + config.min_new_tokens
        if prompt_len >= config.max_length:
            raise ValueError(
                f"Input length of input_ids is {prompt_len}, but `max_length` is set to {config.max_length}. "
                "This can lead to unexpected behavior. You should consider increasing `max_length` or, better yet, "
                "setting `max_new_tokens`."
            )
        if context is not None and config.max_length > context:
            raise ValueError(
                f"The prompt ({prompt_len} tokens) plus {config.max_length - prompt_len} new tokens makes "
                f"{config.max_length} tokens, more than the model's context (max_position_embeddings) of {context}: "
                f"ask for at most {context - prompt_len} new tokens."
            )
        return config.max_length - prompt_len
