"""PreTrainedTokenizer: a `tokenizers.Tokenizer` plus the settings transformers keeps beside it (special
tokens, padding side, model_max_length, chat template). It loads from a folder or a GGUF file, encodes into
BatchEncodings, pads, decodes, renders chat templates, trains a new tokenizer of its kind and saves.
AutoTokenizer and the transformers class names (BertTokenizerFast, GPT2Tokenizer, ...) are this one class.
"""

import copy
import json
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, pre_tokenizers, processors

from ..files import write_atomic
from .batch_encoding import BatchEncoding, check_tensor_type
from .chat_template import (assistant_spans_by_message, check_conversation, compile_chat_template,
                            cut_after_final_message, has_generation_blocks, plain_template_data,
                            render_tracking_generation, tag_final_message, token_mask_from_spans)
from .folder import (ADDED_TOKENS_FILE, CHAT_TEMPLATE_FILE, SPECIAL_TOKEN_NAMES, SPECIAL_TOKENS_MAP_FILE,
                     SPM_MODEL_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_FILE, load_folder_config, token_content)
from .from_gguf import tokenizer_from_gguf
from .from_sentencepiece import tokenizer_from_sentencepiece_model
from .from_vocab_files import has_vocab_files, tokenizer_from_vocab_files
from .tool_schema import get_json_schema
from .train_new import TRAINERS, renumber_post_processor, uses_byte_level

VERY_LARGE_INTEGER = int(1e30)  # model_max_length when nothing says otherwise (transformers' value)
LARGE_INTEGER = int(1e20)  # above this, model_max_length means "no limit"

# tokenizer_class values whose transformers class also returns token_type_ids by default.
TOKEN_TYPE_IDS_CLASSES = ("BertTokenizer", "ElectraTokenizer", "ConvBertTokenizer", "DebertaTokenizer",
                          "DebertaV2Tokenizer", "MarkupLMTokenizer", "LayoutLMv2Tokenizer", "FNetTokenizer")

# tokenizer_config.json keys that are about where files were, not about the tokenizer.
UNSAVED_CONFIG_KEYS = ("name_or_path", "tokenizer_file", "special_tokens_map_file", "auto_map", "added_tokens_decoder",
                       "vocab_file", "merges_file", "is_local", "local_files_only", "backend", "files_loaded")

# Keys the hub accepts that say nothing about the tokenizer itself.
HUB_KWARGS = ("cache_dir", "revision", "token", "local_files_only", "trust_remote_code", "use_fast",
              "force_download", "proxies", "subfolder", "_from_auto")

PADDING_STRATEGIES = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
TRUNCATION_STRATEGIES = {None: None, False: None, "do_not_truncate": None, True: "longest_first",
                         "longest_first": "longest_first", "only_first": "only_first", "only_second": "only_second"}


def to_id_list(ids):
    """Token ids (int, list, tuple, numpy array, torch tensor) as plain Python ints / lists."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, (list, tuple)):
        return [to_id_list(i) for i in ids]
    return int(ids)


def to_plain_list(value):
    """Tensors and arrays as (nested) Python lists; other values stay what they are, so a float label is not
    cut to an int and a text column reaches the tensor conversion, which names it."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [to_plain_list(v) for v in value]
    return value


def tensor_type_of(ids) -> str | None:
    """"pt" or "np" when ids (one row, or a batch of rows) are torch tensors or numpy arrays, else None."""
    first = ids[0] if len(ids) else None
    if isinstance(first, (list, tuple)):
        first = next((row[0] for row in ids if len(row)), None)
    return {"torch": "pt", "numpy": "np"}.get(type(first).__module__.split(".")[0])


class PreTrainedTokenizer:
    """A fast tokenizer: a `tokenizers.Tokenizer` plus the settings transformers keeps beside it."""

    padding_side = "right"
    truncation_side = "right"

    def __init__(self, tokenizer_object: Tokenizer | None = None, tokenizer_file=None, name_or_path="", **config):
        if tokenizer_object is None:
            if tokenizer_file is None:
                raise ValueError("PreTrainedTokenizer needs tokenizer_object= (a tokenizers.Tokenizer) or "
                                 "tokenizer_file= (a tokenizer.json path)")
            tokenizer_object = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer = tokenizer_object
        # Padding and truncation are set per call; what tokenizer.json carries would leak into every call.
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.name_or_path = str(name_or_path)
        self.init_kwargs = copy.deepcopy({k: v for k, v in config.items() if k not in UNSAVED_CONFIG_KEYS})

        self.model_max_length = int(config.get("model_max_length") or VERY_LARGE_INTEGER)
        self.padding_side = self._check_side("padding_side", config.get("padding_side", "right"))
        self.truncation_side = self._check_side("truncation_side", config.get("truncation_side", "right"))
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self.split_special_tokens = bool(config.get("split_special_tokens", False))
        self.tokenizer_class = config.get("tokenizer_class") or "PreTrainedTokenizerFast"
        self.model_input_names = list(config.get("model_input_names") or self._default_input_names())
        self.chat_template = config.get("chat_template")
        if isinstance(self.chat_template, list):  # [{"name": ..., "template": ...}, ...]
            self.chat_template = {t["name"]: t["template"] for t in self.chat_template}

        self._special_tokens = {name: token_content(config.get(name)) for name in SPECIAL_TOKEN_NAMES}
        extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        self._extra_special_tokens = [token_content(t) for t in (extra.values() if isinstance(extra, dict) else extra)]
        self._add_saved_added_tokens(config.get("added_tokens_decoder") or {})
        self._add_missing_special_tokens()

        self._add_bos_token = bool(config.get("add_bos_token", False))
        self._add_eos_token = bool(config.get("add_eos_token", False))
        self._manage_post_processor = (
            "add_bos_token" in config or "add_eos_token" in config or self._tokenizer.post_processor is None
        )
        if self._manage_post_processor:
            self.update_post_processor()

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *inputs, gguf_file=None, **kwargs):
        from ..hub import resolve_model_path

        if inputs:
            raise TypeError(f"from_pretrained takes keyword arguments only after the path, got {inputs!r}")
        revision, cache_dir = kwargs.get("revision"), kwargs.get("cache_dir")
        for key in HUB_KWARGS:
            kwargs.pop(key, None)
        path = resolve_model_path(pretrained_model_name_or_path, gguf_file=gguf_file,
                                  revision=revision, cache_dir=cache_dir)
        if path.suffix == ".gguf":
            backend, config = tokenizer_from_gguf(path)
        elif not (path / TOKENIZER_FILE).is_file() and (path / SPM_MODEL_FILE).is_file():
            backend, config = tokenizer_from_sentencepiece_model(path / SPM_MODEL_FILE)
            config.update(load_folder_config(path))
        elif not (path / TOKENIZER_FILE).is_file() and has_vocab_files(path):
            backend, config = tokenizer_from_vocab_files(path, {**load_folder_config(path), **kwargs})
        else:
            tokenizer_file = path / TOKENIZER_FILE
            if not tokenizer_file.is_file():
                present = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
                raise FileNotFoundError(
                    f"{path} has no {TOKENIZER_FILE}; a tokenizer folder needs {TOKENIZER_FILE} "
                    f"(with optional {TOKENIZER_CONFIG_FILE}, {SPECIAL_TOKENS_MAP_FILE}, {CHAT_TEMPLATE_FILE}), "
                    f"or pass gguf_file= for a GGUF file. The folder holds: {present or 'nothing'}"
                )
            try:
                backend = Tokenizer.from_file(str(tokenizer_file))
            except Exception as err:
                raise ValueError(f"{tokenizer_file} is not a tokenizers file: {err}") from None
            config = load_folder_config(path)
        config.update(kwargs)
        config["name_or_path"] = str(pretrained_model_name_or_path)
        return cls(tokenizer_object=backend, **config)

    @staticmethod
    def _check_side(name, side):
        if side not in ("left", "right"):
            raise ValueError(f"{name} must be 'left' or 'right', got {side!r}")
        return side

    def _default_input_names(self):
        name = self.tokenizer_class.removesuffix("Fast")
        if name in TOKEN_TYPE_IDS_CLASSES:
            return ["input_ids", "token_type_ids", "attention_mask"]
        return ["input_ids", "attention_mask"]

    def _add_saved_added_tokens(self, added_tokens_decoder: dict):
        """Add the tokens tokenizer_config.json lists that tokenizer.json does not already have."""
        have = {t.content for t in self._tokenizer.get_added_tokens_decoder().values()}
        for index in sorted(added_tokens_decoder, key=int):
            entry = added_tokens_decoder[index]
            token = entry if isinstance(entry, AddedToken) else AddedToken(**{
                k: v for k, v in entry.items() if k != "__type"})
            if token.content not in have:
                self._tokenizer.add_tokens([token])
                have.add(token.content)
                given = self._tokenizer.token_to_id(token.content)
                if given != int(index):
                    raise ValueError(
                        f"added token {token.content!r} is listed with id {index}, but the vocabulary has "
                        f"{given} tokens before it; the added tokens' ids must follow the vocabulary without gaps"
                    )

    def _add_missing_special_tokens(self):
        have = {t.content for t in self._tokenizer.get_added_tokens_decoder().values()}
        missing = [t for t in [*self._special_tokens.values(), *self._extra_special_tokens] if t and t not in have]
        if missing:
            self._tokenizer.add_special_tokens(
                [AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(missing)])

    def update_post_processor(self):
        """Rebuild the post-processor from add_bos_token / add_eos_token and the bos / eos tokens."""
        bos, eos = self.bos_token, self.eos_token
        add_bos = self._add_bos_token and bos is not None
        add_eos = self._add_eos_token and eos is not None
        single = " ".join([f"{bos}:0"] * add_bos + ["$A:0"] + [f"{eos}:0"] * add_eos)
        pair = " ".join([single] + [f"{bos}:1"] * add_bos + ["$B:1"] + [f"{eos}:1"] * add_eos)
        special = [(bos, self.bos_token_id)] * add_bos + [(eos, self.eos_token_id)] * add_eos
        self._tokenizer.post_processor = processors.TemplateProcessing(single=single, pair=pair,
                                                                        special_tokens=special)

    @property
    def add_bos_token(self) -> bool:
        return self._add_bos_token

    @add_bos_token.setter
    def add_bos_token(self, value):
        self._add_bos_token = bool(value)
        self._manage_post_processor = True
        self.update_post_processor()

    @property
    def add_eos_token(self) -> bool:
        return self._add_eos_token

    @add_eos_token.setter
    def add_eos_token(self, value):
        self._add_eos_token = bool(value)
        self._manage_post_processor = True
        self.update_post_processor()

    # -- special tokens ---------------------------------------------------------------------------------
    def _get_special(self, name):
        return self._special_tokens[name]

    def _set_special(self, name, value):
        self._special_tokens[name] = token_content(value)
        if self._special_tokens[name] is not None:
            self._add_missing_special_tokens()
        if name in ("bos_token", "eos_token") and getattr(self, "_manage_post_processor", False):
            self.update_post_processor()

    def _get_special_id(self, name):
        token = self._special_tokens[name]
        return None if token is None else self.convert_tokens_to_ids(token)

    def _set_special_id(self, name, value):
        if value is None:
            self._set_special(name, None)
            return
        token = self._tokenizer.id_to_token(int(value))
        if token is None:
            raise ValueError(f"{name}_id={value} is not in the vocabulary (size {len(self)})")
        self._set_special(name, token)

    @property
    def special_tokens_map(self) -> dict:
        """The named special tokens that are set (bos_token, eos_token, ...), as strings."""
        out = {name: token for name, token in self._special_tokens.items() if token is not None}
        if self._extra_special_tokens:
            out["additional_special_tokens"] = list(self._extra_special_tokens)
        return out

    @property
    def all_special_tokens(self) -> list[str]:
        named = [t for t in self._special_tokens.values() if t is not None]
        return list(dict.fromkeys(named + self._extra_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.all_special_tokens)

    @property
    def additional_special_tokens(self) -> list[str]:
        return list(self._extra_special_tokens)

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        return dict(sorted(self._tokenizer.get_added_tokens_decoder().items()))

    @property
    def added_tokens_encoder(self) -> dict[str, int]:
        return {t.content: i for i, t in self.added_tokens_decoder.items()}

    def add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        """Add tokens to the vocabulary; returns how many were new."""
        if isinstance(new_tokens, (str, AddedToken)):
            new_tokens = [new_tokens]
        if special_tokens:
            return self._tokenizer.add_special_tokens(list(new_tokens))
        return self._tokenizer.add_tokens(list(new_tokens))

    def add_special_tokens(self, special_tokens_dict: dict) -> int:
        """Set named special tokens (and additional_special_tokens), adding them to the vocabulary."""
        before = len(self)
        for name, value in special_tokens_dict.items():
            if name in ("additional_special_tokens", "extra_special_tokens"):
                self._extra_special_tokens = list(dict.fromkeys(
                    self._extra_special_tokens + [token_content(v) for v in value]))
                self._add_missing_special_tokens()
            elif name in SPECIAL_TOKEN_NAMES:
                self._set_special(name, value)
            else:
                raise ValueError(f"{name!r} is not a special token name; use one of {SPECIAL_TOKEN_NAMES} "
                                 "or 'additional_special_tokens'")
        return len(self) - before

    # -- vocabulary ------------------------------------------------------------------------------------
    @property
    def backend_tokenizer(self) -> Tokenizer:
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without added tokens."""
        return self._tokenizer.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._tokenizer.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens):
        if tokens is None:
            return None
        if isinstance(tokens, str):
            index = self._tokenizer.token_to_id(tokens)
            return self.unk_token_id if index is None else index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False):
        ids = to_id_list(ids)
        if isinstance(ids, int):
            return self._tokenizer.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._tokenizer.id_to_token(i) for i in ids if i not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        decoder = self._tokenizer.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    # -- encoding --------------------------------------------------------------------------------------
    def __call__(self, text=None, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
                 max_length: int | None = None, stride: int = 0, is_split_into_words: bool = False,
                 pad_to_multiple_of: int | None = None, padding_side: str | None = None, return_tensors=None,
                 return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False, verbose: bool = True,
                 truncation_side: str | None = None, split_special_tokens: bool | None = None,
                 **kwargs) -> BatchEncoding:
        """Tokenize a text, a pair, or a batch of either: ids plus the masks asked for, as lists or tensors.

        The arguments are transformers'; `truncation_side` may also be given per call.
        """
        if kwargs:
            raise TypeError(f"tokenizer() got unsupported arguments: {', '.join(sorted(kwargs))}")
        if text is None:
            raise ValueError("tokenizer() needs text: a string, or a list of strings for a batch")
        check_tensor_type(return_tensors)
        batched = self._is_batched(text, is_split_into_words)
        texts = list(text) if batched else [text]
        self._check_texts("text", texts, is_split_into_words)
        if not batched and not text_pair:
            text_pair = None  # transformers treats a single empty pair as no pair
        if text_pair is not None:
            pairs = list(text_pair) if batched else [text_pair]
            if batched and isinstance(text_pair, str):
                raise TypeError("for a batch of texts, text_pair must be a list of the same length, not a string")
            if len(pairs) != len(texts):
                raise ValueError(f"text has {len(texts)} items but text_pair has {len(pairs)}")
            self._check_texts("text_pair", pairs, is_split_into_words)
            inputs = list(zip(texts, pairs))
        else:
            inputs = texts

        padding_strategy, truncation_strategy, max_length = self._strategies(padding, truncation, max_length,
                                                                             pad_to_multiple_of)
        if truncation_strategy is not None:
            self._check_truncation_room(max_length, stride, add_special_tokens, text_pair is not None,
                                        return_overflowing_tokens)
        self._configure_backend(padding_strategy, truncation_strategy, max_length, stride, pad_to_multiple_of,
                                padding_side, truncation_side)
        split = self.split_special_tokens if split_special_tokens is None else bool(split_special_tokens)
        if self._tokenizer.encode_special_tokens != split:
            self._tokenizer.encode_special_tokens = split
        try:
            encodings = self._tokenizer.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                                     is_pretokenized=is_split_into_words)
        except Exception as err:  # the Rust side raises a bare Exception; say which settings caused it
            raise ValueError(f"tokenizing failed with truncation={truncation_strategy}, max_length={max_length}, "
                             f"padding={padding_strategy}: {err}") from None
        except BaseException as err:
            # A Rust panic (pyo3's PanicException is no Exception): a pair truncated so far that one text
            # keeps fewer tokens than `stride`, which transformers lets crash the call.
            if type(err).__name__ != "PanicException":
                raise
            raise ValueError(f"cannot truncate to max_length={max_length} with stride={stride}: {err}. Truncating "
                             "a pair leaves each text part of max_length; use a smaller stride, a larger max_length "
                             "or truncation='only_first' / 'only_second'") from None
        if return_overflowing_tokens:
            groups = [[e, *e.overflowing] for e in encodings]
            mapping = [i for i, group in enumerate(groups) for _ in group]
            encodings = [e for group in groups for e in group]

        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        data = {"input_ids": [e.ids for e in encodings]}
        if return_token_type_ids:
            data["token_type_ids"] = [e.type_ids for e in encodings]
        if return_attention_mask:
            data["attention_mask"] = [e.attention_mask for e in encodings]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        if return_offsets_mapping:
            data["offset_mapping"] = [e.offsets for e in encodings]
        if return_length:
            data["length"] = [len(e.ids) for e in encodings]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = mapping
        elif not batched and return_tensors is None:  # as transformers: only per-token lists lose the batch level
            data = {key: value[0] if value and isinstance(value[0], list) else value for key, value in data.items()}
        return BatchEncoding(data, encodings, tensor_type=return_tensors)

    @staticmethod
    def _is_batched(text, is_split_into_words):
        if is_split_into_words:
            return isinstance(text, (list, tuple)) and len(text) > 0 and isinstance(text[0], (list, tuple))
        return isinstance(text, (list, tuple))

    @staticmethod
    def _check_texts(name, texts, is_split_into_words):
        for i, item in enumerate(texts):
            if is_split_into_words:
                ok = isinstance(item, (list, tuple)) and all(isinstance(w, str) for w in item)
                expected = "a list of words (strings)"
            elif name == "text" and isinstance(item, tuple) and len(item) == 2:
                ok = all(isinstance(part, str) for part in item)  # (text, text_pair) given as one item
                expected = "a string or a (text, text_pair) pair of strings"
            else:
                ok = isinstance(item, str)
                expected = "a string"
            if not ok:
                raise TypeError(f"{name}[{i}] is {type(item).__name__} ({item!r:.60}), expected {expected}")

    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        """transformers' rules for turning padding / truncation / max_length into what to do."""
        if padding not in PADDING_STRATEGIES:
            raise ValueError(f"padding must be one of {list(PADDING_STRATEGIES)}, got {padding!r}")
        if truncation not in TRUNCATION_STRATEGIES:
            raise ValueError(f"truncation must be one of {list(TRUNCATION_STRATEGIES)}, got {truncation!r}")
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # max_length alone means truncate to it
        padding_strategy = PADDING_STRATEGIES[padding]
        truncation_strategy = TRUNCATION_STRATEGIES[truncation]
        if max_length is None:
            limited = self.model_max_length <= LARGE_INTEGER
            if padding_strategy == "max_length":
                padding_strategy = padding_strategy if limited else None
                max_length = self.model_max_length if limited else None
            if truncation_strategy is not None:
                truncation_strategy = truncation_strategy if limited else None
                max_length = self.model_max_length if limited else max_length
        if padding_strategy is not None and (self.pad_token is None or self.pad_token_id is None):
            raise ValueError(
                "Asking to pad but the tokenizer has no padding token. Set one first, for example "
                "`tokenizer.pad_token = tokenizer.eos_token`, or add one with "
                "`tokenizer.add_special_tokens({'pad_token': '[PAD]'})`."
            )
        if (truncation_strategy and padding_strategy and pad_to_multiple_of and max_length
                and max_length % pad_to_multiple_of):
            raise ValueError(f"truncation length {max_length} is not a multiple of pad_to_multiple_of="
                             f"{pad_to_multiple_of}, so padding would exceed it")
        return padding_strategy, truncation_strategy, max_length

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens encoding adds to one sequence (or to a pair)."""
        post = self._tokenizer.post_processor
        return 0 if post is None else post.num_special_tokens_to_add(pair)

    def _check_truncation_room(self, max_length, stride, add_special_tokens, pair, overflowing):
        """Refuse a max_length the special tokens alone fill, and a stride that leaves no room to advance.

        transformers silently leaves such inputs untruncated (or fails in Rust with a bare message)."""
        special = self.num_special_tokens_to_add(pair) if add_special_tokens else 0
        room = max_length - special
        if room <= 0:
            raise ValueError(
                f"max_length={max_length} leaves no room for text: the special tokens alone take {special}. "
                f"Use max_length > {special}, or add_special_tokens=False."
            )
        if stride and stride >= room:
            raise ValueError(
                f"stride={stride} must be smaller than max_length={max_length} minus the {special} special tokens "
                f"(= {room}), or the overflowing windows would never advance; use a smaller stride or a larger "
                "max_length."
            )

    def _configure_backend(self, padding_strategy, truncation_strategy, max_length, stride, pad_to_multiple_of,
                           padding_side, truncation_side=None):
        if truncation_strategy is None:
            self._tokenizer.no_truncation()
        else:
            side = self._check_side("truncation_side", truncation_side or self.truncation_side)
            self._tokenizer.enable_truncation(max_length, stride=stride, strategy=truncation_strategy,
                                              direction=side)
        if padding_strategy is None:
            self._tokenizer.no_padding()
        else:
            side = self._check_side("padding_side", padding_side or self.padding_side)
            self._tokenizer.enable_padding(
                direction=side, pad_id=self.pad_token_id, pad_type_id=0, pad_token=self.pad_token,
                length=max_length if padding_strategy == "max_length" else None,
                pad_to_multiple_of=pad_to_multiple_of,
            )

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding=False, truncation=None,
               max_length=None, return_tensors=None, **kwargs):
        """The ids of one text (a list, or a (1, T) tensor with return_tensors)."""
        if not isinstance(text, str) and not kwargs.get("is_split_into_words"):
            raise TypeError(f"encode takes one string, got {type(text).__name__}; call the tokenizer for a batch")
        out = self(text, text_pair=text_pair, add_special_tokens=add_special_tokens, padding=padding,
                   truncation=truncation, max_length=max_length, return_tensors=return_tensors, **kwargs)
        return out["input_ids"]

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs) -> list[str]:
        return self(text, text_pair=pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    def pad(self, encoded_inputs, padding=True, max_length=None, pad_to_multiple_of=None, padding_side=None,
            return_attention_mask=None, return_tensors=None, verbose=True) -> BatchEncoding:
        """Pad already-tokenized inputs (a dict of lists, or a list of dicts as a collator gets them)."""
        check_tensor_type(return_tensors)
        if isinstance(encoded_inputs, (list, tuple)):
            if not encoded_inputs or not isinstance(encoded_inputs[0], dict):
                raise TypeError("pad takes a dict of lists or a list of dicts with 'input_ids'")
            encoded_inputs = {key: [f[key] for f in encoded_inputs] for key in encoded_inputs[0]}
        if "input_ids" not in encoded_inputs:
            raise ValueError(f"pad needs 'input_ids'; got {list(encoded_inputs)}")
        if return_tensors is None:  # ids given as tensors (or arrays) come back as tensors (arrays)
            return_tensors = tensor_type_of(encoded_inputs["input_ids"])
        encoded_inputs = {key: to_plain_list(value) for key, value in encoded_inputs.items()}
        single = bool(encoded_inputs["input_ids"]) and isinstance(encoded_inputs["input_ids"][0], int)
        if single:
            encoded_inputs = {key: [value] for key, value in encoded_inputs.items()}
        ids = encoded_inputs["input_ids"]
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if return_attention_mask and "attention_mask" not in encoded_inputs:
            encoded_inputs["attention_mask"] = [[1] * len(row) for row in ids]
        strategy = PADDING_STRATEGIES.get(padding, "invalid")
        if strategy == "invalid":
            raise ValueError(f"padding must be one of {list(PADDING_STRATEGIES)}, got {padding!r}")
        if strategy is not None:
            if self.pad_token_id is None:
                raise ValueError("Asking to pad but the tokenizer has no padding token. Set one first, for example "
                                 "`tokenizer.pad_token = tokenizer.eos_token`.")
            target = max((len(row) for row in ids), default=0)
            if strategy == "max_length":
                target = max_length if max_length is not None else self.model_max_length
            if pad_to_multiple_of and target % pad_to_multiple_of:
                target += pad_to_multiple_of - target % pad_to_multiple_of
            side = self._check_side("padding_side", padding_side or self.padding_side)
            fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "token_type_ids": 0,
                    "special_tokens_mask": 1}
            for key, value in fill.items():
                if key in encoded_inputs:
                    encoded_inputs[key] = [pad_row(row, target, value, side) for row in encoded_inputs[key]]
        if single:  # one example stays one example, tensors included
            encoded_inputs = {key: value[0] for key, value in encoded_inputs.items()}
        return BatchEncoding(encoded_inputs, tensor_type=return_tensors)

    # -- decoding --------------------------------------------------------------------------------------
    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs):
        """Text of a sequence of ids (list, tuple, tensor, array); a batch of sequences gives a list of texts."""
        ids = to_id_list(token_ids)
        if isinstance(ids, int):
            ids = [ids]
        if ids and isinstance(ids[0], list):
            return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in ids]
        text = self._tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        clean = self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces
        # The clean-up is for WordPiece output; on BPE it would delete real spaces before punctuation.
        if clean and type(self._tokenizer.model).__name__ != "BPE":
            text = clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None,
                     **kwargs) -> list[str]:
        rows = to_id_list(sequences)
        if rows and not isinstance(rows[0], list):
            rows = [rows]
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in rows]

    # -- chat templates --------------------------------------------------------------------------------
    def get_chat_template(self, chat_template=None, tools=None) -> str:
        """The template to render: `chat_template` (a template, or the name of one of this tokenizer's
        named templates), else this tokenizer's template ("tool_use" when tools are given and it has one)."""
        templates = self.chat_template
        if isinstance(templates, dict):
            if chat_template in templates:
                return templates[chat_template]
            if chat_template is None:
                name = "tool_use" if tools is not None and "tool_use" in templates else "default"
                if name not in templates:
                    raise ValueError(f"this tokenizer has the chat templates {sorted(templates)} and none is "
                                     "'default'; pick one with chat_template=<name>")
                return templates[name]
        template = chat_template if chat_template is not None else templates
        if not template:
            raise ValueError(
                f"the tokenizer {self.name_or_path!r} has no chat template, so apply_chat_template cannot format "
                "a conversation. Set tokenizer.chat_template to a Jinja template, or pass chat_template=."
            )
        return template

    def apply_chat_template(self, conversation, tools=None, documents=None, chat_template=None,
                            add_generation_prompt: bool = False, continue_final_message=False, tokenize: bool = True,
                            padding=False, truncation: bool = False, max_length=None, return_tensors=None,
                            return_dict: bool = True, return_assistant_tokens_mask: bool = False,
                            tokenizer_kwargs=None, **template_kwargs):
        """Render a conversation (or a list of them) with the chat template.

        tokenize=False gives the text; otherwise a BatchEncoding (return_dict=True, transformers v5's default)
        or the ids (return_dict=False). The rendered text already holds the special tokens the template
        writes, so it is tokenized with add_special_tokens=False: no second BOS.

        return_assistant_tokens_mask adds "assistant_masks": 1 on the tokens of the assistant replies. With
        {% generation %} blocks the blocks say where replies are (as in transformers); without them each
        assistant message's content is found in the rendered chat message by message, and the end-of-turn
        token after it is included (transformers returns an all-zero mask there).
        """
        if not tokenize:
            return_dict = False
        if return_assistant_tokens_mask and not (tokenize and return_dict):
            raise ValueError("return_assistant_tokens_mask=True needs tokenize=True and return_dict=True")
        template = self.get_chat_template(chat_template, tools)
        if continue_final_message and add_generation_prompt:
            raise ValueError("continue_final_message and add_generation_prompt cannot both be set: one continues "
                             "the last message, the other starts a new assistant message")
        if continue_final_message and return_assistant_tokens_mask:
            raise ValueError("continue_final_message cannot be combined with return_assistant_tokens_mask")
        if isinstance(conversation, (list, tuple)) and len(conversation) == 0:
            raise ValueError("cannot apply a chat template to an empty conversation; give at least one message")
        batched = isinstance(conversation, (list, tuple)) and isinstance(conversation[0], (list, tuple))
        conversations = list(conversation) if batched else [conversation]
        conversations = [check_conversation(c, i if batched else None) for i, c in enumerate(conversations)]
        tools = self._check_tools(tools)
        compiled = compile_chat_template(template)
        variables = plain_template_data({**self.special_tokens_map, **template_kwargs})
        variables.update(tools=tools, documents=plain_template_data(documents))
        field = continue_final_message if isinstance(continue_final_message, str) else "content"
        tracked = return_assistant_tokens_mask and has_generation_blocks(template)
        end_markers = sorted((t.content for t in self.added_tokens_decoder.values() if t.special), key=len,
                             reverse=True)
        rendered, all_spans = [], []
        for messages in conversations:
            final_text = tag_final_message(messages, field) if continue_final_message else None
            if tracked:
                text, spans = render_tracking_generation(compiled, messages=messages,
                                                         add_generation_prompt=add_generation_prompt, **variables)
            else:
                text = compiled.render(messages=messages, add_generation_prompt=add_generation_prompt, **variables)
                if return_assistant_tokens_mask:
                    def render(part):
                        return compiled.render(messages=part, add_generation_prompt=False, **variables)
                    spans = assistant_spans_by_message(render, messages, text, end_markers)
            rendered.append(cut_after_final_message(text, final_text) if continue_final_message else text)
            if return_assistant_tokens_mask:
                all_spans.append(spans)
        if not tokenize:
            return rendered if batched else rendered[0]
        out = self(rendered if batched else rendered[0], add_special_tokens=False, padding=padding,
                   truncation=truncation, max_length=max_length, return_tensors=return_tensors,
                   **(tokenizer_kwargs or {}))
        if not return_dict:
            return out["input_ids"]
        if return_assistant_tokens_mask:
            masks = [token_mask_from_spans(e.offsets, spans) for e, spans in zip(out.encodings, all_spans)]
            out["assistant_masks"] = masks if batched or return_tensors else masks[0]
            if return_tensors:
                out.convert_to_tensors(return_tensors)
        return out

    @staticmethod
    def _check_tools(tools):
        """Tools as JSON-schema dicts; Python functions are described from their signature and docstring."""
        if tools is None:
            return None
        schemas = []
        for i, tool in enumerate(tools):
            if isinstance(tool, dict):
                schemas.append(tool)
            elif callable(tool):
                schemas.append(get_json_schema(tool))
            else:
                raise TypeError(f"tools[{i}] is {type(tool).__name__}; pass each tool as a JSON-schema dict "
                                "({'type': 'function', 'function': {'name': ..., 'parameters': ...}}) or as a "
                                "Python function with type hints and a Google-style docstring")
        return plain_template_data(schemas)

    # -- training ------------------------------------------------------------------------------------
    def train_new_from_iterator(self, text_iterator, vocab_size: int, length: int | None = None,
                                 new_special_tokens=None, special_tokens_map: dict | None = None, **trainer_kwargs):
        """A tokenizer of the same kind (model, normalizer, pre-tokenizer, decoder, special tokens) trained anew.

        `text_iterator` yields texts or batches (lists) of texts. `special_tokens_map` renames special tokens
        ({"</s>": "<|end|>"}), `new_special_tokens` adds more; other keyword arguments go to the `tokenizers`
        trainer (min_frequency, show_progress, ...).
        """
        rename = special_tokens_map or {}
        data = json.loads(self._tokenizer.to_str())
        added = data.pop("added_tokens")
        post_processor = data.pop("post_processor")
        model = data["model"]
        kind = model["type"]
        if kind not in TRAINERS:
            raise ValueError(f"cannot train a {kind} tokenizer; train_new_from_iterator supports {', '.join(TRAINERS)}")
        unk = None
        if kind == "BPE":
            model["vocab"], model["merges"] = {}, []
        elif kind == "Unigram":
            if model.get("unk_id") is not None:
                unk = rename.get(model["vocab"][model["unk_id"]][0], model["vocab"][model["unk_id"]][0])
                model["unk_id"], model["vocab"] = 0, [[unk, 0.0]]
        else:
            model["vocab"] = {}
        if model.get("unk_token") in rename:
            model["unk_token"] = rename[model["unk_token"]]
        backend = Tokenizer.from_str(json.dumps(data))

        special = [AddedToken(rename.get(t["content"], t["content"]), single_word=t["single_word"], lstrip=t["lstrip"],
                              rstrip=t["rstrip"], normalized=t["normalized"], special=True)
                   for t in added if t["special"] or kind == "Unigram"]
        special += [t if isinstance(t, AddedToken) else AddedToken(t, special=True, normalized=False)
                    for t in new_special_tokens or []]
        if kind == "BPE":
            for key in ("continuing_subword_prefix", "end_of_word_suffix"):
                if model.get(key) is not None:
                    trainer_kwargs.setdefault(key, model[key])
        if kind == "Unigram" and unk is not None:
            trainer_kwargs.setdefault("unk_token", unk)
        if uses_byte_level(data.get("pre_tokenizer")):
            trainer_kwargs.setdefault("initial_alphabet", pre_tokenizers.ByteLevel.alphabet())
        trainer = TRAINERS[kind](vocab_size=vocab_size, special_tokens=special, **trainer_kwargs)
        backend.train_from_iterator(text_iterator, trainer=trainer, length=length)

        if post_processor is not None:
            renumber_post_processor(post_processor, backend, rename)
            trained = json.loads(backend.to_str())
            trained["post_processor"] = post_processor
            backend = Tokenizer.from_str(json.dumps(trained))

        config = {k: v for k, v in self.tokenizer_config().items() if k != "added_tokens_decoder"}
        for name in SPECIAL_TOKEN_NAMES:
            if config.get(name) is not None:
                config[name] = rename.get(config[name], config[name])
        extra = [rename.get(t, t) for t in self._extra_special_tokens]
        extra += [token_content(t) for t in new_special_tokens or []]
        if extra:
            config["extra_special_tokens"] = list(dict.fromkeys(extra))
        if self.chat_template:
            config["chat_template"] = copy.deepcopy(self.chat_template)
        return type(self)(tokenizer_object=backend, name_or_path=self.name_or_path, **config)

    # -- saving ----------------------------------------------------------------------------------------
    def tokenizer_config(self) -> dict:
        """What tokenizer_config.json holds for this tokenizer."""
        config = {k: v for k, v in copy.deepcopy(self.init_kwargs).items() if k not in SPECIAL_TOKEN_NAMES}
        for key in ("additional_special_tokens", "extra_special_tokens", "chat_template"):
            config.pop(key, None)
        config.update({
            "added_tokens_decoder": {str(i): added_token_dict(t) for i, t in self.added_tokens_decoder.items()},
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "model_input_names": list(self.model_input_names),
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "tokenizer_class": self.tokenizer_class,
        })
        if self._manage_post_processor:  # else the post-processor in tokenizer.json decides, and must stay
            config.update(add_bos_token=self.add_bos_token, add_eos_token=self.add_eos_token)
        config.update({name: token for name, token in self._special_tokens.items() if token is not None})
        if self._extra_special_tokens:
            config["extra_special_tokens"] = list(self._extra_special_tokens)
        if self.chat_template:
            template = self.chat_template
            config["chat_template"] = ([{"name": k, "template": v} for k, v in template.items()]
                                       if isinstance(template, dict) else template)
        return config

    def save_pretrained(self, save_directory, **kwargs) -> tuple[str, ...]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, each atomically.

        Everything is serialized before the first file is written, so a value that cannot be saved
        leaves the folder as it was.
        """
        save_directory = Path(save_directory)
        if save_directory.is_file():
            raise ValueError(f"save_pretrained needs a directory, but {save_directory} is a file")
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        files = {
            TOKENIZER_FILE: self._tokenizer.to_str(pretty=True),
            TOKENIZER_CONFIG_FILE: dump_json(self.tokenizer_config(), TOKENIZER_CONFIG_FILE),
            SPECIAL_TOKENS_MAP_FILE: dump_json(self.special_tokens_map, SPECIAL_TOKENS_MAP_FILE),
        }
        added = {t: i for t, i in self.added_tokens_encoder.items() if i >= self.vocab_size}
        if added:  # the legacy list older loaders read added tokens from
            files[ADDED_TOKENS_FILE] = dump_json(added, ADDED_TOKENS_FILE)
        save_directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, text in files.items():
            write_atomic(save_directory / name, text.encode("utf-8"))
            written.append(str(save_directory / name))
        return tuple(written)

    def __repr__(self):
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
                f"special_tokens={self.special_tokens_map})")


def _special_token_property(name):
    return property(lambda self: self._get_special(name), lambda self, value: self._set_special(name, value),
                    doc=f"The {name.replace('_', ' ')} as a string, or None.")


def _special_id_property(name):
    return property(lambda self: self._get_special_id(name), lambda self, value: self._set_special_id(name, value),
                    doc=f"The id of the {name.replace('_', ' ')}, or None.")


for _name in SPECIAL_TOKEN_NAMES:
    setattr(PreTrainedTokenizer, _name, _special_token_property(_name))
    setattr(PreTrainedTokenizer, f"{_name}_id", _special_id_property(_name))


def pad_row(row: list, target: int, value, side: str) -> list:
    fill = [value] * max(target - len(row), 0)
    return row + fill if side == "right" else fill + row


def added_token_dict(token: AddedToken) -> dict:
    return {"content": token.content, "lstrip": token.lstrip, "normalized": token.normalized,
            "rstrip": token.rstrip, "single_word": token.single_word, "special": token.special}


def dump_json(data, name) -> str:
    try:
        return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    except TypeError as err:
        raise TypeError(f"cannot save {name}: {err}") from None


def clean_up_tokenization(text: str) -> str:
    """Undo the spaces WordPiece decoding puts before punctuation and contractions."""
    for spaced, joined in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                           (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(spaced, joined)
    return text


PreTrainedTokenizerFast = PreTrainedTokenizer
# The family names: from_pretrained reads tokenizer.json, or builds the family's tokenizer from vocab files.
BertTokenizer = BertTokenizerFast = GPT2Tokenizer = GPT2TokenizerFast = PreTrainedTokenizer


class AutoTokenizer:
    """AutoTokenizer.from_pretrained: every tokenizer here is a PreTrainedTokenizer."""

    def __init__(self):
        raise TypeError("AutoTokenizer is not instantiated; use AutoTokenizer.from_pretrained(name_or_path)")

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *inputs, gguf_file=None, **kwargs) -> PreTrainedTokenizer:
        return PreTrainedTokenizer.from_pretrained(pretrained_model_name_or_path, *inputs, gguf_file=gguf_file,
                                                   **kwargs)
