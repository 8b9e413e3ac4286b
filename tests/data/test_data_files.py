"""User data files (CSV, TSV, JSONL): label-kind inference, splits, and every bad-input message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from readapt.data import DataError, Example, TaskSpec, load_task
from readapt.data.files import read_table


def write_csv(path: Path, header: str, *lines: str) -> Path:
    path.write_text("\n".join((header, *lines)) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, *records) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n",
                    encoding="utf-8")
    return path


def sentiment_csv(path: Path, n: int = 20) -> Path:
    return write_csv(path, "text,label", *(f"review {i},{'pos' if i % 2 else 'neg'}" for i in range(n)))


def error_of(**kwargs) -> str:
    with pytest.raises(DataError) as err:
        load_task(None, **kwargs)
    message = str(err.value)
    assert "\n" not in message
    return message


# ---- good files ----------------------------------------------------------------------------------
def test_csv_string_classes_with_carved_validation(tmp_path):
    data = load_task(None, train_file=sentiment_csv(tmp_path / "train.csv"))
    assert data.spec == TaskSpec("files", ("neg", "pos"), ("accuracy", "f1"), ("text",))
    assert (len(data.train), len(data.validation), data.test) == (18, 2, None)
    everything = sorted(data.train + data.validation, key=lambda ex: int(ex.texts[0].split()[1]))
    assert everything[:2] == [Example(("review 0",), 0), Example(("review 1",), 1)]
    assert load_task("files", train_file=tmp_path / "train.csv").validation == data.validation
    assert load_task("files", train_file=tmp_path / "train.csv", split_seed=5).validation != data.validation


def test_validation_test_files_and_budget_cut(tmp_path):
    train = sentiment_csv(tmp_path / "train.csv", n=40)
    dev = write_csv(tmp_path / "dev.csv", "text,label", "good,pos", "bad,neg")
    test = write_csv(tmp_path / "test.csv", "label,text,extra", "neg,awful,x")
    data = load_task(None, train_file=train, validation_file=dev, test_file=test, max_train_examples=7)
    assert len(data.train) == 7
    assert data.validation == [Example(("good",), 1), Example(("bad",), 0)]
    assert data.test == [Example(("awful",), 0)]


def test_tsv_pairs_integer_classes_sorted_numerically(tmp_path):
    rows = [f'q{i} "quoted\tanswer {i}\t{[1, 2, 10][i % 3]}' for i in range(9)]
    train = write_csv(tmp_path / "train.tsv", "question\tanswer\ty", *rows)
    data = load_task(None, train_file=train, validation_file=train, text_columns=["question", "answer"],
                     label_column="y")
    assert data.spec.label_names == ("1", "2", "10") and data.spec.metrics == ("accuracy",)
    assert data.spec.text_names == ("question", "answer")
    assert data.validation[0] == Example(('q0 "quoted', "answer 0"), 0)
    assert [ex.label for ex in data.validation[:3]] == [0, 1, 2]


def test_jsonl_numbers(tmp_path):
    ints = write_jsonl(tmp_path / "ints.jsonl", {"text": "a", "label": 0}, "", {"text": "b", "label": 1.0},
                       {"text": "c", "label": "1"})
    data = load_task(None, train_file=ints, validation_file=ints)
    assert data.spec.label_names == ("0", "1")
    assert [ex.label for ex in data.validation] == [0, 1, 1]

    scores = write_jsonl(tmp_path / "scores.json-lines", {"text": "a", "label": 0.5}, {"text": "b", "label": 3},
                         {"text": "c", "label": "4.25"})
    data = load_task(None, train_file=scores, validation_file=scores)
    assert data.spec.is_regression and data.spec.metrics == ("pearson", "spearmanr")
    assert [ex.label for ex in data.validation] == [0.5, 3.0, 4.25]
    assert all(type(ex.label) is float for ex in data.validation)


def test_csv_header_bom_spaces_and_quoted_newlines(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text('\ufefftext , label\n"line one\nline two",a\nsecond,b\n', encoding="utf-8")
    data = load_task(None, train_file=path, validation_file=path)
    assert data.validation == [Example(("line one\nline two",), 0), Example(("second",), 1)]


# ---- bad inputs: each message names the problem and the fix -------------------------------------
def test_unsupported_extension(tmp_path):
    message = error_of(train_file=tmp_path / "train.parquet")
    assert "unsupported extension '.parquet'" in message and ".csv, .tsv, .jsonl" in message


def test_missing_file_and_folder(tmp_path):
    message = error_of(train_file=tmp_path / "nope.csv")
    assert str(tmp_path / "nope.csv") in message and "does not exist" in message and "--train-file" in message
    (tmp_path / "dir.csv").mkdir()
    assert "is a folder" in error_of(train_file=tmp_path / "dir.csv")
    message = error_of(train_file=sentiment_csv(tmp_path / "t.csv"), test_file=tmp_path / "gone.jsonl")
    assert message.startswith("test file ") and "--test-file" in message


def test_empty_files(tmp_path):
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    assert "is empty" in error_of(train_file=tmp_path / "empty.csv")
    header_only = write_csv(tmp_path / "header.csv", "text,label")
    assert "has no data rows (columns: text, label); add examples" in error_of(train_file=header_only)
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    assert "is empty" in error_of(train_file=tmp_path / "blank.jsonl")


def test_not_utf8(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9,a\n".encode("latin-1"))
    assert "is not UTF-8 text" in error_of(train_file=path)


def test_missing_text_column_lists_columns(tmp_path):
    train = write_csv(tmp_path / "train.csv", "sentence,label", "a,x", "b,y")
    message = error_of(train_file=train)
    assert "has no column 'text' (columns: sentence, label)" in message and "--text-column" in message
    message = error_of(train_file=train, text_columns=["sentence", "other"])
    assert "has no column 'other' (columns: sentence, label)" in message


def test_missing_label_column_lists_columns(tmp_path):
    train = write_csv(tmp_path / "a.csv", "text,y", "a,1", "b,0")
    message = error_of(train_file=train)
    assert message == f"train file {train} has no column 'label' (columns: text, y); pass --label-column with the right name"


def test_validation_file_with_other_columns(tmp_path):
    dev = write_csv(tmp_path / "dev.csv", "sentence,label", "a,pos")
    message = error_of(train_file=sentiment_csv(tmp_path / "t.csv"), validation_file=dev)
    assert message.startswith(f"validation file {dev} has no column 'text' (columns: sentence, label)")


def test_text_column_count_and_overlap(tmp_path):
    train = sentiment_csv(tmp_path / "t.csv")
    assert "one or two column names, got 3" in error_of(train_file=train, text_columns=["a", "b", "c"])
    assert "both a text column and the label column" in error_of(train_file=train, label_column="text")


def test_mixed_label_types(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", "a,1", "b,2", "c,pos")
    message = error_of(train_file=train)
    assert "mixed label types" in message and "'c'" not in message and "'pos' on line 4" in message


def test_single_class(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", "a,pos", "b,pos")
    assert "only one class ('pos')" in error_of(train_file=train)


def test_unknown_validation_labels_name_known_classes(tmp_path):
    dev = write_csv(tmp_path / "dev.csv", "text,label", "a,pos", "b,neutral", "c,meh", "d,neutral")
    message = error_of(train_file=sentiment_csv(tmp_path / "t.csv"), validation_file=dev)
    assert "labels not seen in the train file: 'neutral' (line 3), 'meh' (line 4)" in message
    assert message.endswith("known classes: neg, pos")
    ints = write_csv(tmp_path / "ints.csv", "text,label", "a,0", "b,1")
    bad = write_csv(tmp_path / "bad.csv", "text,label", "a,2", "b,0.5")
    assert "'2' (line 2), '0.5' (line 3)" in error_of(train_file=ints, test_file=bad)


def test_regression_label_not_a_number(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", "a,0.5", "b,1.5")
    dev = write_csv(tmp_path / "dev.csv", "text,label", "a,0.5", "b,high")
    message = error_of(train_file=train, validation_file=dev)
    assert "line 3 has label 'high', which is not a number" in message


def test_missing_label_and_empty_text_name_the_line(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", "a,pos", "b,")
    assert "line 3 has no label in column 'label'" in error_of(train_file=train)
    train = write_csv(tmp_path / "t2.csv", "text,label", "a,pos", "  ,neg")
    assert "line 3 has an empty 'text'; fill in the text or remove the row" in error_of(train_file=train)
    short = write_csv(tmp_path / "t3.csv", "q,a,label", "x,y,pos", "x,neg")  # row lacks a field: strict rows
    assert "line 3 has 2 fields, the header has 3" in error_of(train_file=short, text_columns=["q", "a"])
    jsonl = write_jsonl(tmp_path / "t.jsonl", {"text": "a", "label": "x"}, {"label": "y"})
    assert "line 2 has an empty 'text'" in error_of(train_file=jsonl)
    jsonl = write_jsonl(tmp_path / "t2.jsonl", {"text": "a", "label": "x"}, {"text": "b", "label": None})
    assert "line 2 has no label" in error_of(train_file=jsonl)


def test_bad_jsonl_lines(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", {"text": "a", "label": "x"}, "", '{"text": "b", "label": ')
    assert "line 3 is not valid JSON" in error_of(train_file=path)
    path = write_jsonl(tmp_path / "t2.jsonl", {"text": "a", "label": "x"}, '["b", "y"]')
    assert "line 2 is a JSON list, not an object" in error_of(train_file=path)


def test_too_small_to_carve_validation(tmp_path):
    assert "too few to carve" in error_of(train_file=write_jsonl(tmp_path / "t.jsonl",
                                                                  {"text": "a", "label": 0.5}))


def test_read_table_keeps_line_numbers(tmp_path):
    table = read_table(write_jsonl(tmp_path / "t.jsonl", {"text": "a"}, "", {"text": "b", "x": 1}))
    assert table.columns == ["text", "x"] and [line for line, _ in table.rows] == [1, 3]


# ---- strict rows and exact labels (issue 12, item 5) -------------------------------------------------
def test_row_with_an_unquoted_comma_is_an_error_naming_the_line(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", "fine film,pos", "great film, loved it,pos", "bad,neg")
    message = error_of(train_file=train)
    assert message == (f"train file {train} line 3 has 3 fields, the header has 2; "
                       "quote fields that contain a comma")


def test_row_with_too_few_fields_names_the_line(tmp_path):
    train = write_csv(tmp_path / "t.tsv", "a\tb\tlabel", "x\ty\tpos", "x\ty\tneg", "only\tpos")
    assert "line 4 has 2 fields, the header has 3; every row needs one value per column" in error_of(
        train_file=train, text_columns=["a", "b"])


def test_line_of_a_row_after_a_quoted_newline(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label", '"two\nlines",pos', "b,neg,extra")
    assert "line 4 has 3 fields" in error_of(train_file=train)


def test_duplicate_header_names_are_an_error(tmp_path):
    train = write_csv(tmp_path / "t.csv", "text,label,label", "a,pos,neg", "b,neg,pos")
    assert error_of(train_file=train) == (f"train file {train} has duplicate column names in its header: "
                                          "'label'; give every column its own name")
    spaced = write_csv(tmp_path / "s.csv", "text, label,label ", "a,pos,neg")
    assert "duplicate column names in its header: 'label'" in error_of(train_file=spaced)


def test_huge_header_error_is_short(tmp_path):
    columns = [f"c{i}" for i in range(600_000)]
    train = write_csv(tmp_path / "wide.csv", ",".join(columns), ",".join("x" * len(columns)))
    message = error_of(train_file=train)
    assert "has no column 'text' (columns: c0, c1," in message and "(599990 more)" in message
    assert len(message) < 400


def test_integer_labels_above_2_to_the_53_stay_distinct(tmp_path):
    big = 2**53
    train = write_csv(tmp_path / "t.csv", "text,label", f"a,{big}", f"b,{big + 1}", f"c,{big + 2}")
    data = load_task(None, train_file=train, validation_file=train)
    assert data.spec.label_names == (str(big), str(big + 1), str(big + 2))
    assert [ex.label for ex in data.validation] == [0, 1, 2]
    jsonl = write_jsonl(tmp_path / "t.jsonl", {"text": "a", "label": big}, {"text": "b", "label": big + 1},
                        {"text": "c", "label": str(big + 1)}, {"text": "d", "label": "1e3"})
    data = load_task(None, train_file=jsonl, validation_file=jsonl)
    assert data.spec.label_names == ("1000", str(big), str(big + 1))
    assert [ex.label for ex in data.validation] == [1, 2, 2, 0]


@pytest.mark.parametrize("value, kind", [({"a": 1}, "object"), (5, "number"), (None, "null"), (["x"], "array"),
                                         (True, "boolean")])
def test_non_string_text_in_jsonl_names_the_line(tmp_path, value, kind):
    jsonl = write_jsonl(tmp_path / "t.jsonl", {"text": "fine", "label": "pos"}, {"text": value, "label": "neg"})
    assert error_of(train_file=jsonl) == (f"train file {jsonl} line 2 has a JSON {kind} in 'text', not text; "
                                          "write the text as a JSON string")


def test_json_object_as_label_is_an_error(tmp_path):
    jsonl = write_jsonl(tmp_path / "t.jsonl", {"text": "a", "label": "pos"}, {"text": "b", "label": {"x": 1}})
    assert "line 2 has a JSON object as its label" in error_of(train_file=jsonl)


def test_more_classes_than_readapt_trains(tmp_path, monkeypatch):
    import readapt.data.files

    monkeypatch.setattr(readapt.data.files, "MAX_NUM_LABELS", 3)  # the real bound is 100,000
    train = write_csv(tmp_path / "t.csv", "text,label", "a,w", "b,x", "c,y", "d,z")
    assert "has 4 distinct labels, more than the 3 classes readapt trains; check --label-column" in error_of(
        train_file=train)
