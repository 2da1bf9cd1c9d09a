"""Arrow-backed datasets (Dataset, DatasetDict, IterableDataset, load_dataset), data collators and
fine-tuning data recipes. Knows no model: recipes and collators take the tokenizer they use."""

from .arrow_dataset import Dataset, concatenate_datasets, interleave_datasets, load_from_disk
from .dataset_dict import DatasetDict
from .features import ClassLabel, Features, LargeList, List, Sequence, Value
from .fingerprint import UnhashableError
from .iterable import IterableDataset, IterableDatasetDict
from .load import load_dataset
from .collators import (DataCollatorForLanguageModeling, DataCollatorForSeq2Seq, DataCollatorWithPadding,
                        default_data_collator)
from .sft import (DataCollatorForPacking, group_texts, lm_blocks, pack_examples, packed_attention_mask,
                  prompt_completion_dataset, tokenize_messages, tokenize_prompt_completion, chat_dataset)
