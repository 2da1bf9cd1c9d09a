"""Configuration names in load_dataset, against `datasets` on the same folder laid out as the hub
cache lays out a dataset repo (datasets--org--name/snapshots/<commit>/...). datasets cannot read a
hub id from that cache offline, so the oracle reads the snapshot folder itself: the same rules apply."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import datasets
from leanformers import load_dataset

CONFIGS = {"mrpc": 3, "rte": 2}
CARD = """---
configs:
- config_name: mrpc
  data_files:
  - split: train
    path: mrpc/train-*
  - split: validation
    path: mrpc/validation-*
- config_name: rte
  data_dir: rte
---
# glue
"""


def rows(config, split, n):
    return [{"sentence1": f"{config} {split} {i}", "label": i % 2, "idx": i} for i in range(n)]


def hub_repo(tmp_path, monkeypatch, card=CARD):
    """A glue-like dataset repo in a Hugging Face cache; returns its snapshot folder."""
    repo = tmp_path / "hub" / "datasets--someorg--glue"
    snapshot = repo / "snapshots" / "0123abcd"
    for config, n in CONFIGS.items():
        (snapshot / config).mkdir(parents=True)
        for split in ("train", "validation"):
            pq.write_table(pa.Table.from_pylist(rows(config, split, n)),
                           snapshot / config / f"{split}-00000-of-00001.parquet")
    if card is not None:
        (snapshot / "README.md").write_text(card)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return snapshot


def oracle(tmp_path, *args, **kwargs):
    return datasets.load_dataset(*args, cache_dir=str(tmp_path / "hf-cache"), **kwargs)


def same_splits(ours, theirs):
    assert list(ours) == list(theirs)
    for split in theirs:
        assert ours[split].column_names == theirs[split].column_names
        for a, b in zip(ours[split].to_list(), theirs[split].to_list(), strict=True):
            assert a == b


@pytest.mark.parametrize("name", ["mrpc", "rte"])
def test_config_name_picks_its_files_as_datasets(tmp_path, monkeypatch, name):
    snapshot = hub_repo(tmp_path, monkeypatch)
    ours = load_dataset("someorg/glue", name)
    same_splits(ours, oracle(tmp_path, str(snapshot), name))
    assert ours["train"].num_rows == CONFIGS[name]
    assert {row["sentence1"].split()[0] for row in ours["train"]} == {name}


def test_config_name_keyword_and_split(tmp_path, monkeypatch):
    snapshot = hub_repo(tmp_path, monkeypatch)
    ours = load_dataset("someorg/glue", name="rte", split="validation")
    theirs = oracle(tmp_path, str(snapshot), name="rte", split="validation")
    assert ours.to_list() == theirs.to_list()


def test_unknown_config_lists_the_available_ones(tmp_path, monkeypatch):
    snapshot = hub_repo(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=r"'nope' not found. Available: \['mrpc', 'rte'\]") as theirs:
        oracle(tmp_path, str(snapshot), "nope")
    with pytest.raises(ValueError, match=r"'nope' not found. Available: \['mrpc', 'rte'\]") as ours:
        load_dataset("someorg/glue", "nope")
    assert type(ours.value) is type(theirs.value)
    assert sorted(p.name for p in snapshot.iterdir()) == ["README.md", "mrpc", "rte"]  # nothing written there


def test_missing_config_name_lists_configs_as_datasets(tmp_path, monkeypatch):
    snapshot = hub_repo(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match="Config name is missing") as theirs:
        oracle(tmp_path, str(snapshot))
    with pytest.raises(ValueError, match=r"Config name is missing.*\['mrpc', 'rte'\]"):
        load_dataset("someorg/glue")
    assert "['mrpc', 'rte']" in str(theirs.value)


def test_default_config_is_read_without_a_name(tmp_path, monkeypatch):
    card = CARD.replace("- config_name: rte\n", "- config_name: rte\n  default: true\n")
    snapshot = hub_repo(tmp_path, monkeypatch, card)
    ours = load_dataset("someorg/glue")
    same_splits(ours, oracle(tmp_path, str(snapshot)))
    assert ours["train"].num_rows == CONFIGS["rte"]


def test_no_card_data_dir_picks_a_folder_and_a_name_is_refused(tmp_path, monkeypatch):
    snapshot = hub_repo(tmp_path, monkeypatch, card=None)
    ours = load_dataset("someorg/glue", data_dir="mrpc")
    same_splits(ours, oracle(tmp_path, str(snapshot), data_dir="mrpc"))
    assert ours["train"].num_rows == CONFIGS["mrpc"]
    everything = load_dataset("someorg/glue")
    same_splits(everything, oracle(tmp_path, str(snapshot)))  # both folders, as datasets reads them
    with pytest.raises(ValueError, match=r"'mrpc' not found. Available: \['default'\]"):
        oracle(tmp_path, str(snapshot), "mrpc")
    with pytest.raises(ValueError, match=r"'mrpc' not found. Available: \['default'\].*data_dir='mrpc'"):
        load_dataset("someorg/glue", "mrpc")


def test_config_reader_options_come_from_the_card(tmp_path):
    folder = tmp_path / "semi"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.csv").write_text("a;b\n1;x\n2;\n")
    (folder / "README.md").write_text("---\nconfigs:\n- config_name: semi\n  data_files: data/train.csv\n"
                                      "  sep: ';'\n---\n")
    ours = load_dataset(str(folder), "semi")
    theirs = oracle(tmp_path, str(folder), "semi")
    assert ours["train"].to_list() == theirs["train"].to_list()
    assert ours["train"].to_list() == [{"a": 1, "b": "x"}, {"a": 2, "b": None}]
