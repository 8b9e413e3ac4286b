"""benchmarks/variants_table.py keeps the committed cells: run folders are not committed, so a
checkout that reruns one variant has only that variant's folders, and the table must not lose the rest."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _variants_table():
    spec = importlib.util.spec_from_file_location("variants_table", ROOT / "benchmarks" / "variants_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(variant, seed, accuracy):
    return {"variant": variant, "task": "glue/sst2", "seed": seed, "validation": {"accuracy": accuracy},
            "test": {"accuracy": accuracy}, "trainable_params": 10, "train_seconds": 1.0}


def test_a_rerun_of_one_variant_keeps_the_other_committed_cells_and_replaces_its_own(tmp_path):
    committed = [_record("plain", 0, 0.80), _record("plain", 1, 0.82), _record("wide", 0, 0.70)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in committed))
    run = tmp_path / "runs" / "glue-sst2__wide__s0"      # "wide" seed 0 rerun in this checkout
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({k: v for k, v in _record("wide", 0, 0.90).items() if k != "variant"}))

    table = _variants_table().main(tmp_path, ["plain|--a", "wide|--b"])

    kept = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [(r["variant"], r["seed"], r["test"]["accuracy"]) for r in kept] == [
        ("plain", 0, 0.80), ("plain", 1, 0.82), ("wide", 0, 0.90)]
    assert "| plain | `--a` | 81.0 ± 1.4 | 81.0 ± 1.4 | 0,1 |" in table
    assert "| wide | `--b` | 90.0 | 90.0 | 0 |" in table
