import json

import pytest

from readapt.report import _pareto, markdown_table, summarise, write_report


def record(task, method, seed, metrics, memory, seconds, energy=None, trainable=1.0):
    return {"task": task, "method": method, "seed": seed, "test": metrics, "validation": metrics,
            "peak_memory_mb": memory, "train_seconds": seconds, "energy_joules": energy,
            "trainable_percent": trainable, "examples_per_second": 10.0}


RECORDS = [
    record("glue/mrpc", "full", 0, {"f1": 0.90, "accuracy": 0.80}, 1000, 100),
    record("glue/mrpc", "full", 1, {"f1": 0.92, "accuracy": 0.84}, 1000, 110),
    record("glue/cola", "full", 0, {"matthews_correlation": 0.50}, 1200, 120),
    record("glue/cola", "full", 1, {"matthews_correlation": 0.54}, 1200, 130),
    record("glue/mrpc", "read", 0, {"f1": 0.88, "accuracy": 0.78}, 300, 40),
    record("glue/mrpc", "read", 1, {"f1": 0.90, "accuracy": 0.80}, 300, 40),
    record("glue/cola", "read", 0, {"matthews_correlation": 0.40}, 320, 50),
    record("glue/cola", "read", 1, {"matthews_correlation": 0.44}, 320, 50),
]


def test_summary_uses_glue_task_scores_and_per_seed_averages():
    s = summarise(RECORDS)
    assert s["tasks"] == ["glue/cola", "glue/mrpc"]
    full = s["methods"]["full"]
    assert full["tasks"]["glue/mrpc"] == pytest.approx([85.0, 88.0])  # mean of F1 and accuracy
    assert full["average"] == pytest.approx([(50 + 85) / 2, (54 + 88) / 2])
    assert full["cost"]["peak_memory_mb"] == pytest.approx(1100)


def test_table_has_a_column_per_task_and_ratios_to_full():
    table = markdown_table(RECORDS)
    header, _, full_row, read_row = table.strip().splitlines()
    assert "CoLA (Mcc)" in header and "MRPC (F1/Acc)" in header and "Mem / full" in header
    cells = [c.strip() for c in read_row.strip("|").split("|")]
    assert cells[0] == "read"
    assert cells[1] == "42.0 ± 2.8"  # CoLA over two seeds
    assert cells[header.strip("|").split("|").index(" Mem / full ")] == f"{310 / 1100:.2f}"
    assert "n/a" in read_row  # no energy measured: said, not guessed


def test_pareto_front_keeps_only_undominated_points():
    assert _pareto([(1, 50), (2, 40), (3, 60), (4, 55), (5, 70)]) == [(1, 50), (3, 60), (5, 70)]


def test_write_report_writes_table_and_plots(tmp_path):
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    table, plots = write_report(results)
    assert table.read_text() == markdown_table(RECORDS)
    assert {p.name for p in plots} == {"score_vs_memory.png", "score_vs_time.png"}  # no energy plot without energy
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in plots)


def test_ties_within_one_std_are_marked_and_a_majority_row_shows_learning_nothing():
    base = {"validation": {"accuracy": 0.5}, "test": {"accuracy": 0.52}}
    records = [dict(record("glue/rte", "full", seed, {"accuracy": acc}, 1000, 100), majority_baseline=base)
               for seed, acc in ((0, 0.60), (1, 0.64))]
    records += [dict(record("glue/rte", "read", seed, {"accuracy": acc}, 300, 40), majority_baseline=base)
                for seed, acc in ((0, 0.59), (1, 0.61))]   # within full's std: a tie
    records += [dict(record("glue/rte", "lora", seed, {"accuracy": acc}, 900, 80), majority_baseline=base)
                for seed, acc in ((0, 0.50), (1, 0.51))]   # well under: not bold
    rows = {line.split("|")[1].strip(): line for line in markdown_table(records).strip().splitlines()[2:]}
    assert "**62.0 ± 2.8**" in rows["full"] and "**60.0 ± 1.4**" in rows["read"]
    assert "**" not in rows["lora"]
    assert rows["majority class"].split("|")[2].strip() == "52.0"


def test_a_run_that_predicted_one_class_is_flagged_in_one_line():
    collapsed = {**record("glue/cola", "read", 2, {"matthews_correlation": 0.0}, 320, 50),
                 "distinct_predictions": {"validation": 2, "test": 1}}
    fine = {**RECORDS[0], "distinct_predictions": {"validation": 2, "test": 2}}
    table = markdown_table([fine, *RECORDS[1:], collapsed])
    read_row = next(line for line in table.splitlines() if line.startswith("| read |"))
    cells = [c.strip() for c in read_row.strip("|").split("|")]
    assert cells[1].endswith(" †") and not cells[2].endswith("†")  # CoLA flagged, MRPC not
    notes = [line for line in table.splitlines() if line.startswith("†")]
    assert notes == ["† predicted a single class for every test example (learned nothing): read on CoLA (seed 2)"]
    assert "†" not in markdown_table(RECORDS)  # runs without the record, or with two classes: no flag
    assert "†" not in markdown_table([*RECORDS[1:], fine])


def test_plot_titles_say_which_axis_is_what():
    from readapt.report import plot_title

    title = plot_title("test", ["glue/cola", "glue/mrpc"], "peak training memory (MB)")
    assert title.splitlines() == ["y: average test score over CoLA, MRPC",
                                  "x: peak training memory (MB), log scale; one point per method"]
