"""Tokenizers: a PreTrainedTokenizer over the Rust `tokenizers` library, BatchEncoding, chat templates.

A tokenizer comes from a folder (tokenizer.json + tokenizer_config.json + special_tokens_map.json +
added_tokens.json + chat_template.jinja, as transformers writes them; or a SentencePiece tokenizer.model),
or from a GGUF file's metadata (byte-level BPE pre-tokenized the way llama.cpp reads `tokenizer.ggml.pre`,
or a SentencePiece 'llama' vocabulary). The Rust tokenizer does the work; this package keeps the settings
transformers keeps beside it (special tokens, padding side, model_max_length, chat template), turns
encodings into the dicts, lists and tensors transformers returns, renders chat templates in jinja2's
sandbox (with assistant-token masks), trains new tokenizers of the same kind and decodes incrementally
for streaming.

The rooms, each importing only from the ones above it:
    folder.py              the files of a tokenizer folder, and reading its settings
    from_sentencepiece.py  a backend from a SentencePiece tokenizer.model (and the SentencePiece pipeline)
    from_gguf.py           a backend from a GGUF file's tokenizer metadata
    from_vocab_files.py    a backend from vocab.txt (BERT) or vocab.json + merges.txt (GPT-2)
    batch_encoding.py      BatchEncoding, what a tokenizer returns, and tensors made from lists
    chat_template.py       jinja2 sandbox, conversation checks, assistant masks, continue_final_message
    tool_schema.py         get_json_schema: a tool's JSON schema from a Python function
    train_new.py           the trainers and post-processor renumbering train_new_from_iterator uses
    tokenizer.py           PreTrainedTokenizer, AutoTokenizer and the transformers class names
    incremental.py         IncrementalDecoder, for streaming

Public names only; nothing lives here.
"""

from .batch_encoding import BatchEncoding
from .incremental import IncrementalDecoder
from .tokenizer import (AutoTokenizer, BertTokenizer, BertTokenizerFast, GPT2Tokenizer, GPT2TokenizerFast,
                        PreTrainedTokenizer, PreTrainedTokenizerFast)
from .tool_schema import get_json_schema
