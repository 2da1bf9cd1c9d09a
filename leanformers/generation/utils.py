"""The decode loop (a Python generator, one step per new token) and generate() on top of it.

`decode_steps` runs a model through its forward(): the prompt once (prefill,
logits for the last position only unless `echo` asks for the prompt's
log-probabilities), then one token per step through a KV cache. It yields a
DecodeStep per new token, so generate(), streaming, stop strings and the CLI
all share one loop; greedy, sampling and beam search are ways of picking the
next token inside it. A cache passed in by the caller is reused: when the new
prompt starts with the tokens the cache already holds, only the rest is
prefilled. `GenerationMixin.generate` merges the generation settings (the
user's, then the model's generation config, then transformers' global
defaults), checks the lengths against the model's context, runs the loop and
assembles transformers' outputs.
"""

import copy
import logging
import warnings
from dataclasses import dataclass, fields

import torch

from ..config import PretrainedConfig
from .beam_search import BeamSearch
from .cache import KVCache
from .config import GLOBAL_DEFAULTS, GenerationConfig
from .logits_process import (
    ExponentialDecayLengthPenalty,
    ForcedBOSTokenLogitsProcessor,
    ForcedEOSTokenLogitsProcessor,
    InfNanRemoveLogitsProcessor,
    LogitNormalization,
    LogitsProcessorList,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    PrefixConstrainedLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    SequenceBiasLogitsProcessor,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
)
from .sampling import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopHLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
    sample_next_token,
)
from .stopping_criteria import (
    EosTokenCriteria,
    MaxLengthCriteria,
    MaxTimeCriteria,
    StoppingCriteriaList,
    StopStringCriteria,
    check_stop_strings,
)

logger = logging.getLogger(__name__)

# Settings we read but do not implement: generate() refuses them rather than silently ignoring them.
UNSUPPORTED = {
    "guidance_scale": lambda v: v != 1,
    "output_attentions": lambda v: bool(v),
    "output_hidden_states": lambda v: bool(v),
}

# -- outputs ------------------------------------------------------------------------------------
class OutputMixin:
    """Attribute, key and index access over the fields that are set (None fields are left out)."""

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

    @property
    def past_key_values(self):
        return self.cache


@dataclass
class GenerateDecoderOnlyOutput(OutputMixin):
    """What generate() returns with return_dict_in_generate=True.

    `logprobs` (B, new tokens): log-probability of each generated token under the model (log-softmax of the
    raw logits), 0.0 where a finished row was padded; with `output_logprobs=True`.
    `prompt_logprobs` (B, prompt): the same for each prompt token given the ones before it (0.0 for the first
    token and for padding); with `echo=True`.
    """

    sequences: torch.Tensor
    scores: tuple | None = None
    logits: tuple | None = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    cache: KVCache | None = None
    logprobs: torch.Tensor | None = None
    prompt_logprobs: torch.Tensor | None = None


@dataclass
class GenerateBeamDecoderOnlyOutput(OutputMixin):
    """Beam search's dict output: `sequences_scores` with output_scores; `beam_indices` (B*R, new tokens)
    says which of the B*num_beams running rows each token was chosen from (-1 past the end)."""

    sequences: torch.Tensor
    sequences_scores: torch.Tensor | None = None
    scores: tuple | None = None
    logits: tuple | None = None
    beam_indices: torch.Tensor | None = None
    attentions: tuple | None = None
    hidden_states: tuple | None = None
    cache: KVCache | None = None
    prompt_logprobs: torch.Tensor | None = None


@dataclass
class DecodeStep:
    """One step of the decode loop."""

    tokens: torch.Tensor  # (B,) the token appended to each row (pad_token_id for rows already done)
    scores: torch.Tensor  # (B, V) float32 processed scores the tokens were picked from
    logits: torch.Tensor  # (B, V) float32 raw next-token logits
    unfinished: torch.Tensor  # (B,) bool, rows still generating after this step
    sequences: torch.Tensor  # (B, prompt + steps so far): a view of the loop's buffer
    cache: KVCache | None = None  # the cache after this step's forward (None without use_cache)
    logprobs: torch.Tensor | None = None  # (B,) log-softmax of the raw logits at the tokens, when asked
    prompt_logprobs: torch.Tensor | None = None  # (B, prompt), first step only, with echo


# -- the loop -----------------------------------------------------------------------------------
def reuse_cached_prefix(cache: KVCache, input_ids, limit: int) -> int:
    """Keep the cached tokens the prompt starts with (at most `limit`), drop the rest; return how many are kept.

    A cache that holds tokens generate() did not record cannot be checked against the prompt: refused.
    """
    held = cache.get_seq_length()
    cached_ids = cache.token_ids
    if held and (cached_ids is None or cached_ids.shape[1] != held):
        raise ValueError(
            f"the cache passed to generate() holds {held} tokens that were not recorded by generate(), so they "
            "cannot be matched against the prompt: pass a fresh KVCache() or one that generate() filled"
        )
    if cached_ids is None or cached_ids.shape[0] != input_ids.shape[0] or (len(cache) and cache.keys[0].shape[0] != input_ids.shape[0]):
        cache.reset()
        return 0
    width = min(held, limit)
    same = (cached_ids[:, :width] == input_ids[:, :width]).all(dim=0)
    kept = int(same.long().cumprod(0).sum())
    cache.crop(kept)
    return kept


def prompt_token_logprobs(logits, input_ids, attention_mask):
    """(B, T) log p(token t | tokens before t) from the prefill logits (B, T, V); 0.0 at t = 0 and at padding."""
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    logprobs = torch.cat([logprobs.new_zeros(logprobs.shape[0], 1), logprobs], dim=1)
    if attention_mask is not None:
        logprobs = logprobs.masked_fill(attention_mask == 0, 0.0)
    return logprobs


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
    cache: KVCache | None = None,
    beams: BeamSearch | None = None,
    echo: bool = False,
    with_logprobs: bool = False,
):
    """Yield a DecodeStep per new token until `max_new_tokens` or every row is done.

    input_ids (B, T) long; attention_mask (B, T) long or None (None means no padding). eos_token_ids is a
    1-D long tensor or None; rows that produce one are done and get `pad_token_id` from then on.
    `score_history` (a list, or None) collects each step's scores for stopping criteria that read them.
    `cache`: a KVCache to fill (and reuse: see reuse_cached_prefix); by default a new one sized for the call.
    `beams`: a BeamSearch picks the tokens (the rows are its B * num_beams beams); it owns the stopping
    criteria then. `echo` prefills with logits for every prompt position; `with_logprobs` adds each
    token's log-probability to the steps.
    Host syncs: one per step ("is every row done?"), and only when there is an EOS or a stopping criterion.
    """
    batch, prompt_len = input_ids.shape
    if prompt_len == 0:
        raise ValueError("generation needs at least one prompt token (input_ids has length 0)")
    total = prompt_len + max_new_tokens
    device = input_ids.device
    if beams is not None:
        sequences = input_ids.new_full((batch, total), beams.fill_value)
    else:
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
    past = 0
    if use_cache:
        if cache is None:
            cache = KVCache(capacity=total)
        else:
            past = reuse_cached_prefix(cache, input_ids, 0 if echo else prompt_len - 1)
    else:
        cache = None
    check_done = eos_token_ids is not None or bool(stopping_criteria)
    if eos_token_ids is not None and pad_token_id is None and beams is None:
        raise ValueError("an EOS token is set but no pad_token_id to fill the rows that are done")
    scores_arg = tuple(score_history) if score_history is not None else None
    unfinished = torch.ones(batch, dtype=torch.bool, device=device)
    step_input, positions = input_ids[:, past:], positions[:, past:]
    length = prompt_len
    for step in range(max_new_tokens):
        step_mask = mask[:, :length] if mask is not None else None
        keep = 0 if echo and step == 0 else 1
        if use_cache:
            out = model(
                input_ids=step_input,
                attention_mask=step_mask,
                position_ids=positions,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=keep,
            )
            returned = getattr(out, "past_key_values", None)
            cache = returned if returned is not None else cache
            if beams is None:
                cache.token_ids = sequences[:, :length]
        else:
            out = model(
                input_ids=sequences[:, :length],
                attention_mask=step_mask,
                position_ids=all_positions,
                past_key_values=None,
                use_cache=False,
                logits_to_keep=keep,
            )
        prompt_logprobs = prompt_token_logprobs(out.logits, input_ids, attention_mask) if keep == 0 else None
        logits = out.logits[:, -1]
        logits = logits.to(torch.float32, copy=True) if copy_logits else logits.float()
        seen = sequences[:, :length]
        if beams is not None:
            scores = processors(seen, torch.log_softmax(logits, dim=-1)) if processors else torch.log_softmax(logits, dim=-1)
            if score_history is not None:
                score_history.append(scores)
                scores_arg = tuple(score_history)
            sequences, source, keep_going = beams.step(scores, sequences, length, scores_arg)
            if cache is not None:
                cache.reorder(source)
            tokens = sequences[:, length]
            length += 1
            yield DecodeStep(tokens, scores, logits, unfinished, sequences[:, :length], cache, None, prompt_logprobs)
            if not bool(keep_going):
                return
        else:
            scores = processors(seen, logits) if processors else logits
            tokens = sample_next_token(scores, generator) if do_sample else torch.argmax(scores, dim=-1)
            if eos_token_ids is not None:
                tokens = torch.where(unfinished, tokens, pad_token_id)
            logprobs = None
            if with_logprobs:
                logprobs = torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None]).squeeze(-1)
                logprobs = logprobs.masked_fill(~unfinished, 0.0)
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
            yield DecodeStep(tokens, scores, logits, unfinished, sequences[:, :length], cache, logprobs,
                             prompt_logprobs)
            if check_done and not bool(unfinished.any()):
                return
        step_input = tokens[:, None]
        positions = positions[:, -1:] + 1
        if not use_cache:
            all_positions = torch.cat([all_positions, positions], dim=1)


# -- processors and stopping criteria -------------------------------------------------------------
def merge_by_type(defaults, custom):
    """transformers' rule for the processors or stopping criteria a user passes to generate(): one of the
    same type as a default takes that default's place; the others follow the defaults, in their order."""
    custom = list(custom or ())
    merged = []
    for default in defaults:
        same = next((c for c in custom if type(c) is type(default)), None)
        if same is not None:
            logger.warning(
                f"A custom {type(same).__name__} was passed to generate(), which also made one from its settings: "
                "the custom one is used."
            )
        merged.append(default if same is None else same)
    return merged + [c for c in custom if not any(c is m for m in merged)]


def build_logits_processors(
    config,
    prompt_length: int,
    eos_token_ids=None,
    pad_lengths=None,
    user_processors=None,
    vocab_size=None,
    device=None,
    prefix_allowed_tokens_fn=None,
) -> LogitsProcessorList:
    """The processors a (merged, defaults filled) GenerationConfig asks for, in transformers' order, with the
    user's merged in (merge_by_type) before the sampling warpers; the watermark and the renormalization last.

    `eos_token_ids` is a 1-D long tensor or None; `pad_lengths` (B,) holds each row's left padding.
    With beam sampling, the sampling filters keep one token more than there are EOS ids, as transformers does.
    transformers' generate() refuses an int temperature or repetition penalty (2 for 2.0); here it is taken.
    """
    processors = []
    if config.sequence_bias is not None:
        processors.append(SequenceBiasLogitsProcessor(config.sequence_bias))
    if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
        penalty = float(config.repetition_penalty)
        processors.append(RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=pad_lengths))
    if config.no_repeat_ngram_size:
        processors.append(NoRepeatNGramLogitsProcessor(config.no_repeat_ngram_size))
    if config.bad_words_ids is not None:
        processors.append(NoBadWordsLogitsProcessor(config.bad_words_ids, eos_token_ids))
    if eos_token_ids is not None and config.min_length:
        processors.append(MinLengthLogitsProcessor(config.min_length, eos_token_ids, device=device))
    if eos_token_ids is not None and config.min_new_tokens:
        processors.append(
            MinNewTokensLengthLogitsProcessor(prompt_length, config.min_new_tokens, eos_token_ids, device=device)
        )
    if prefix_allowed_tokens_fn is not None:
        rows_per_prompt = max(config.num_beams, config.num_return_sequences)
        processors.append(PrefixConstrainedLogitsProcessor(prefix_allowed_tokens_fn, rows_per_prompt))
    if config.forced_bos_token_id is not None:
        processors.append(ForcedBOSTokenLogitsProcessor(config.forced_bos_token_id))
    if config.forced_eos_token_id is not None:
        processors.append(ForcedEOSTokenLogitsProcessor(config.max_length, config.forced_eos_token_id, device=device))
    if config.remove_invalid_values:
        processors.append(InfNanRemoveLogitsProcessor())
    if config.exponential_decay_length_penalty is not None:
        processors.append(
            ExponentialDecayLengthPenalty(config.exponential_decay_length_penalty, eos_token_ids, prompt_length)
        )
    if config.suppress_tokens is not None:
        processors.append(SuppressTokensLogitsProcessor(config.suppress_tokens, device=device))
    if config.begin_suppress_tokens is not None:
        begin_index = prompt_length + (1 if prompt_length == 1 and config.forced_bos_token_id is not None else 0)
        processors.append(SuppressTokensAtBeginLogitsProcessor(config.begin_suppress_tokens, begin_index, device))
    processors = LogitsProcessorList(merge_by_type(processors, user_processors))
    if config.do_sample:
        keep = 1
        if config.num_beams and config.num_beams > 1:
            keep = (eos_token_ids.numel() if eos_token_ids is not None else 1) + 1
        if config.temperature is not None and config.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(float(config.temperature)))
        if config.top_h is not None:
            processors.append(TopHLogitsWarper(config.top_h))
        if config.top_k:
            processors.append(TopKLogitsWarper(config.top_k, min_tokens_to_keep=keep))
        if config.top_p is not None and config.top_p < 1.0:
            processors.append(TopPLogitsWarper(config.top_p, min_tokens_to_keep=keep))
        if config.min_p is not None:
            processors.append(MinPLogitsWarper(config.min_p, min_tokens_to_keep=keep))
        if config.typical_p is not None and config.typical_p < 1.0:
            processors.append(TypicalLogitsWarper(config.typical_p, min_tokens_to_keep=keep))
        if config.epsilon_cutoff is not None and 0.0 < config.epsilon_cutoff < 1.0:
            processors.append(EpsilonLogitsWarper(config.epsilon_cutoff, min_tokens_to_keep=keep))
        if config.eta_cutoff is not None and 0.0 < config.eta_cutoff < 1.0:
            processors.append(EtaLogitsWarper(config.eta_cutoff, min_tokens_to_keep=keep, device=device))
    if config.watermarking_config is not None:  # after every other change to the scores, as in transformers
        processors.append(config.watermarking_config.construct_processor(vocab_size, device))
    if config.renormalize_logits:
        processors.append(LogitNormalization())
    return processors


# -- generate() ------------------------------------------------------------------------------------
def refuse_settings_on_model_config(model_config):
    """Raise for generation settings set on the model config by hand (`config.do_sample = True`): v4 applied
    them, transformers v5 raises, and ignoring them would silently decode greedily."""
    found = model_config._get_generation_parameters() if isinstance(model_config, PretrainedConfig) else {}
    if found:
        raise ValueError(
            "You have modified the pretrained model configuration to control generation. We detected the following "
            f"values set - {found}. This strategy to control generation is not supported anymore. Please use and "
            "modify `model.generation_config` (see "
            "https://huggingface.co/docs/transformers/generation_strategies#default-text-generation-configuration )"
        )


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
        prefix_allowed_tokens_fn=None,
        tokenizer=None,
        output_logprobs: bool = False,
        echo: bool = False,
        **kwargs,
    ):
        """Continue each prompt row; returns (B * num_return_sequences, prompt + new) token ids,
        or a GenerateDecoderOnlyOutput (GenerateBeamDecoderOnlyOutput with num_beams > 1) with
        return_dict_in_generate=True.

        Keyword arguments override the generation config (`max_new_tokens=`, `do_sample=`, `num_beams=`, ...).
        `generator` (a torch.Generator) makes sampling reproducible without touching the global RNG.
        `logits_processor` / `stopping_criteria`: lists of the user's own, merged with the ones the settings ask for
        as transformers does (see merge_by_type); a MaxLengthCriteria among them sets where generation stops.
        `prefix_allowed_tokens_fn(batch_id, row_ids) -> allowed token ids` constrains every step.
        `tokenizer` is needed for `stop_strings`. `output_logprobs=True` adds each generated token's
        log-probability, `echo=True` each prompt token's (computed in the prefill); both imply the dict output.
        `past_key_values=` / `cache=`: a KVCache to fill and reuse across calls (only the part of the prompt
        it does not already hold is prefilled); it is returned as the output's `cache`.
        """
        inputs = kwargs.pop("inputs", None)
        if inputs is not None:
            if input_ids is not None:
                raise ValueError("pass the prompt as `input_ids` or as `inputs`, not both")
            input_ids = inputs
        cache = kwargs.pop("cache", None)
        past_key_values = kwargs.pop("past_key_values", None)
        if cache is not None and past_key_values is not None and cache is not past_key_values:
            raise ValueError("pass the KV cache as `cache` or as `past_key_values`, not both")
        cache = cache if cache is not None else past_key_values
        if cache is not None and not isinstance(cache, KVCache):
            raise TypeError(f"generate() reuses a leanformers KVCache, not a {type(cache).__name__}")
        config, has_default_max_length = self._prepare_generation_config(generation_config, kwargs)
        for name, is_used in UNSUPPORTED.items():
            value = getattr(config, name, None)
            if value is not None and is_used(value):
                raise ValueError(f"generate() does not support `{name}={value!r}`")
        num_beams = config.num_beams
        if num_beams > 1:
            if streamer is not None:
                raise ValueError("`streamer` cannot be used with beam search (yet!). Make sure that `num_beams` is set to 1.")
            if output_logprobs:
                raise ValueError(
                    "`output_logprobs` is for greedy search and sampling; with beam search use "
                    "`return_dict_in_generate=True, output_scores=True` and `model.compute_transition_scores`"
                )
            if cache is not None:
                raise ValueError("beam search builds its own KV cache (one row per beam): do not pass `cache`")
            if not config.use_cache:
                raise ValueError("beam search needs `use_cache=True`")
        stop_strings = check_stop_strings(config.stop_strings) if config.stop_strings else None

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
        attention_mask = self._prepare_attention_mask(input_ids, attention_mask, pad_token_id, eos_token_ids)
        max_new_tokens = self._prepare_generated_length(config, prompt_len, has_default_max_length)
        copies = num_beams if num_beams > 1 else config.num_return_sequences
        if copies > 1:
            input_ids = input_ids.repeat_interleave(copies, dim=0)
            if attention_mask is not None:
                attention_mask = attention_mask.repeat_interleave(copies, dim=0)

        # Processors and stopping criteria
        pad_lengths = None
        if attention_mask is not None and config.repetition_penalty != 1.0:
            pad_lengths = (attention_mask != 0).int().argmax(dim=1)
        vocab_size = getattr(getattr(self, "config", None), "vocab_size", None)
        processors = build_logits_processors(
            config,
            prompt_len,
            eos_token_ids=eos_token_ids,
            pad_lengths=pad_lengths,
            user_processors=logits_processor,
            vocab_size=vocab_size,
            device=device,
            prefix_allowed_tokens_fn=prefix_allowed_tokens_fn,
        )
        # Without beams the loop itself stops at max_length and at EOS (padding the rows that are done).
        defaults = [MaxLengthCriteria(config.max_length)] if num_beams > 1 else []
        if config.max_time is not None:
            defaults.append(MaxTimeCriteria(config.max_time))
        if stop_strings:
            defaults.append(StopStringCriteria(tokenizer, stop_strings))
            if streamer is not None and hasattr(streamer, "set_stop_strings"):
                streamer.set_stop_strings(stop_strings)
        if num_beams > 1 and eos_token_ids is not None:
            defaults.append(EosTokenCriteria(eos_token_ids))
        criteria = StoppingCriteriaList(merge_by_type(defaults, stopping_criteria))
        if criteria.max_length is not None:
            # the user's MaxLengthCriteria decides the length, as in transformers (where it replaces its own)
            max_new_tokens = max(criteria.max_length - prompt_len, 1)
        beams = None
        if num_beams > 1:
            fill = -1 if eos_token_ids is None else (pad_token_id or int(eos_token_ids[0]))
            beams = BeamSearch(
                batch, num_beams, prompt_len, prompt_len + max_new_tokens,
                num_eos=0 if eos_token_ids is None else eos_token_ids.numel(),
                length_penalty=config.length_penalty, early_stopping=config.early_stopping,
                do_sample=config.do_sample, generator=generator, stopping_criteria=criteria,
                fill_value=fill, device=device,
            )  # fmt: skip

        return_dict = config.return_dict_in_generate or output_logprobs or echo
        want_scores = bool(return_dict and config.output_scores)
        want_logits = bool(return_dict and config.output_logits)
        scores, raw_logits, logprobs, prompt_logprobs = [], [], [], None
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
            eos_token_ids=eos_token_ids if beams is None else None,
            pad_token_id=pad_token_id,
            stopping_criteria=criteria if beams is None else None,
            use_cache=config.use_cache,
            copy_logits=want_logits,
            score_history=[] if want_scores and criteria else None,
            cache=cache,
            beams=beams,
            echo=echo,
            with_logprobs=output_logprobs,
        )
        sequences, cache = input_ids, None
        for step in steps:
            sequences, cache = step.sequences, step.cache
            if step.prompt_logprobs is not None:
                prompt_logprobs = step.prompt_logprobs
            if want_scores:
                scores.append(step.scores)
            if want_logits:
                raw_logits.append(step.logits)
            if output_logprobs:
                logprobs.append(step.logprobs)
            if streamer is not None:
                streamer.put(step.tokens.cpu())
        if streamer is not None:
            streamer.end()
        if beams is not None:
            sequences, sequence_scores, beam_indices = beams.result(config.num_return_sequences)
            if not return_dict:
                return sequences
            if prompt_logprobs is not None:
                prompt_logprobs = prompt_logprobs[::num_beams].repeat_interleave(config.num_return_sequences, dim=0)
            return GenerateBeamDecoderOnlyOutput(
                sequences=sequences,
                sequences_scores=sequence_scores if want_scores else None,
                scores=tuple(scores) if want_scores else None,
                logits=tuple(raw_logits) if want_logits else None,
                beam_indices=beam_indices,
                cache=cache,
                prompt_logprobs=prompt_logprobs,
            )
        sequences = sequences.clone()  # release the loop's preallocated buffer
        if not return_dict:
            return sequences
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=tuple(scores) if want_scores else None,
            logits=tuple(raw_logits) if want_logits else None,
            cache=cache,
            logprobs=torch.stack(logprobs, dim=1) if output_logprobs else None,
            prompt_logprobs=prompt_logprobs,
        )

    def compute_transition_scores(self, sequences, scores, beam_indices=None, normalize_logits: bool = False):
        """Each generated token's score at the step it was picked: (rows, new tokens) float.

        `scores` is the output's `scores` tuple (processed scores; `normalize_logits=True` log-softmaxes them
        first). For beam search pass the output's `beam_indices`: the row each step's score is read from;
        steps past a beam's end (-1) score 0.
        """
        steps = len(scores)
        stacked = torch.stack(scores, dim=1)  # (rows, steps, V)
        if normalize_logits:
            stacked = torch.log_softmax(stacked, dim=-1)
        if beam_indices is None:
            beam_indices = torch.arange(stacked.shape[0], device=stacked.device)[:, None].expand(-1, steps)
        ended = beam_indices < 0
        longest = int((~ended).sum(-1).max())
        rows, ended = beam_indices[:, :longest].clamp(min=0).long(), ended[:, :longest]
        tokens = sequences[:, sequences.shape[-1] - longest :]
        step_index = torch.arange(longest, device=stacked.device)[None, :].expand_as(rows)
        return stacked[rows, step_index, tokens].masked_fill(ended, 0.0)

    def _prepare_attention_mask(self, input_ids, attention_mask, pad_token_id, eos_token_ids):
        """Check the mask; infer it from pad_token_id when missing (warning, as transformers); None = no padding."""
        batch = input_ids.shape[0]
        device = input_ids.device
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
                    stacklevel=3,
                )
        if pad_token_id is not None and batch > 1:
            if attention_mask is not None:
                right_padded = bool((attention_mask[:, -1] == 0).any())
            else:
                right_padded = bool((input_ids[:, -1] == pad_token_id).any())
            if right_padded:
                # A log record as in transformers: shown at every call, and not silenced by warning filters.
                logger.warning(
                    "A decoder-only architecture is being used, but right-padding was detected! For correct "
                    "generation results, please set `padding_side='left'` when initializing the tokenizer."
                )
        if attention_mask is not None and bool((attention_mask == 1).all()):
            attention_mask = None  # no padding: the model takes its faster causal path
        return attention_mask

    def _prepare_generation_config(self, generation_config, kwargs):
        """Merge: kwargs > the generation_config passed > self.generation_config > GLOBAL_DEFAULTS.

        Returns the merged copy and whether max_length was left at its global default. Settings put on the
        model config by hand (v4's way) are refused, as transformers v5 does, rather than ignored.
        """
        if generation_config is None:
            refuse_settings_on_model_config(getattr(self, "config", None))
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
