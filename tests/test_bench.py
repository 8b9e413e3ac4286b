"""A real (tiny) benchmark grid: separate processes, resumable, results + table + plots."""

import json

import pytest

from conftest import GLUE_DIR
from readapt.cli import main


def test_bench_grid_runs_each_cell_once_and_reports(tiny_model_dir, tmp_path, capsys):
    argv = ["bench", "--model", tiny_model_dir, "--output", str(tmp_path / "bench"), "--tasks", "glue/rte",
            "--methods", "probe", "read", "--seeds", "0", "--data-dir", str(GLUE_DIR), "--epochs", "1",
            "--batch-size", "16", "--max-length", "32", "--max-train-examples", "32", "--device", "cpu",
            "--pooling", "pair"]
    assert main(argv) == 0
    out = tmp_path / "bench"
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["method"] for r in records) == ["probe", "read"]
    for r in records:
        assert r["task"] == "glue/rte" and r["seed"] == 0 and "--method" in r["argv"]
        assert r["train_examples"] == 32 and len(r["test"]) == 1 and 0 <= r["test"]["accuracy"] <= 1
        assert r["argv"][r["argv"].index("--pooling") + 1] == "pair"  # one head for every method
    table = (out / "table.md").read_text()
    assert "RTE (Acc)" in table and "| read |" in table and "| probe |" in table
    assert (out / "score_vs_memory.png").is_file()

    # Finished cells are not rerun: their run directories stay untouched.
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/metrics.json")} == before
    assert capsys.readouterr().out.count("2/2 cells finished") == 2


def test_bench_refuses_unknown_method_before_running(tiny_model_dir, tmp_path, capsys):
    assert main(["bench", "--model", tiny_model_dir, "--output", str(tmp_path / "b"), "--methods", "magic"]) == 1
    assert "unknown method 'magic'" in capsys.readouterr().err


def test_cells_get_the_data_files_and_lr(tmp_path):
    from pathlib import Path

    from readapt.bench import BenchArgs, cell_command, grid_tasks

    args = BenchArgs(model="m", output=str(tmp_path), train_file="d/reviews.csv", validation_file="d/dev.csv",
                     test_file="d/test.jsonl", text_column=["q", "a"], label_column="y", lr=3e-4, methods=["read"])
    assert grid_tasks(args) == ["reviews"]
    cmd = cell_command(args, "reviews", "read", 0, Path(tmp_path / "cell"))
    after = lambda flag: cmd[cmd.index(flag) + 1]  # noqa: E731
    assert (after("--train-file"), after("--validation-file"), after("--test-file"), after("--label-column"),
            float(after("--lr"))) == ("d/reviews.csv", "d/dev.csv", "d/test.jsonl", "y", 3e-4)
    assert cmd[cmd.index("--text-column") + 1:][:2] == ["q", "a"] and "--task" not in cmd
    glue = cell_command(BenchArgs(model="m", output="o"), "glue/rte", "read", 0, Path(tmp_path / "c2"))
    assert glue[glue.index("--task") + 1] == "glue/rte" and "--lr" not in glue and "--train-file" not in glue


def test_bench_on_own_files_names_the_task_after_the_file(tiny_model_dir, tmp_path, capsys):
    from conftest import csv_rows

    (tmp_path / "reviews.csv").write_text("text,label\n" + csv_rows(16))
    (tmp_path / "dev.csv").write_text("text,label\n" + csv_rows(8, 1))
    (tmp_path / "test.csv").write_text("text,label\n" + csv_rows(8, 2))
    out = tmp_path / "bench"
    assert main(["bench", "--model", tiny_model_dir, "--output", str(out), "--methods", "probe",
                 "--train-file", str(tmp_path / "reviews.csv"), "--validation-file", str(tmp_path / "dev.csv"),
                 "--test-file", str(tmp_path / "test.csv"), "--lr", "0.002", "--epochs", "1", "--batch-size", "8",
                 "--max-length", "16", "--device", "cpu"]) == 0
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["task"] == "reviews" and record["lr"] == 0.002 and record["train_examples"] == 16
    table = (out / "table.md").read_text()
    assert "| reviews (Acc/F1) |" in table.splitlines()[0]
    assert record["distinct_predictions"]["test"] in (1, 2)
    assert ("† predicted a single class" in table) == (record["distinct_predictions"]["test"] == 1)


@pytest.mark.parametrize("extra, words", [
    (["--train-file", "a.csv", "--tasks", "glue/rte"], "--tasks and --train-file"),
    (["--label-column", "y"], "--label-column describes own data"),
    (["--lr", "-1"], "--lr -1.0 is out of range"),
])
def test_bench_refuses_bad_data_options_before_running(tmp_path, capsys, extra, words):
    assert main(["bench", "--model", "m", "--output", str(tmp_path / "b"), *extra]) == 1
    assert words in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
