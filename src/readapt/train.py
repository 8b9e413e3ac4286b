"""The training loop: explicit and readable, the same for READ and every peer method.

    data -> backbone (frozen or not: the method decides) -> head -> loss
    AdamW, linear warmup + linear decay, gradient clipping, evaluation each epoch,
    best checkpoint kept, atomic checkpoints every --save-every steps and each epoch, --resume.

A run directory holds, when training ends (rundir.py: the folder's lifecycle, lock and marker):
    run_config.json      what was trained, on what, with which options (eval/predict read it)
    metrics.json         scores, cost (time, memory, energy), parameter counts, the exact argv
    read_config.json + read_model.safetensors   (READ: loads with ReadModel.from_pretrained)
    trainable.safetensors                       (other methods: what they train)
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import functools
import json
import math
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from readapt import checkpoint as ckpt
from readapt import microbatch, rundir
from readapt.backbones.loading import BACKBONE_DTYPES, execution_device, load_pretrained
from readapt.backbones.quantize import check_quantize
from readapt.config import (AGGREGATIONS, CONFIG_NAME, JOINERS, MAX_LAYERS, MAX_RNN_DIM, MIXINGS, POOLINGS,
                            RNN_TYPES, WEIGHTS_NAME, ConfigError, ReadConfig, check_types)
from readapt.data import TaskData, TaskSpec, compute_metrics, load_task, majority_baseline
from readapt.data.lm import LM_TASK_TYPES, TASK_TYPES, lm_columns, load_lm_files, target_tokens
from readapt.distributed import SINGLE, RankLost, Shard, World, close_world, init_world
from readapt.evaluate import encode_split, evaluate, model_inputs, without_states
from readapt.evaluate import predict  # noqa: F401 (public API: readapt.train.predict)
from readapt.inputs import RUN_CONFIG_MAX_BYTES, InputFileError, read_user_bytes
from readapt.measure import Meter, measure_inference
from readapt.methods import (HeadSpec, available_methods, count_parameters, decay_groups, get_method,
                             trainable_state_dict)
from readapt.model import SIDE_CHUNK_TOKENS, SIDE_PART_TOKENS
from readapt.reporting import Reporter, check_installed, reporter_names
from readapt.side import SIDE_DTYPES, resolve_side_dtype, side_dtype
from readapt.state_cache import CACHE_DTYPES, CACHE_MODES, check_gib, use_state_cache

RUN_CONFIG = rundir.RUN_CONFIG
METRICS = rundir.METRICS
# READ's hidden size r on the command line: the paper's network (ReadConfig's default), and the one
# validation chose for classifying single texts (README, "What we tried": a tie, and cheaper)
RNN_DIM, SINGLE_RNN_DIM = ReadConfig.rnn_dim, 96


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, out of memory); the message says what to do."""

    exit_code = 1


class Interrupted(TrainingError):
    """Ctrl-C (SIGINT) or SIGTERM: training stopped at a step boundary after writing a checkpoint."""

    exit_code = 130


@dataclass
class TrainArgs:
    model: str = field(metadata={"help": "backbone: a local folder or a Hugging Face Hub id"})
    output: str = field(metadata={"help": "run directory to create (refused if it holds another run)"})
    task: Optional[str] = field(default=None, metadata={
        "help": "rotten_tomatoes or glue/<cola|sst2|mrpc|qqp|stsb|mnli|qnli|rte|wnli>; omit with --train-file"})
    task_type: str = field(default="classification", metadata={
        "help": "classification (a head on the final state; also regression), causal_lm (a decoder-only "
                "model's own LM loss on --text-column, or on the response of --prompt-column/--response-column "
                "pairs) or seq2seq_lm (T5/BART: the prompt column in, the response column as the target); LM "
                "tasks train on your own files and report loss and perplexity"})
    method: str = field(default="read", metadata={
        "help": "read, full, probe, bitfit, lora, prompt, adapter, lst, or read_top (a hybrid, not READ: READ plus "
                "the backbone's top --top-layers layers fine-tuned)"})
    epochs: int = field(default=3, metadata={"help": "passes over the training set"})
    batch_size: int = field(default=32, metadata={"help": "training batch size"})
    lr: Optional[float] = field(default=None, metadata={"help": "peak learning rate (default: the method's own)"})
    max_length: int = field(default=128, metadata={"help": "tokens per example after truncation"})
    seed: int = field(default=0, metadata={"help": "seed for initialisation, data order and dropout"})
    rnn_type: Optional[str] = field(default=None, metadata={
        "help": "READ: lstm, gru or rnn (default, chosen on validation: gru for separately encoded pairs, "
                "lstm otherwise)"})
    rnn_dim: Optional[int] = field(default=None, metadata={
        "help": f"READ: hidden size r of the side RNN (default, chosen on validation: {SINGLE_RNN_DIM} for classification "
                f"of single texts and jointly encoded pairs, {RNN_DIM} otherwise, the paper's)"})
    layers: Optional[list[int]] = field(default=None, metadata={"help": "READ: backbone layers read (default all)"})
    layer_stride: Optional[int] = field(default=None, metadata={
        "help": "READ: read every k-th backbone layer, counted down from the last (2 on 6 layers: 2, 4, 6); "
                "fewer recurrent steps, a cheaper step and a smaller state cache (default, chosen on validation: "
                "2 for separately encoded pairs, 1 (every layer) otherwise)"})
    side_chunk_tokens: Optional[int] = field(default=None, metadata={
        "help": f"READ: train the side network over at most this many tokens at a time, so its memory stays "
                f"one chunk's whatever the batch: on a CPU the batch runs in parts of whole examples (nothing "
                f"recomputed; default {SIDE_PART_TOKENS}), on a GPU the side network recomputes each chunk in "
                f"the backward pass (default {SIDE_CHUNK_TOKENS:,d}); 0: the whole batch at once, faster on a "
                f"GPU for 2-6x the memory (README, GPU cost). The results are the same"})
    side_dtype: str = field(default="auto", metadata={
        "help": "READ: what the side network computes in: float32, or bfloat16 (autocast: its matrix products "
                "in bf16; weights, gradients, optimizer state and the correction stay float32); auto, chosen "
                "on validation: bfloat16 on a CPU with AMX (a side network about 2x cheaper), float32 elsewhere (on a "
                "GPU bfloat16 saves memory, not time)"})
    bidirectional: bool = field(default=False, metadata={
        "help": "READ: run the side RNN over depth in both directions (rnn-dim/2 wide each: about the same "
                "parameters and cost), so each layer's output also sees the layers above it"})
    aggregation: str = field(default="mean", metadata={"help": "READ: mean or last over depth"})
    pooling: Optional[str] = field(default=None, metadata={
        "help": "head pooling: cls, mean, mean_max ([mean, max] over the tokens), attention (tokens weighed by a "
                "learned query), last, or pair for two-text "
                "tasks ([u, v, |u-v|, u*v] of the two texts' means) (default: pair for separately encoded pairs, "
                "last for decoder-only models, else mean)"})
    pair_encoding: Optional[str] = field(default=None, metadata={
        "help": "two-text tasks: joint (one sequence, '[CLS] a [SEP] b [SEP]': a cross-encoder) or separate "
                "(each text its own sequence through the backbone, compared by pair pooling: a "
                "Sentence-BERT bi-encoder; implies --pooling pair) (default: each method's own, chosen on "
                "validation: separate for read, joint for the others and for text-to-text models)"})
    mixing: str = field(default="none", metadata={
        "help": "READ: token mixing after the depth recurrence: none (the paper's READ), attention "
                "(one light self-attention layer over each example's tokens in side space) or rnn (one "
                "bidirectional RNN over them)"})
    joiner: Optional[str] = field(default=None, metadata={
        "help": "READ: how each layer's state enters the RNN: norm (the paper's Joiner, d-wide) or projection "
                "(one shared Linear to width --rnn-dim first: cheaper per token and layer) (default, chosen on "
                "validation: projection for separately encoded pairs, norm otherwise)"})
    top_layers: int = field(default=1, metadata={
        "help": "read_top: how many of the backbone's top layers train (at full fine-tuning's learning rate)"})
    lora_r: int = field(default=8, metadata={"help": "LoRA: rank"})
    num_virtual_tokens: int = field(default=20, metadata={"help": "prompt tuning: prompt length"})
    warmup_ratio: float = field(default=0.06, metadata={"help": "fraction of steps with linear warmup"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases and norms)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    eval_batch_size: int = field(default=64, metadata={"help": "evaluation batch size"})
    data_dir: Optional[str] = field(default=None, metadata={"help": "GLUE: a folder in the glue_data layout"})
    train_file: Optional[str] = field(default=None, metadata={"help": "own data: CSV, TSV or JSONL"})
    validation_file: Optional[str] = field(default=None, metadata={"help": "own data: validation file"})
    test_file: Optional[str] = field(default=None, metadata={"help": "own data: test file (optional)"})
    text_column: Optional[list[str]] = field(default=None, metadata={
        "help": "own data: one or two text columns (default: text); causal_lm: the one column of plain text"})
    label_column: Optional[str] = field(default=None, metadata={"help": "own data: label column (classes or numbers)"})
    prompt_column: Optional[str] = field(default=None, metadata={
        "help": "LM tasks: column of prompts (instruction pairs; the loss skips the prompt's tokens)"})
    response_column: Optional[str] = field(default=None, metadata={
        "help": "LM tasks: column of responses (the tokens the loss reads; exact match is reported when "
                "every response is at most 8 tokens)"})
    max_train_examples: Optional[int] = field(default=None, metadata={"help": "use a seeded subset of train"})
    save_every: int = field(default=0, metadata={"help": "checkpoint every N steps (0: each epoch only)"})
    resume: bool = field(default=False, metadata={"help": "continue the run in --output from its checkpoint"})
    allow_changed_data: bool = field(default=False, metadata={
        "help": "with --resume: continue even though the data or model files changed since the run started"})
    overwrite: bool = field(default=False, metadata={
        "help": "replace the run in --output (deletes only the files readapt wrote there)"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    backbone_dtype: str = field(default="auto", metadata={
        "help": "dtype the frozen backbone runs in: auto, float32, bfloat16 or float16 (auto: float32 on "
                "CPU, the checkpoint's own on GPU). READ, probe and lst train in float32 whatever it is; "
                "methods that train backbone weights (full, bitfit, lora, prompt, adapter) keep them in "
                "float32, so auto means float32 for them"})
    device_map: Optional[str] = field(default=None, metadata={
        "help": "auto: load the frozen backbone through accelerate's big-model loading, on the device and the "
                "CPU within --max-memory and the rest offloaded to disk (--offload-folder), for a backbone "
                "larger than the device (READ, probe and lst; one GPU at most so far)"})
    max_memory: Optional[list[str]] = field(default=None, metadata={
        "help": "with --device-map: DEVICE=SIZE limits, e.g. 0=20GiB cpu=60GiB (default: accelerate's own)"})
    offload_folder: Optional[str] = field(default=None, metadata={
        "help": "with --device-map: where offloaded weights go (default: a temporary folder)"})
    quantize: str = field(default="none", metadata={
        "help": "store the frozen backbone's weights quantised: none or int8 (CPU: torch's dynamic int8 "
                "quantisation of its Linear layers; READ, probe and lst, which never differentiate them)"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow the model's own Python code to run"})
    report_to: Optional[list[str]] = field(default=None, metadata={
        "help": "experiment trackers: none, tensorboard (event files in OUTPUT/tensorboard/) or wandb; "
                "repeatable or comma-separated (default: none)"})
    cache: str = field(default="auto", metadata={
        "help": "READ: keep the frozen backbone's states in a disk cache, computed once and reused by every "
                "epoch, seed, side config and later run on the same data (a T5 classifier: its training split): "
                "auto (on when it fits --cache-max-gb and the free space), on or off"})
    cache_dir: Optional[str] = field(default=None, metadata={
        "help": "state cache folder (default: $READAPT_CACHE, else $XDG_CACHE_HOME/readapt/states, "
                "else ~/.cache/readapt/states)"})
    cache_max_gb: float = field(default=8.0, metadata={
        "help": "--cache auto builds what is missing only if this run's states take at most this many GiB"})
    cache_keep_gb: float = field(default=20.0, metadata={
        "help": "a run that builds states first evicts the least recently used entries of other data, to keep "
                "the state cache folder within this many GiB (0: never evict; readapt cache list / clear by hand)"})
    cache_dtype: str = field(default="float32", metadata={
        "help": "state cache storage: float32 (results identical to no cache), float16 or bfloat16 (half the "
                "disk; results within rounding)"})
    cache_states: bool = field(default=False, metadata={"help": "old name of --cache on"})

    def options(self) -> dict[str, Any]:
        """Method-specific knobs, as the methods' build() reads them."""
        return {"rnn_type": self.rnn_type, "rnn_dim": self.rnn_dim, "layers": self.layers,
                "layer_stride": self.layer_stride, "aggregation": self.aggregation, "mixing": self.mixing,
                "bidirectional": self.bidirectional, "joiner": self.joiner,
                "lora_r": self.lora_r, "num_virtual_tokens": self.num_virtual_tokens, "top_layers": self.top_layers}


def reads_side(args: TrainArgs) -> bool:
    """Whether the run's method trains READ's side network (read, read_top): READ's options apply."""
    return get_method(args.method).side_network


def check_args(args: TrainArgs) -> None:
    """Absurd values fail here, before anything is loaded or written."""
    try:
        check_types(args)  # TrainArgs(epochs="3") from Python: a ConfigError, not a TypeError later
    except OverflowError:  # an int too large for a float field (lr=10**400)
        raise ConfigError("a float option holds an integer too large for a float; use a number "
                          "like 1e-3") from None
    limits = [("epochs", 1, 10_000), ("batch_size", 1, 65_536), ("max_length", 1, 131_072),
              ("eval_batch_size", 1, 65_536), ("rnn_dim", 1, MAX_RNN_DIM), ("save_every", 0, 10**9)]
    for name, low, high in limits:
        value = getattr(args, name)
        if value is not None and not low <= value <= high:
            raise ValueError(f"--{name.replace('_', '-')} {value} is out of range: use {low}..{high}")
    if args.lr is not None and not (0 < args.lr <= 10 and math.isfinite(args.lr)):
        raise ValueError(f"--lr {args.lr} is out of range: use a positive learning rate <= 10 (e.g. 1e-3)")
    if not 0 <= args.warmup_ratio < 1:
        raise ValueError(f"--warmup-ratio {args.warmup_ratio}: use a fraction in [0, 1)")
    if args.max_train_examples is not None and args.max_train_examples < 1:
        raise ValueError(f"--max-train-examples {args.max_train_examples}: use a positive number")
    get_method(args.method)  # unknown method -> ValueError listing the known ones
    if args.top_layers != 1 and args.method != "read_top":
        raise ValueError(f"--top-layers is a read_top option; drop it for --method {args.method}")
    if not 1 <= args.top_layers <= MAX_LAYERS:
        raise ValueError(f"--top-layers {args.top_layers} is out of range: use 1..{MAX_LAYERS} (fewer than the "
                         f"backbone's layers)")
    reporter_names(args.report_to)
    for flag, value, valid in (("--rnn-type", args.rnn_type or "lstm", RNN_TYPES),
                               ("--aggregation", args.aggregation, AGGREGATIONS)):
        if value not in valid:  # ReadConfig refuses them too, but only once the data and model are loaded
            raise ValueError(f"{flag} {value}: choose one of {', '.join(valid)}")
    if args.pooling is not None and args.pooling not in POOLINGS:
        raise ValueError(f"--pooling {args.pooling}: choose one of {', '.join(POOLINGS)}")
    if args.pair_encoding is not None and args.pair_encoding not in PAIR_ENCODINGS:
        raise ValueError(f"--pair-encoding {args.pair_encoding}: choose one of {', '.join(PAIR_ENCODINGS)}")
    if args.pair_encoding == "separate" and args.pooling not in (None, "pair"):
        raise ValueError(f"--pair-encoding separate compares the two texts with --pooling pair; drop "
                         f"--pooling {args.pooling}")
    if args.backbone_dtype not in BACKBONE_DTYPES:
        raise ValueError(f"--backbone-dtype {args.backbone_dtype}: choose one of {', '.join(BACKBONE_DTYPES)}")
    if args.backbone_dtype not in ("auto", "float32") and get_method(args.method).backbone_backprop:
        raise ValueError(f"--backbone-dtype {args.backbone_dtype} would train the backbone's own weights in "
                         f"{args.backbone_dtype} (no float32 master copy) with --method {args.method}: use auto "
                         f"or float32, or a method that keeps the backbone frozen (read, probe, lst)")
    if args.mixing not in MIXINGS:
        raise ValueError(f"--mixing {args.mixing}: choose one of {', '.join(MIXINGS)}")
    if args.mixing != "none" and not reads_side(args):
        raise ValueError(f"--mixing {args.mixing} is a READ option; drop it for --method {args.method}")
    check_quantize(args.quantize, "cpu")  # the value; where it can run is checked when the model loads
    if args.device_map is not None:
        if args.device_map != "auto":
            raise ValueError(f"--device-map {args.device_map}: the one value is auto")
        if get_method(args.method).backbone_backprop:
            raise ValueError(f"--device-map auto spreads a frozen backbone; --method {args.method} trains its "
                             f"weights: drop --device-map, or use --method read")
        max_memory_limits(args.max_memory)
    elif args.max_memory or args.offload_folder:
        raise ValueError("--max-memory and --offload-folder go with --device-map auto; add it or drop them")
    if args.quantize != "none" and get_method(args.method).backbone_backprop:
        raise ValueError(f"--quantize {args.quantize} stores frozen int8 weights; --method {args.method} trains "
                         f"the backbone's weights: drop --quantize, or use --method read")
    if args.layer_stride is not None:
        if not reads_side(args):
            raise ValueError(f"--layer-stride is a READ option; drop it for --method {args.method}")
        if args.layers is not None:
            raise ValueError("--layers and --layer-stride both choose the layers READ reads: give one of them")
        if not 1 <= args.layer_stride <= MAX_LAYERS:
            raise ValueError(f"--layer-stride {args.layer_stride} is out of range: use 1..{MAX_LAYERS}")
    if args.side_chunk_tokens is not None and not 0 <= args.side_chunk_tokens <= 10**9:
        raise ValueError(f"--side-chunk-tokens {args.side_chunk_tokens} is out of range: use 0 (the whole batch) "
                         f"or a number of tokens up to 10**9")
    if args.side_chunk_tokens is not None and not reads_side(args):
        raise ValueError(f"--side-chunk-tokens is a READ option; drop it for --method {args.method}")
    if args.side_dtype not in SIDE_DTYPES:
        raise ValueError(f"--side-dtype {args.side_dtype}: choose one of {', '.join(SIDE_DTYPES)}")
    if args.side_dtype != "auto" and not reads_side(args):
        raise ValueError(f"--side-dtype is a READ option; drop it for --method {args.method}")
    if args.bidirectional and not reads_side(args):
        raise ValueError(f"--bidirectional is a READ option; drop it for --method {args.method}")
    if args.bidirectional and ((args.rnn_dim or 0) % 2 or args.aggregation != "mean"):
        raise ValueError(f"--bidirectional runs --rnn-dim/2 per direction and averages over depth: use an even "
                         f"--rnn-dim (got {args.rnn_dim}) and --aggregation mean (got {args.aggregation})")
    if args.joiner is not None and args.joiner not in JOINERS:
        raise ValueError(f"--joiner {args.joiner}: choose one of {', '.join(JOINERS)}")
    if args.joiner not in (None, "norm") and not reads_side(args):
        raise ValueError(f"--joiner {args.joiner} is a READ option; drop it for --method {args.method}")
    if args.cache not in CACHE_MODES:
        raise ValueError(f"--cache {args.cache}: choose one of {', '.join(CACHE_MODES)}")
    if args.cache_states and args.cache == "off":
        raise ValueError("--cache-states is the old name of --cache on; drop it or --cache off")
    if args.cache_dtype not in CACHE_DTYPES:
        raise ValueError(f"--cache-dtype {args.cache_dtype}: choose one of {', '.join(CACHE_DTYPES)}")
    check_gib("--cache-max-gb", args.cache_max_gb)
    check_gib("--cache-keep-gb", args.cache_keep_gb)
    check_task_type(args)


def check_task_type(args: TrainArgs) -> None:
    """LM tasks: own files, a method with an LM form, the columns they read, no classification knobs."""
    if args.task_type not in TASK_TYPES:
        raise ValueError(f"--task-type {args.task_type}: choose one of {', '.join(TASK_TYPES)}")
    if args.task_type == "classification":
        given = [flag for flag, value in (("--prompt-column", args.prompt_column),
                                          ("--response-column", args.response_column)) if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)} are for LM tasks: add --task-type causal_lm or seq2seq_lm, "
                             f"or drop them")
        return
    lm = f"--task-type {args.task_type}"
    if not get_method(args.method).lm_tasks:
        usable = [name for name in available_methods() if get_method(name).lm_tasks]
        raise ValueError(f"--method {args.method} has no language-model form; with {lm} use one of: "
                         f"{', '.join(usable)}")
    if args.task is not None or args.train_file is None:
        raise ValueError(f"{lm} trains on your own files: pass --train-file (with --text-column, or "
                         f"--prompt-column and --response-column) and drop --task")
    if args.text_column is not None and len(args.text_column) != 1:
        raise ValueError(f"{lm} reads one --text-column of plain text, got {len(args.text_column)}; for "
                         f"instruction pairs pass --prompt-column and --response-column")
    for flag, used in (("--label-column", args.label_column is not None), ("--pooling", args.pooling is not None),
                       ("--pair-encoding", args.pair_encoding is not None), ("--mixing", args.mixing != "none")):
        if used:
            raise ValueError(f"{flag} is a classification option; drop it for {lm}")
    lm_columns(args.task_type, args.text_column[0] if args.text_column else None, args.prompt_column,
               args.response_column)  # a bad combination of column flags: one line, before loading


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available; use --device cpu")
    return torch.device(name)


# -- saving --------------------------------------------------------------------------------------
def save_trained(model, directory: Path) -> None:
    """READ writes its PEFT-style pair (ReadModel.save_pretrained); other methods the tensors they
    train. Every file is written atomically: a kill never leaves half of one."""
    with ckpt.plain_write_errors(directory):  # a full disk is one plain sentence here too
        if hasattr(model, "save_pretrained") and hasattr(model, "side"):
            model.save_pretrained(directory)
        else:
            ckpt.save_tensors(trainable_state_dict(model), directory / ckpt.TRAINABLE_NAME)


def load_trained(model, directory: Path) -> None:
    if hasattr(model, "side"):
        model.load_read_weights(directory)  # checks backbone and READ config against this run's first
    else:
        from readapt.model import require_finite

        path = directory / ckpt.TRAINABLE_NAME
        tensors = ckpt.load_tensors(path)
        require_finite(tensors, path)
        ckpt.load_into(model, tensors, path)


# -- the loop ------------------------------------------------------------------------------------
PAIR_ENCODINGS = ("joint", "separate")


def separate_pairs(args: TrainArgs, spec: TaskSpec, text_to_text: bool) -> bool:
    """Whether a run encodes each text of a pair on its own: --pair-encoding, else the method's own
    default for two-text tasks with a classification head (READ: separate; its peers: joint),
    unless --pooling asks for a one-sequence head."""
    if len(spec.text_names) != 2 or text_to_text or args.pooling not in (None, "pair"):
        return False  # (an explicit --pair-encoding separate here is refused in train)
    return (args.pair_encoding or get_method(args.method).pair_encoding) == "separate"


def max_memory_limits(entries: Optional[list[str]]) -> Optional[dict]:
    """--max-memory 0=20GiB cpu=60GiB -> {0: "20GiB", "cpu": "60GiB"} (accelerate's form)."""
    if not entries:
        return None
    limits = {}
    for entry in entries:
        device, sep, size = entry.partition("=")
        if not sep or not size or not (device.isdigit() or device in ("cpu", "mps")):
            raise ValueError(f"--max-memory {entry}: write DEVICE=SIZE with DEVICE a GPU index or cpu, e.g. 0=20GiB")
        limits[int(device) if device.isdigit() else device] = size
    return limits


def side_network(args: TrainArgs, separate: bool) -> dict[str, Any]:
    """--joiner, --rnn-type, --rnn-dim and --layer-stride, else READ's defaults, chosen on validation
    like the pair encoding (README, "What we tried"): among side networks that tie, the cheapest.
    Separately encoded pairs: the projecting Joiner, a GRU and every second layer (each ties the
    paper's choice on the pair tasks' validation and costs less). Single sentences: the paper's
    Joiner (CoLA), an LSTM and every layer (Rotten Tomatoes), r = 96 for classification (a tie with
    the paper's 128 on SST-2, CoLA and Rotten Tomatoes, 0.75x its input map; language-model tasks
    were not validated and keep 128)."""
    single_classifier = args.task_type == "classification" and not separate
    return {"joiner": args.joiner or ("projection" if separate else "norm"),
            "rnn_type": args.rnn_type or ("gru" if separate else "lstm"),
            "rnn_dim": args.rnn_dim or (SINGLE_RNN_DIM if single_classifier else RNN_DIM),
            "layer_stride": args.layer_stride or (2 if separate and args.layers is None else None)}


def head_pooling(args: TrainArgs, kind: str, separate: bool) -> str:
    """--pooling, else what the run implies: pair for separately encoded pairs, the last token for
    decoder-only models, the mean of the tokens otherwise."""
    if args.pooling:
        return args.pooling
    if separate:
        return "pair"
    return "last" if kind == "causal" else "mean"


def cache_mode(args: TrainArgs) -> str:
    """on, auto or off: --cache (--cache-states is on); auto is off where nothing reuses states."""
    mode = "on" if args.cache_states else args.cache
    if mode != "off" and args.method != "read":
        if mode == "on":
            flag = "--cache-states" if args.cache_states else "--cache on"
            raise ValueError(f"{flag} works with --method read (--method {args.method} has no frozen states "
                             f"to reuse); drop it")
        return "off"
    return mode


def cached_splits(enc: dict[str, list[dict]], text_to_text: bool, task_type: str) -> dict[str, list[dict]]:
    """The splits whose states the cache serves: all, but for a text-to-text classifier (T5 on a
    GLUE task) only the training split. Its evaluation scores every label's text through the
    decoder, and an entry holds the decoder's states for the gold label's text alone."""
    if text_to_text and task_type not in LM_TASK_TYPES:
        return {name: items for name, items in enc.items() if name == "train"}
    return enc


def build(args: TrainArgs, spec: TaskSpec, device: torch.device):
    """(model, tokenizer, text_to_text) for a run's arguments: the same for train, eval and predict."""
    # Weights a method trains stay in fp32: a method that trains the backbone's loads it in fp32.
    dtype = "float32" if get_method(args.method).backbone_backprop else args.backbone_dtype
    lm = args.task_type in LM_TASK_TYPES
    placement = {}
    if args.device_map:  # offloaded weights need a folder; a temporary one unless the user names one
        folder = args.offload_folder
        if folder is None:
            folder = tempfile.mkdtemp(prefix="readapt-offload-")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
        placement = {"device_map": args.device_map, "max_memory": max_memory_limits(args.max_memory),
                     "offload_folder": folder}
    backbone, tokenizer, kind = load_pretrained(args.model, args.trust_remote_code, lm=lm, dtype=dtype, device=device,
                                                quantize=args.quantize, **placement)
    text_to_text = kind == "seq2seq"
    if lm:
        check_lm_backbone(args, backbone, kind)
    separate = separate_pairs(args, spec, text_to_text)
    pooling = head_pooling(args, kind, separate)
    head = None if text_to_text or lm else HeadSpec(num_labels=spec.num_labels, pooling=pooling)
    torch.manual_seed(args.seed)  # the head and side network start the same for a given seed
    options = {**args.options(), **side_network(args, separate)}
    model = get_method(args.method).build(backbone, head, options)
    if reads_side(args):
        if args.side_chunk_tokens is not None:
            model.set_side_chunk_tokens(args.side_chunk_tokens or None)
        model.set_side_dtype(side_dtype(args.side_dtype, device))
    if not args.device_map:
        return model.to(device), tokenizer, text_to_text
    # A dispatched backbone stays where accelerate put it; what trains goes where it computes.
    placed = getattr(backbone, "hf_device_map", None)  # absent when it all fit on one device
    where = execution_device(placed) if placed else next(backbone.parameters()).device
    for child in model.children():
        if child is not backbone:
            child.to(where)
    return model, tokenizer, text_to_text


LM_FAMILIES = {"causal_lm": "causal", "seq2seq_lm": "seq2seq"}


def check_lm_backbone(args: TrainArgs, backbone, kind: str) -> None:
    """The task type must match the model family, and a causal LM's sequences its context."""
    if kind != LM_FAMILIES[args.task_type]:
        fits = "--task-type " + {"causal": "causal_lm", "seq2seq": "seq2seq_lm"}.get(kind, "classification")
        raise ValueError(f"--task-type {args.task_type} needs a {LM_FAMILIES[args.task_type]} model; "
                         f"{backbone.config.model_type} is {kind}: use {fits}")
    context = getattr(backbone.config, "n_positions", None) or getattr(backbone.config, "max_position_embeddings", None)
    if kind == "causal" and isinstance(context, int) and args.max_length > context:
        raise ValueError(f"--max-length {args.max_length} is longer than the model's context ({context} tokens); "
                         f"use --max-length {context} or less")


def load_data(args: TrainArgs, data_dir: Optional[str] = None) -> TaskData:
    """A run's examples: a built-in task, classification files, or LM files (--task-type)."""
    if args.task_type in LM_TASK_TYPES:
        return load_lm_files(args.task_type, train_file=args.train_file, validation_file=args.validation_file,
                             test_file=args.test_file, text_column=args.text_column[0] if args.text_column else None,
                             prompt_column=args.prompt_column, response_column=args.response_column,
                             max_train_examples=args.max_train_examples)
    return load_task(args.task, data_dir=data_dir or args.data_dir, train_file=args.train_file,
                     validation_file=args.validation_file, test_file=args.test_file,
                     text_columns=args.text_column, label_column=args.label_column,
                     max_train_examples=args.max_train_examples)


def better(select: str, score: float, best: Optional[float]) -> bool:
    """Whether ``score`` beats the best so far: a loss is better lower, every task metric higher."""
    return best is None or (score < best if select == "loss" else score > best)


def train(args: TrainArgs, argv: Optional[list[str]] = None) -> dict:
    """Train one run end to end; returns (and writes) its metrics.json. The run folder is locked for
    the whole run: a second `readapt train` on it fails at once. Under torchrun, every rank trains
    its shard of each batch and rank 0 holds the folder (distributed.py); the other ranks return {}."""
    check_args(args)
    world = init_world()
    finished = False
    try:
        if not world.is_main:
            with world.all_or_none():  # rank 0 opens the folder: wait for its verdict
                pass
            metrics = _train(args, rundir.Follower(Path(args.output)), argv, world)
        else:
            with world.all_or_none():
                opened = rundir.open_run(args)
                run = opened.__enter__()
            with contextlib.closing(run):
                metrics = _train(args, run, argv, world)
        finished = True
        return metrics
    finally:
        close_world(world, together=finished)


def _train(args: TrainArgs, run: rundir.Run, argv: Optional[list[str]], world: World = SINGLE) -> dict:
    with world.all_or_none():  # a rank that fails here stops the others before the first all-reduce
        prepared = _prepare(args, run, world)
    return _run(args, run, argv, world, **vars(prepared))  # by name: no field can land in the wrong place


@dataclass
class _Prepared:
    """What a run holds once its inputs are checked, its model built and its folder opened."""
    out_dir: Path
    device: torch.device
    data: TaskData
    spec: TaskSpec
    model: Any
    tokenizer: Any
    text_to_text: bool
    lr: float
    enc: dict
    cache: dict
    trackers: list
    optimizer: Any
    scheduler: Any
    steps_per_epoch: int
    progress: dict
    resumed: Optional[dict]


def _prepare(args: TrainArgs, run: rundir.Run, world: World) -> _Prepared:
    out_dir = run.path
    if args.resume:
        rundir.check_resume_args(out_dir, args)
    device = world.device(pick_device(args.device))
    data: TaskData = load_data(args)
    found = rundir.fingerprints(args, data)
    if args.resume:
        rundir.check_fingerprints(out_dir, found, args.allow_changed_data)
    spec = data.spec
    for flag, value, used in (("--pooling", "pair", args.pooling == "pair"),
                              ("--pair-encoding", "separate", args.pair_encoding == "separate")):
        if used and len(spec.text_names) != 2:
            raise ValueError(f"{flag} {value} reads two texts per example; {spec.name} has one "
                             f"({spec.text_names[0]}): drop {flag}")
    model, tokenizer, text_to_text = build(args, spec, device)
    if text_to_text and args.pair_encoding == "separate":
        raise ValueError("--pair-encoding separate needs a classification head; text-to-text models (T5) "
                         "read the pair as one input: drop it")
    method = get_method(args.method)
    lr = args.lr or method.default_lr
    separate = separate_pairs(args, spec, text_to_text)
    enc = {name: encode_split(split, spec, tokenizer, args.max_length, text_to_text, separate, args.task_type, name)
           for name, split in (("train", data.train), ("validation", data.validation), ("test", data.test or []))}
    if args.pooling == "pair" and not (text_to_text or separate) and "segment_ids" not in enc["train"][0]:
        raise ValueError("--pooling pair needs a fast tokenizer (it tells which text each token comes "
                         "from); this model's tokenizer is a slow one: use --pooling mean")
    # The frozen pass, once per example and kept on disk (state_cache.py): the loop then reads states.
    cache = use_state_cache(model, tokenizer, cached_splits(enc, text_to_text, args.task_type),
                            model_name=args.model, max_length=args.max_length,
                            separate_pairs=separate, device=device, batch_size=args.eval_batch_size,
                            mode=cache_mode(args), cache_dir=args.cache_dir,
                            max_gb=args.cache_max_gb, dtype=args.cache_dtype, world=world,
                            keep_gb=args.cache_keep_gb, task=spec.name)

    trackers = reporter_names(args.report_to)
    check_installed(trackers)
    # Everything is valid: only now does the run folder get files (--overwrite clears the old ones).
    run.begin(args, {"args": dataclasses.asdict(args), "task": spec.to_dict(), "lr": lr,
                     "text_to_text": text_to_text}, found)

    if hasattr(model, "optimizer_groups"):  # read_top: the backbone's trained layers at their own rate
        groups = model.optimizer_groups(lr, args.weight_decay)
    else:
        groups = decay_groups([p for p in model.parameters() if p.requires_grad], args.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=lr)
    steps_per_epoch = math.ceil(len(enc["train"]) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    scheduler = linear_schedule_with_warmup(optimizer, int(args.warmup_ratio * total_steps), total_steps)
    progress = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": None, "best_epoch": None,
                "train_seconds": 0.0, "history": [], "world_size": world.size}
    resumed = _resume(out_dir, model, optimizer, scheduler, world) if args.resume else None
    if resumed is not None:
        progress = resumed
    return _Prepared(out_dir, device, data, spec, model, tokenizer, text_to_text, lr, enc, cache, trackers,
                     optimizer, scheduler, steps_per_epoch, progress, resumed)


def _run(args, run, argv, world, out_dir, device, data, spec, model, tokenizer, text_to_text, lr, enc,
         cache, trackers, optimizer, scheduler, steps_per_epoch, progress, resumed) -> dict:
    lm = args.task_type in LM_TASK_TYPES
    select = "loss" if lm else spec.metrics[0]  # LM runs keep the epoch of lowest validation loss
    meter = Meter(device)
    reporter = Reporter(trackers if world.is_main else [], out_dir, args, progress["global_step"])
    with meter, _StopOnSignal() as stop, reporter:
        try:
            _loop(args, model, optimizer, scheduler, enc, data, spec, tokenizer, device, text_to_text,
                  progress, out_dir, steps_per_epoch, select, meter, stop, reporter, world)
        except _Stop:
            if world.is_main:
                _save(out_dir, model, optimizer, scheduler, progress)
            raise Interrupted(f"interrupted at step {progress['global_step']}; checkpoint written: "
                              f"rerun the same command with --resume to continue") from None
        except TrainingError as exc:
            raise TrainingError(f"{exc}; {_kept(out_dir)}") from None
        except RankLost as exc:  # no checkpoint now: this rank's step may be half synchronised
            raise RankLost(f"another rank stopped unexpectedly after step {progress['global_step']} ({exc.reason}); "
                           f"{_kept(out_dir)}: rerun the same command with --resume", exc.reason) from exc
    cost = meter.result()
    if not world.is_main:  # rank 0 scores the result and writes metrics.json
        return {}

    # The best epoch's weights are the run's result.
    load_trained(model, out_dir)
    scores, distinct = {}, {}
    for name, split in (("validation", data.validation), ("test", data.test)):
        scores[name], distinct[name] = _final_scores(model, enc[name], split, spec, tokenizer, args.eval_batch_size,
                                                     device, text_to_text, name, args.task_type) if split else (None, None)
    train_labels = [e.label for e in data.train]
    baseline = {name: majority_baseline(spec, train_labels, [e.label for e in split]) if split and not lm else None
                for name, split in (("validation", data.validation), ("test", data.test))}
    inference = _inference_cost(model, enc["validation"], tokenizer, args.eval_batch_size, device, text_to_text or lm)
    trainable, total = count_parameters(model)
    seen = progress["global_step"] * args.batch_size
    metrics = {
        "task": spec.name, "task_type": args.task_type, "method": args.method, "model": args.model, "seed": args.seed,
        "argv": list(argv if argv is not None else sys.argv), **scores, "majority_baseline": baseline,
        "distinct_predictions": distinct,  # 1: one class for every example (report.py flags it)
        "best_epoch": progress["best_epoch"], "history": progress["history"],
        "trainable_params": trainable, "total_params": total,
        "trainable_percent": round(100.0 * trainable / total, 4),
        "epochs": args.epochs, "lr": lr, "batch_size": args.batch_size, "max_length": args.max_length,
        "train_examples": len(data.train), "train_seconds": round(progress["train_seconds"], 3),
        "cache": cache["cache"], "cache_seconds": round(cache["cache_seconds"], 3), "cache_bytes": cache["cache_bytes"],
        "examples_per_second": round(min(seen, args.epochs * len(data.train)) / max(progress["train_seconds"], 1e-9), 2),
        "peak_memory_mb": cost["peak_memory_mb"], "energy_joules": cost["energy_joules"],
        "cost": cost, "inference": inference, "device": str(device),
        "resumed": resumed is not None,
        "side_dtype": resolve_side_dtype(args.side_dtype, device) if reads_side(args) else None,
        "world_size": world.size, "global_batch_size": args.batch_size,  # data parallel: each rank a shard  # --resume of a run killed before its first checkpoint starts at 0
    }
    ckpt.write_json(out_dir / METRICS, metrics)
    if hasattr(model, "side"):  # READ: the model card now names the scores and the command
        from readapt import card

        trainable_now, total_now = model.get_nb_trainable_parameters()
        text = card.render(model.config, trainable=trainable_now, total=total_now, dataset=args.task or args.train_file,
                           metrics={name: scores[name] for name in ("validation", "test") if scores[name]},
                           command=shlex.join(metrics["argv"]))
        card.write(out_dir, text)
    return metrics


def _final_scores(model, encoded, examples, spec, tokenizer, batch_size, device, text_to_text, desc,
                  task_type: str = "classification"):
    """(scores, how many distinct classes the model predicted; None for regression and LM tasks) on one split."""
    if task_type in LM_TASK_TYPES:
        scores = evaluate(model, encoded, examples, spec, tokenizer, batch_size, device, text_to_text, desc, task_type)
        return scores, None
    predictions = predict(model, encoded, spec, tokenizer, batch_size, device, text_to_text, desc)
    scores = compute_metrics(spec, predictions, np.array([e.label for e in examples]))
    return scores, None if spec.is_regression else len(np.unique(predictions))


def _inference_cost(model, encoded, tokenizer, batch_size, device, with_labels) -> dict:
    """Latency and memory of one forward pass over an evaluation-sized batch of validation data
    (text-to-text models and LM tasks score the gold target, teacher-forced)."""
    batch = model_inputs(without_states(encoded[:batch_size]), tokenizer.pad_token_id, device)  # the whole model
    if not with_labels:
        batch.pop("labels", None)
    model.eval()
    with torch.no_grad():
        result = measure_inference(lambda: model(**batch), device)
    return {"batch_size": len(encoded[:batch_size]), **result}


def linear_schedule_with_warmup(optimizer, warmup_steps: int, total_steps: int):
    """transformers' get_linear_schedule_with_warmup, without importing transformers.optimization
    (which pulls in peft: seconds of start-up for every `readapt train`)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
        _linear_warmup_decay, warmup_steps=warmup_steps, total_steps=total_steps))


def _linear_warmup_decay(step: int, *, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return float(step) / float(max(1, warmup_steps))
    return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup_steps)))


class _Stop(Exception):
    """Raised inside the loop, at a step boundary, after SIGINT/SIGTERM."""


class _StopOnSignal:
    """The first Ctrl-C (or SIGTERM) asks the loop to stop at the next step boundary, where the
    state is consistent and can be checkpointed; a second Ctrl-C interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise _Stop

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            if signal.getsignal(sig) == self._handle:  # still ours (a broken process group ignores SIGTERM)
                signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        return False


def _loop(args, model, optimizer, scheduler, enc, data, spec, tokenizer, device, text_to_text,
          progress, out_dir, steps_per_epoch, select, meter, stop=None, reporter=None, world=SINGLE) -> None:
    stop = stop or _StopOnSignal()
    reporter = reporter or Reporter([], out_dir, args)
    params = [p for p in model.parameters() if p.requires_grad]
    n = len(enc["train"])
    for epoch in range(progress["epoch"], args.epochs):
        # The epoch's order depends only on (seed, epoch): a resumed run sees the same batches.
        order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed * 100_003 + epoch)).tolist()
        model.train()
        bar = tqdm(range(progress["step_in_epoch"], steps_per_epoch), desc=f"epoch {epoch + 1}/{args.epochs}",
                   mininterval=2, leave=False,
                   **({} if world.is_main else {"disable": True}))  # an explicit False would override TQDM_DISABLE
        for step in bar:
            _check_stop(stop, world)
            started = time.perf_counter()
            items = [enc["train"][i] for i in order[step * args.batch_size:(step + 1) * args.batch_size]]
            shard = world.shard(items)  # all of it in a single process
            batch = model_inputs(shard, tokenizer.pad_token_id, device) if shard else None
            tracked = meter.track_tensors() if progress["global_step"] < 2 else _nothing()
            lr = optimizer.param_groups[0]["lr"]  # the rate this step uses (the scheduler moves it after)
            sync = {} if world.size == 1 else {"sync": Shard(world, params, _loss_terms(shard, args.task_type),
                                                             _loss_terms(items, args.task_type))}
            with tracked:
                loss = _step(model, batch, optimizer, scheduler, args.max_grad_norm, progress["global_step"], **sync)
            progress["train_seconds"] += time.perf_counter() - started
            progress["global_step"] += 1
            reporter.log({"train/loss": loss, "train/lr": lr}, progress["global_step"])
            progress["step_in_epoch"] = step + 1
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            if args.save_every and progress["global_step"] % args.save_every == 0 and world.is_main:
                _save(out_dir, model, optimizer, scheduler, progress)
        scores = evaluate(model, enc["validation"], data.validation, spec, tokenizer, args.eval_batch_size,
                          device, text_to_text, desc="validation", task_type=args.task_type)
        progress["history"].append({"epoch": epoch + 1, "step": progress["global_step"], "validation": scores,
                                    "train_seconds": round(progress["train_seconds"], 3)})
        if world.is_main:
            tqdm.write(f"epoch {epoch + 1}: validation " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        reporter.log({f"validation/{k}": v for k, v in scores.items()}, progress["global_step"])
        if better(select, scores[select], progress["best_score"]):
            progress["best_score"], progress["best_epoch"] = scores[select], epoch + 1
            if world.is_main:
                save_trained(model, out_dir)
        progress["epoch"], progress["step_in_epoch"] = epoch + 1, 0
        if world.is_main:
            _save(out_dir, model, optimizer, scheduler, progress)
        _check_stop(stop, world)


def _kept(out_dir: Path) -> str:
    """What a run that stopped on an error keeps (no checkpoint is written after one)."""
    last = ckpt.latest_checkpoint(out_dir)
    return f"the last good checkpoint ({last}) is kept" if last is not None else "no checkpoint had been written yet"


def _check_stop(stop: "_StopOnSignal", world: World) -> None:
    """Stop at this step boundary if a signal reached any rank (all ranks stop at the same step)."""
    if world.any(stop.requested):
        raise _Stop


def _loss_terms(items: list[dict], task_type: str) -> int:
    """What a batch's mean loss averages over: its examples, or an LM task's target tokens (so a
    data-parallel shard weighs what it adds to the global batch's token mean)."""
    if task_type in LM_TASK_TYPES:
        return target_tokens(items, causal=task_type == "causal_lm")
    return len(items)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _step(model, batch, optimizer, scheduler, max_grad_norm: float, step: int, sync: Optional[Shard] = None) -> float:
    """One optimizer step. With ``sync`` (data parallel) ``batch`` is this rank's shard (None if
    empty) and loss and gradients become the global batch's before any check or update."""
    try:
        # READ runs the batch in parts of whole examples (bounded memory, nothing recomputed): microbatch.py
        loss = microbatch.backward(model, batch) if batch is not None else None
        shown = loss if sync is None else sync.mean_loss(loss)
        if not torch.isfinite(shown):
            raise TrainingError(f"loss became {shown.item()} at step {step + 1}; stopped: lower --lr (or check "
                                f"the labels), then rerun with --overwrite")
        if sync is not None:
            sync.gradients()
        norm = torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
        if not torch.isfinite(norm):  # a finite loss can still have inf/NaN gradients
            optimizer.zero_grad(set_to_none=True)
            raise TrainingError(f"gradient norm became {norm.item()} at step {step + 1}; stopped: lower --lr "
                                f"or --max-grad-norm, then rerun with --overwrite")
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    except RuntimeError as exc:  # torch.OutOfMemoryError (CUDA) is one; CPU allocators raise plain ones
        if not is_out_of_memory(exc):
            raise
        raise TrainingError("out of memory: lower --batch-size or --max-length "
                            "(or use --method read, which keeps no backbone activations)") from None
    return shown.item()


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())


def _save(out_dir, model, optimizer, scheduler, progress) -> None:
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": ckpt.rng_state(), "progress": progress}
    ckpt.save_checkpoint(out_dir, progress["global_step"], trainable_state_dict(model), state)


def _resume(out_dir, model, optimizer, scheduler, world: World = SINGLE) -> Optional[dict]:
    """The progress of the checkpoint to resume from, its state loaded; None: there is none (step 0)."""
    path, warning = ckpt.resume_point(out_dir)
    if warning:
        rundir.warn(warning)
    if path is None:
        return None
    trainable, state = ckpt.load_checkpoint(path)
    ckpt.load_into(model, trainable, path / ckpt.TRAINABLE_NAME)
    try:
        progress = state["progress"]
        number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
        if not (isinstance(progress, dict)
                and all(isinstance(progress.get(k), int) and not isinstance(progress[k], bool) and progress[k] >= 0
                        for k in ("epoch", "step_in_epoch", "global_step"))
                and isinstance(progress.get("history"), list) and number(progress.get("train_seconds"))
                and (progress.get("best_score") is None or number(progress["best_score"]))
                and (progress.get("best_epoch") is None or isinstance(progress["best_epoch"], int))):
            raise ValueError("no valid progress record")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        ckpt.set_rng_state(state["rng"])
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as exc:
        raise ckpt.CheckpointError(f"{path / ckpt.STATE_NAME} is damaged or from another run ({exc}); "
                                   f"drop --resume and pass --overwrite to start afresh") from None
    saved_world = progress.get("world_size", 1)  # checkpoints from before data parallel: one process
    if saved_world != world.size:
        raise ckpt.CheckpointError(f"{path} was written by a run of {saved_world} process(es) and this one has "
                                   f"{world.size}: relaunch it with {saved_world} to resume it")
    progress["world_size"] = world.size
    tqdm.write(f"resuming from {path} (epoch {state['progress']['epoch']}, step {state['progress']['global_step']})")
    return state["progress"]


# -- using a finished run ------------------------------------------------------------------------
def load_run(run_dir: str | Path, device: str = "auto"):
    """(model, tokenizer, spec, args, text_to_text) of a finished run, weights loaded."""
    run_dir = Path(run_dir)
    args, spec, _ = read_run_config(run_dir)
    torch_device = pick_device(device)
    model, tokenizer, text_to_text = build(with_saved_side_network(args, run_dir), spec, torch_device)
    if not ((run_dir / ckpt.TRAINABLE_NAME).is_file() or (run_dir / WEIGHTS_NAME).is_file()):
        raise ValueError(f"{run_dir} holds no trained weights yet (did training finish?)")
    load_trained(model, run_dir)
    return model, tokenizer, spec, args, text_to_text, torch_device


def with_saved_side_network(args: TrainArgs, run_dir: Path) -> TrainArgs:
    """A READ run's side network as it was trained: the choices the run left to readapt's defaults
    (--rnn-type, --joiner, --rnn-dim, --layer-stride unset) taken from its read_config.json, so a run trained
    before a default changed loads into the network it trained, not today's default."""
    if args.method != "read" or not (run_dir / CONFIG_NAME).is_file():
        return args  # not READ, or no weights yet: load_trained says so
    saved = ReadConfig.from_pretrained(run_dir)
    chosen = {"rnn_type": saved.rnn_type, "joiner": saved.joiner, "rnn_dim": saved.rnn_dim}
    if args.layers is None and saved.layers is None:
        chosen["layer_stride"] = saved.layer_stride
    return dataclasses.replace(args, **{k: v for k, v in chosen.items() if getattr(args, k) is None})


RUN_CONFIG_KEYS = ("args", "lr", "task", "text_to_text")
# Options added after runs were first saved: an older run_config.json lacks them and means the value
# such runs used (the default, except side_dtype: they computed in float32).
ADDED_ARGS = {"allow_changed_data": False, "mixing": "none", "pair_encoding": "joint", "joiner": "norm", "layer_stride": 1,
              "side_chunk_tokens": None, "side_dtype": "float32", "bidirectional": False, "top_layers": 1,
              "backbone_dtype": "auto", "cache": "auto", "cache_dir": None, "cache_max_gb": 8.0,
              "cache_keep_gb": 20.0, "cache_dtype": "float32", "report_to": None, "task_type": "classification",
              "prompt_column": None, "response_column": None, "quantize": "none", "device_map": None,
              "max_memory": None, "offload_folder": None}


def read_run_config(run_dir: str | Path) -> tuple[TrainArgs, TaskSpec, dict]:
    """(args, task spec, raw dict) of run_config.json, parsed as plain JSON and validated as strictly
    as ReadConfig: unknown or missing keys and wrong types are a ConfigError naming the file."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_CONFIG
    if not (path.exists() or path.is_symlink()):  # anything else there gets its own reason below
        raise ConfigError(f"{run_dir} is not a readapt run directory (no {RUN_CONFIG}); pass the --output "
                          f"folder of a `readapt train` run")
    damaged = "re-create the run with `readapt train`"
    try:
        saved = json.loads(read_user_bytes(path, RUN_CONFIG_MAX_BYTES).decode("utf-8"))
    except InputFileError as exc:  # a FIFO, a device, a 100 MB file: refused unread
        raise ConfigError(f"{exc}; {damaged}") from None
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ConfigError(f"{path} is not readable JSON ({detail}); the file is damaged: {damaged}") from None
    if not isinstance(saved, dict) or sorted(saved) != sorted(RUN_CONFIG_KEYS):
        got = sorted(saved) if isinstance(saved, dict) else f"a JSON {type(saved).__name__}"
        raise ConfigError(f"{path} has keys {got}, expected {list(RUN_CONFIG_KEYS)}; {damaged}")
    values = saved["args"]
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: 'args' must be a JSON object, got {type(values).__name__}; {damaged}")
    values = {**{k: v for k, v in ADDED_ARGS.items() if k not in values}, **values}
    names = [f.name for f in dataclasses.fields(TrainArgs)]
    unknown, missing = sorted(set(values) - set(names)), sorted(set(names) - set(values))
    if unknown or missing:
        what = "; ".join(part for part in (f"unknown key(s) {unknown}" if unknown else "",
                                           f"missing key(s) {missing}" if missing else "") if part)
        raise ConfigError(f"{path}: 'args' has {what}; it was written by another readapt version: {damaged}")
    try:
        args = TrainArgs(**values)
        check_args(args)  # types first (ConfigError), then ranges and the method name (ValueError)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}; {damaged}") from None
    task = saved["task"]
    text_list = lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)  # noqa: E731
    if not (isinstance(task, dict) and isinstance(task.get("name"), str) and text_list(task.get("metrics"))
            and text_list(task.get("text_names"))
            and (task.get("label_names") is None or text_list(task["label_names"]))):
        raise ConfigError(f"{path}: 'task' must be an object with name (text), label_names (list of text or "
                          f"null), metrics and text_names (lists of text); {damaged}")
    try:
        spec = TaskSpec.from_dict(task)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    lr, text_to_text = saved["lr"], saved["text_to_text"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
        raise ConfigError(f"{path}: 'lr' must be a positive number, got {lr!r}; {damaged}")
    if not isinstance(text_to_text, bool):
        raise ConfigError(f"{path}: 'text_to_text' must be true or false, got {text_to_text!r}; {damaged}")
    return args, spec, saved


__all__ = ["TrainArgs", "TrainingError", "Interrupted", "read_run_config", "train", "load_run", "evaluate", "predict"]
