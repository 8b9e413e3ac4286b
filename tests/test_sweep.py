"""`readapt sweep`: a grid of READ configs over one state cache, best picked on validation."""

import json

import pytest

from conftest import csv_rows, one_error_line
from readapt.cli import main
from readapt.sweep import SweepArgs, cell_command, plan


def _data(tmp_path):
    (tmp_path / "train.csv").write_text("text,label\n" + csv_rows(24))
    (tmp_path / "val.csv").write_text("text,label\n" + csv_rows(8, 1))
    return ["--set", f"train_file={tmp_path / 'train.csv'}", "--set", f"validation_file={tmp_path / 'val.csv'}"]


def test_sweep_trains_every_cell_over_one_frozen_pass_and_picks_on_validation(tiny_model_dir, tmp_path, capsys, quiet):
    out = tmp_path / "sweep"
    argv = ["sweep", "--model", tiny_model_dir, "--output", str(out),
            "--grid", "rnn_dim=4,8", "--grid", "joiner=norm,projection", "--set", "epochs=1",
            "--set", "batch_size=8", *_data(tmp_path)]
    assert main(argv) == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted((r["sweep_cell"]["rnn_dim"], r["sweep_cell"]["joiner"]) for r in records) == [
        ("4", "norm"), ("4", "projection"), ("8", "norm"), ("8", "projection")]
    # the frozen pass ran once: the first cell built the state cache, the other three read it
    assert sorted(r["cache"] for r in records) == ["hit", "hit", "hit", "miss"]
    for r in records:  # each cell trained what its grid values say
        config = json.loads((out / "runs" / f"rnn_dim={r['sweep_cell']['rnn_dim']}__joiner="
                             f"{r['sweep_cell']['joiner']}__s0" / "read_config.json").read_text())
        assert (str(config["rnn_dim"]), config["joiner"]) == (r["sweep_cell"]["rnn_dim"], r["sweep_cell"]["joiner"])
    table = (out / "sweep.md").read_text()
    best = max(records, key=lambda r: sum(r["validation"].values()) / len(r["validation"]))
    first_row = table.splitlines()[2]
    assert first_row.startswith(f"| {best['sweep_cell']['rnn_dim']} | {best['sweep_cell']['joiner']} | **")
    assert "best on validation: --rnn-dim" in capsys.readouterr().out
    # finished cells are kept: a rerun trains nothing
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/metrics.json")}
    assert main(argv) == 0
    assert stamps == {p: p.stat().st_mtime_ns for p in out.glob("runs/*/metrics.json")}


@pytest.mark.parametrize("grid, sets, words", [
    ([], [], "at least one --grid"),
    (["rnn_dim"], [], "OPTION=VALUE"),
    (["rnn_size=4,8"], [], "not a readapt train option"),
    (["seed=1,2"], [], "the sweep sets --seed itself"),
    (["rnn_dim=4,8", "rnn_dim=16"], [], "given twice"),
    (["rnn_dim=4,8"], ["rnn_dim=16"], "given twice"),
    (["rnn_dim=4,8"], ["allow_changed_data=yes"], "a switch takes true or false"),
    (["allow_changed_data=true,maybe"], [], "a switch takes true or false"),
    (["rnn_dim=4,8"], ["task_type=causal_lm"], "readapt sweep ranks classification scores"),
    (["rnn_dim=" + ",".join(map(str, range(1, 1002)))], [], "at most 1000"),
    # values train itself refuses: caught at planning, naming the cell, before any cell runs
    (["joiner=norm,projecton"], [], "--joiner projecton: choose one of norm, projection .in the cell --joiner projecton"),
    (["rnn_dim=8,many"], [], "argument --rnn-dim: invalid int value: 'many' .in the cell"),
    (["lr=1e-3"], ["rnn_type=transformer"], "--rnn-type transformer"),
])
def test_bad_grids_are_refused_before_any_run(grid, sets, words):
    with pytest.raises(ValueError, match=words):
        plan(SweepArgs(model="m", output="o", grid=grid, set=sets))


def test_cell_flags_follow_the_train_options(tmp_path):
    with pytest.raises(ValueError, match="the sweep sets --cache-states itself"):
        plan(SweepArgs(model="m", output="o", grid=["layers=1 2,3"], set=["cache_states=false"]))
    args = SweepArgs(model="m", task="glue/stsb", output="o", grid=["layers=1 2,3"])
    cells, fixed = plan(args)
    assert cells == [{"layers": "1 2"}, {"layers": "3"}] and fixed == {}
    command = cell_command(args, {"layers": "1 2", "allow_changed_data": "true"}, 0, tmp_path)
    assert command[command.index("--layers"):][:3] == ["--layers", "1", "2"]
    assert "--allow-changed-data" in command and "--cache" in command


def test_a_bad_grid_is_one_line_on_the_command_line(capsys, tmp_path):
    line = one_error_line(capsys, ["sweep", "--model", "m", "--output", str(tmp_path / "o"),
                                   "--grid", "rnn_size=4"])
    assert "not a readapt train option" in line
