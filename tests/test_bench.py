"""A real (tiny) benchmark grid: separate processes, resumable, results + table + plots."""

import json

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
