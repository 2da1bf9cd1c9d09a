"""Arrow-backed datasets (Dataset, DatasetDict, IterableDataset, load_dataset), data collators and
fine-tuning data recipes. Knows no model: recipes and collators take the tokenizer they use."""

from .arrow_dataset import Dataset, concatenate_datasets, load_from_disk
from .dataset_dict import DatasetDict
from .fingerprint import UnhashableError
from .iterable import IterableDataset, IterableDatasetDict
from .load import load_dataset
