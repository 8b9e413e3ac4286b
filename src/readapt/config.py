"""ReadConfig: every knob of a READ side network, validated on construction.

Shaped like PEFT's tuner configs: a dataclass whose fields carry ``metadata={"help": ...}``,
saved as plain JSON next to the weights and parsed back strictly (unknown keys, missing keys and
wrong types are errors, never silently ignored).
"""

from __future__ import annotations

import dataclasses
import json
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_args, get_origin, get_type_hints

from readapt.inputs import CONFIG_MAX_BYTES, InputFileError, os_problem, read_user_bytes

CONFIG_NAME = "read_config.json"
WEIGHTS_NAME = "read_model.safetensors"
CARD_NAME = "README.md"  # the model card save_pretrained writes (readapt/card.py)

TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM")
RNN_TYPES = ("gru", "lstm", "rnn")
AGGREGATIONS = ("mean", "last")
POOLINGS = ("cls", "mean", "mean_max", "attention", "last", "pair")
MIXINGS = ("none", "attention", "rnn")
JOINERS = ("norm", "projection")


# Fields added after configs were first saved, with the value every older config meant.
ADDED_LATER = {"mixing": "none", "joiner": "norm", "layer_stride": 1, "bidirectional": False}

# Bounds on what a config may ask to allocate, checked before any tensor exists (a config file is
# user input: rnn_dim=65536 would need ~70 GB, num_labels=10**8 a 12.8 GB head on a tiny backbone).
MAX_RNN_DIM = 8192          # 64x the default; the side network is meant to stay small
MAX_NUM_LABELS = 100_000
MAX_LAYERS = 1024           # entries in `layers`, and the largest layer index


class ConfigError(ValueError):
    """A configuration value (or a saved config file) is invalid; the message says how to fix it."""


@dataclass
class ReadConfig:
    task_type: str = field(
        default="SEQ_CLS",
        metadata={"help": f"What the model is trained for: one of {', '.join(TASK_TYPES)}."},
    )
    rnn_type: str = field(
        default="lstm",
        metadata={"help": "Recurrent cell walking the backbone's layers: lstm, gru or rnn (tanh). "
                          "LSTM is the default: it beat GRU on our Rotten Tomatoes validation set "
                          "(README, 'What we tried')."},
    )
    rnn_dim: int = field(
        default=128,
        metadata={"help": "Hidden size r of the side RNN. The side network's size depends on r and "
                          "the backbone's width, never on its depth. 128 is the paper's; readapt train "
                          "uses 96 to classify single texts, a validation tie that costs less (README, "
                          "'What we tried')."},
    )
    layers: Optional[list[int]] = field(
        default=None,
        metadata={"help": "Backbone layers the RNN reads, 1-based (0 = embeddings). None reads "
                          "every layer 1..N; the final layer N is always the one corrected."},
    )
    layer_stride: int = field(
        default=1,
        metadata={"help": "With layers=None: the RNN reads every k-th layer, counted down from the "
                          "last (k=2 on 6 layers: 2, 4, 6), so its steps, compute and cached states "
                          "shrink k-fold while the final layer is still the one read last and "
                          "corrected. 1 (the paper) reads every layer."},
    )
    bidirectional: bool = field(
        default=False,
        metadata={"help": "Run the RNN over depth in both directions, rnn_dim/2 wide each (the same "
                          "output width, about the same parameters and compute): each layer's output "
                          "then also sees the layers above it. False is the paper's READ. Needs "
                          "aggregation='mean' and an even rnn_dim."},
    )
    aggregation: str = field(
        default="mean",
        metadata={"help": "How the RNN outputs over depth become one vector: mean over steps "
                          "(the summed form of the correction) or the last step."},
    )
    mixing: str = field(
        default="none",
        metadata={"help": "SEQ_CLS only: token mixing in side space after the depth recurrence. none "
                          "is the paper's READ (each token corrected from its own states alone); "
                          "attention adds one light self-attention layer (4 heads, width rnn_dim) over "
                          "each example's tokens before W_out, so the correction of a token can depend "
                          "on the other tokens (and on the other sentence of a pair); rnn runs one "
                          "bidirectional RNN of rnn_type over the tokens instead (rnn_dim/2 per "
                          "direction), nonlinear in a token's neighbours."},
    )
    joiner: str = field(
        default="norm",
        metadata={"help": "How each layer's state becomes the RNN's input. norm is the paper's Joiner "
                          "(LayerNorm/RMSNorm of the d-wide state; the RNN maps d -> its gates); "
                          "projection normalises without parameters and maps every layer's state to "
                          "width rnn_dim with one shared Linear, so the RNN runs at width rnn_dim: less "
                          "compute and memory per token and layer."},
    )
    input_scale: float = field(
        default=1.0,
        metadata={"help": "Multiplier on the normalised backbone states fed to the RNN."},
    )
    output_scale: float = field(
        default=1.0,
        metadata={"help": "Multiplier on the correction W_out(h) added to the final hidden state."},
    )
    pooling: Optional[str] = field(
        default=None,
        metadata={"help": "SEQ_CLS only: which positions the head reads: cls (first token), mean "
                          "(over real tokens), mean_max (the mean and the per-feature max over real "
                          "tokens, 2d features), attention (real tokens weighed by a softmax of their "
                          "dot product with a learned query, zero at first: mean pooling until it "
                          "learns), last (last real token) or pair (two-text inputs: the "
                          "mean u of the first text's tokens and v of the second's, read as "
                          "[u, v, |u-v|, u*v]). None picks mean for encoders and encoder-decoders, "
                          "last for decoder-only models."},
    )
    num_labels: Optional[int] = field(
        default=None,
        metadata={"help": "SEQ_CLS only: classes (1 means regression). None reads the backbone "
                          "config's num_labels."},
    )
    head_dropout: float = field(
        default=0.1,
        metadata={"help": "Dropout before the classification head (train mode only)."},
    )
    # Identity of the backbone the side network was trained on; filled by get_read_model and
    # checked on load, so a side network never lands silently on the wrong backbone.
    base_model_name_or_path: Optional[str] = field(
        default=None, metadata={"help": "Backbone name or path (recorded, informative)."})
    backbone_model_type: Optional[str] = field(
        default=None, metadata={"help": "Backbone config.model_type (recorded, checked on load)."})
    backbone_hidden_size: Optional[int] = field(
        default=None, metadata={"help": "Backbone hidden size d (recorded, checked on load)."})
    backbone_num_layers: Optional[int] = field(
        default=None, metadata={"help": "Backbone layer count N (recorded, checked on load)."})

    def __post_init__(self) -> None:
        if isinstance(self.layers, list) and len(self.layers) > MAX_LAYERS:  # before walking it
            raise ConfigError(f"layers has {len(self.layers):,d} entries ({short(self.layers)}); "
                              f"at most {MAX_LAYERS} can be read")
        check_types(self)
        if self.task_type not in TASK_TYPES:
            raise ConfigError(f"task_type={short(self.task_type)}: choose one of {', '.join(TASK_TYPES)}")
        if self.rnn_type not in RNN_TYPES:
            raise ConfigError(f"rnn_type={short(self.rnn_type)}: choose one of {', '.join(RNN_TYPES)}")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(f"aggregation={short(self.aggregation)}: choose mean or last")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={short(self.pooling)}: choose {', '.join(POOLINGS)} or None")
        if self.mixing not in MIXINGS:
            raise ConfigError(f"mixing={short(self.mixing)}: choose {', '.join(MIXINGS)}")
        if self.joiner not in JOINERS:
            raise ConfigError(f"joiner={short(self.joiner)}: choose {' or '.join(JOINERS)}")
        if self.mixing != "none" and self.task_type != "SEQ_CLS":
            # an LM's tokens must not see later tokens; mixing over them would need a causal mask
            raise ConfigError(f"mixing={self.mixing!r} works with task_type SEQ_CLS only; use mixing='none'")
        if not 1 <= self.rnn_dim <= MAX_RNN_DIM:
            raise ConfigError(f"rnn_dim={short(self.rnn_dim)}: must be between 1 and {MAX_RNN_DIM}")
        if self.mixing == "attention" and self.rnn_dim % 4:
            raise ConfigError(f"rnn_dim={self.rnn_dim}: mixing='attention' splits it over 4 heads; "
                              f"use a multiple of 4")
        if self.mixing == "rnn" and self.rnn_dim % 2:
            raise ConfigError(f"rnn_dim={self.rnn_dim}: mixing='rnn' runs rnn_dim/2 per direction; use an even number")
        if self.bidirectional and (self.rnn_dim % 2 or self.aggregation != "mean"):
            raise ConfigError(f"bidirectional=True runs rnn_dim/2 per direction and averages over depth: use an "
                              f"even rnn_dim (got {self.rnn_dim}) and aggregation='mean' (got {self.aggregation!r})")
        if not 1 <= self.layer_stride <= MAX_LAYERS:
            raise ConfigError(f"layer_stride={short(self.layer_stride)}: must be between 1 and {MAX_LAYERS}")
        if self.layers is not None and self.layer_stride != 1:
            raise ConfigError(f"layers={short(self.layers)} and layer_stride={self.layer_stride}: give one of them")
        if self.layers is not None:
            if not self.layers:
                raise ConfigError("layers=[]: give at least one layer, or None for all")
            if any(not 0 <= i <= MAX_LAYERS for i in self.layers) or len(set(self.layers)) != len(self.layers):
                raise ConfigError(f"layers={short(self.layers)}: need distinct indices in 0..{MAX_LAYERS}")
            self.layers = sorted(self.layers)
        for name in ("input_scale", "output_scale"):
            value = getattr(self, name)
            if not (value == value and abs(value) != float("inf")) or value == 0:
                raise ConfigError(f"{name}={value}: must be a finite, non-zero number")
        if not 0.0 <= self.head_dropout < 1.0:
            raise ConfigError(f"head_dropout={self.head_dropout}: must be in [0, 1)")
        if self.num_labels is not None and not 1 <= self.num_labels <= MAX_NUM_LABELS:
            raise ConfigError(f"num_labels={short(self.num_labels)}: must be between 1 (regression) and "
                              f"{MAX_NUM_LABELS:,d}")

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save_pretrained(self, directory: str | Path) -> Path:
        path = Path(directory) / CONFIG_NAME
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)  # atomic: a reader never sees half a config
        return path

    @classmethod
    def from_dict(cls, data: Any) -> "ReadConfig":
        if not isinstance(data, dict):
            raise ConfigError(f"a ReadConfig must be a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        data = {**{k: v for k, v in ADDED_LATER.items() if k not in data}, **data}
        missing = sorted(names - set(data))
        if unknown:
            raise ConfigError(f"unknown config key(s) {short(unknown)}; known keys: {sorted(names)}")
        if missing:
            raise ConfigError(f"config is missing key(s) {missing}; was it written by readapt?")
        return cls(**data)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "ReadConfig":
        path = Path(directory) / CONFIG_NAME
        try:  # a regular file under a small cap, or refused unread
            raw = read_user_bytes(path, CONFIG_MAX_BYTES)
        except InputFileError as exc:
            if exc.missing:
                plain = (Path(directory) / "model.safetensors").is_file()  # what a plain transformers.Trainer writes
                hint = (": it holds model.safetensors, as a plain transformers.Trainer saves a model; train with "
                        "readapt.ReadTrainer, which saves READ" if plain else ": is it a saved READ model directory?")
                raise ConfigError(f"no {CONFIG_NAME} in {directory}{hint}") from None
            hint = f"; a {CONFIG_NAME} written by readapt is a few hundred bytes" if exc.too_large else ""
            raise ConfigError(f"{exc}{hint}") from None
        except OSError as exc:
            raise ConfigError(f"{path} {os_problem(exc, path)}") from None
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not valid JSON ({exc}); the file is corrupted") from None
        except (RecursionError, ValueError) as exc:  # absurd nesting; an int past the digit limit
            raise ConfigError(f"{path} is not a usable JSON config ({type(exc).__name__}); the file is "
                              f"corrupted") from None
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None


def check_types(config: Any) -> None:
    """Reject wrong JSON types early: bool is not an int, a string is not a list."""
    hints = get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if not _matches(value, hints[f.name]):
            raise ConfigError(f"{f.name}={short(value)}: expected {_type_name(hints[f.name])}")
        if isinstance(value, int) and not isinstance(value, bool) and hints[f.name] in (float, Optional[float]):
            try:
                setattr(config, f.name, float(value))
            except OverflowError:
                raise ConfigError(f"{f.name}: an integer too large for a float; use a number like 1.0") from None


def _matches(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin is None:
        if hint is float:
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if hint is int:
            return isinstance(value, int) and not isinstance(value, bool)
        return isinstance(value, hint)
    if origin is list:
        (item,) = get_args(hint)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    # Optional[X] / Union
    return any(_matches(value, arg) for arg in get_args(hint))


def _type_name(hint: Any) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


_SHORT = reprlib.Repr()
_SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 6, 4, 60, 60, 40


def short(value: Any) -> str:
    """repr() for an error message: a 10M-entry list or a 1 MB string prints a few items."""
    return _SHORT.repr(value)
