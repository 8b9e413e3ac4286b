"""The READ side network: a small RNN that walks a frozen backbone's layers and learns a correction.

READ - REcurrent ADaptation of large transformers (Wang et al., Meta AI, 2023)
https://arxiv.org/abs/2305.15348

    frozen backbone, run once under no_grad              side network (trained)
    tokens -> [emb] -> [layer 1] -> [layer 2] -> ... -> [layer N] -------------(+)--> head
                           |            |                   |                   ^
                           v            v                   v                   |
                       Joiner_1     Joiner_2     ...    Joiner_N                |
                           |            |                   |                   |
               h_0=0 -> [RNN cell] -> [RNN cell] -> ... -> [RNN cell] -> mean -> W_out (r -> d)

Fine-tuning would move the final state by d_N = phi_N' - phi_N, and to first order
d_i ~= J_i d_{i-1} + dF_i(phi_{i-1}): a recurrence over depth. The RNN learns it. Each token is
its own sequence of N steps (RNN batch = tokens), and one RNN serves every layer, so the side
network's size depends on the width d and r, never on the depth N.

Token mixing (``mixing="attention"``, a departure from the paper, chosen on validation: README,
"What we tried"). Plain READ corrects each token from that token's own states across depth, so
nothing relates one token to another: what full fine-tuning learns in attention between two
sentences, plain READ cannot express. With mixing, one light self-attention layer runs over each
example's tokens in side space (width r), after the depth recurrence and before W_out:

    per token:   states across depth -> RNN -> mean over depth -> h        (M, r)
    per example: h -> h + SelfAttention(LayerNorm(h))                        (B, T, r)
    per token:   -> W_out (r -> d), zero-initialised                         (M, d)

``mixing="rnn"`` runs one bidirectional RNN over the tokens in its place: under mean pooling
and a linear head, attention's output reaches the logits only as a learned weighting of the
tokens, while the RNN's is nonlinear in a token's neighbours ("not" before "good"). Neither
became a default (README, "What we tried"). Both still read only the frozen states (nothing
backpropagates into the backbone) and W_out still starts at zero, so a fresh model is still
exactly the backbone.

Projecting Joiner (``joiner="projection"``, a departure from the paper, chosen on validation:
README, "A cheaper side network"). The paper's Joiner hands the RNN the d-wide normalised state, so
the RNN's input map (d -> 4r for an LSTM) runs for every token at every layer, and the norm's own
parameters make autograd keep a d-wide copy of every state it reads. The projecting Joiner maps each
state straight to width r with one Linear shared by all layers, after a parameter-free norm (the
norm's affine map is inside the Linear), so the RNN runs at width r and nothing d-wide but the
frozen states themselves is kept for the backward pass:

    paper:       x_i = LayerNorm(phi_i) * s                 (d)  -> RNN(d -> r)
    projection:  x_i = W_in norm(phi_i) * s + b              (r)  -> RNN(r -> r)

bfloat16 compute (``compute_dtype``, a departure chosen on validation: README, "The side network in
bfloat16"). The side network's matrix products may run under autocast in bfloat16: its weights,
gradients and optimizer state stay float32, and its correction is handed back in float32, so the
residual sum phi_N + correction keeps the backbone's precision. On a CPU with AMX that makes the
side network about 2x cheaper; on a GPU it saves memory but not time (:func:`side_dtype`).

This module takes tensors only (it knows no Hugging Face class): backbones/ produce the states,
model.py wires them together.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_RNNS = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}
MIXING_HEADS = 4
SIDE_DTYPES = ("auto", "float32", "bfloat16")


def cpu_has_amx() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in AMX tiles (Intel Sapphire Rapids on)."""
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


@functools.cache
def onednn_runs_bfloat16_lstm() -> bool:
    """Whether oneDNN runs an LSTM in bfloat16 on this CPU: its bfloat16 kernels need AVX-512, and on
    an AVX2 CPU it refuses the LSTM ("could not create a primitive descriptor"). Tried once, tiny."""
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            nn.LSTM(8, 8)(torch.zeros(1, 1, 8))
        return True
    except RuntimeError:
        return False


def run_rnn(rnn: nn.RNNBase, x):
    """rnn(x), also under bfloat16 autocast on a CPU where oneDNN has no bfloat16 LSTM: there it
    runs PyTorch's own kernels instead of refusing (slower, but such a CPU has nothing faster for
    bfloat16 anyway; ``auto`` keeps it in float32)."""
    if (torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
            and not onednn_runs_bfloat16_lstm()):
        mkldnn = torch.backends.mkldnn
        enabled, mkldnn.enabled = mkldnn.enabled, False  # (its flags() would reset TF32 settings too)
        try:
            return rnn(x)
        finally:
            mkldnn.enabled = enabled
    return rnn(x)


def resolve_side_dtype(name: str, device: Union[str, torch.device]) -> str:
    """What a side network on ``device`` computes in for the option ``name``: "float32" or "bfloat16".

    ``auto`` is bfloat16 where it made the side network faster when measured (README, "The side
    network in bfloat16"): a CPU with AMX (about 2x). On a GPU it is float32: there the side network's
    small kernels are launch-bound, and autocast's casts made a step slower (BERT-large 1.34x ->
    1.43x a frozen forward on an H200), for less memory; ask for bfloat16 to trade the one for the
    other. Elsewhere bf16 is emulated or merely converted."""
    if name not in SIDE_DTYPES:
        raise ValueError(f"side dtype {name!r}: choose one of {', '.join(SIDE_DTYPES)}")
    if name == "auto":
        return "bfloat16" if torch.device(device).type == "cpu" and cpu_has_amx() else "float32"
    return name


def side_dtype(name: str, device: Union[str, torch.device]) -> Optional[torch.dtype]:
    """The autocast dtype for a side network on ``device`` (:func:`resolve_side_dtype`): torch.bfloat16,
    or None for float32."""
    return torch.bfloat16 if resolve_side_dtype(name, device) == "bfloat16" else None


class RMSNorm(nn.Module):
    """Scale-only norm, for backbones that use RMSNorm themselves (T5, Llama)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)


def scaled(x: torch.Tensor, scale: float) -> torch.Tensor:
    """x * scale, without the full-size multiply (and its backward) when scale is 1, the default."""
    return x if scale == 1.0 else x * scale


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    return RMSNorm(dim, eps) if kind == "rmsnorm" else nn.LayerNorm(dim, eps=eps)


class Joiner(nn.Module):
    """Builds the RNN input at each layer: x_i = norm(phi_i) * input_scale.

    With ``cross=True`` (the decoder of an encoder-decoder model) it also takes c_i, the
    first-order effect of the encoder's correction on decoder layer i through the frozen
    cross-attention's value path, and merges the two: x_i = proj([norm(phi_i) * s, c_i]).
    """

    def __init__(self, dim: int, norm: str = "layernorm", eps: float = 1e-12,
                 input_scale: float = 1.0, cross: bool = False):
        super().__init__()
        self.norm = make_norm(norm, dim, eps)
        self.input_scale = input_scale
        self.proj = nn.Linear(2 * dim, dim) if cross else None

    def forward(self, states: torch.Tensor, cross: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = scaled(self.norm(states), self.input_scale)
        if self.proj is None:
            return x
        if cross is None:
            raise ValueError("this Joiner merges a cross-attention term: pass cross=")
        return self.proj(torch.cat([x, cross.to(x.dtype)], dim=-1))


class ProjectingJoiner(nn.Module):
    """Builds the RNN input at width r: x_i = W_in (norm(phi_i) * input_scale) + b, one W_in for
    every layer; the norm has no parameters (its affine map would be folded into W_in anyway).

    With ``cross=True`` it adds the encoder correction's cross-attention term c_i through its own
    map: x_i = W_in (norm(phi_i) * s) + W_c c_i + b.
    """

    def __init__(self, dim: int, rnn_dim: int, norm: str = "layernorm", eps: float = 1e-12,
                 input_scale: float = 1.0, cross: bool = False):
        super().__init__()
        self.rms, self.eps, self.input_scale = norm == "rmsnorm", eps, input_scale
        self.proj = nn.Linear(dim, rnn_dim)
        self.cross_proj = nn.Linear(dim, rnn_dim, bias=False) if cross else None

    def normalise(self, states: torch.Tensor) -> torch.Tensor:
        if self.rms:
            return states * torch.rsqrt(states.pow(2).mean(-1, keepdim=True) + self.eps)
        return nn.functional.layer_norm(states, states.shape[-1:], eps=self.eps)

    def forward(self, states: torch.Tensor, cross: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.proj(scaled(self.normalise(states), self.input_scale))
        if self.cross_proj is None:
            return x
        if cross is None:
            raise ValueError("this Joiner merges a cross-attention term: pass cross=")
        return x + self.cross_proj(cross.to(x.dtype))


class TokenStates:
    """The side network's input, (L, M, d): L layers' states at the M positions where ``read`` (B, T)
    is True, gathered from the backbone's (B, T, d) layer outputs one chunk of tokens at a time.

    Why lazy: with mean pooling M is every real token, so a stacked copy would be as large as all the
    backbone's states together; gathered per chunk, only one chunk's copy exists at a time.
    """

    def __init__(self, layers: Sequence[torch.Tensor], read: torch.Tensor):
        self.layers = [layer.reshape(-1, layer.shape[-1]) for layer in layers]       # (B*T, d) views
        self.rows, self.cols = read.nonzero(as_tuple=True)
        self.flat = self.rows * read.shape[1] + self.cols

    def __len__(self) -> int:
        return self.rows.numel()

    def take(self, start: int, stop: int) -> torch.Tensor:
        index = self.flat[start:stop]
        if torch.is_grad_enabled() and any(layer.requires_grad for layer in self.layers):  # read_top's top layer
            return torch.stack([layer.index_select(0, index) for layer in self.layers])
        # Frozen states: gathered straight into one (L, n, d) block, each value copied once (a gather
        # per layer and then a stack copies it twice, and two-tensor indexing is the slower gather)
        first = self.layers[0]
        out = first.new_empty(len(self.layers), index.numel(), first.shape[-1])
        for layer, rows in zip(self.layers, out):
            torch.index_select(layer, 0, index, out=rows)
        return out


States = Union[torch.Tensor, TokenStates]


def _count(states: States) -> int:
    return states.shape[1] if isinstance(states, torch.Tensor) else len(states)


def _take(states: States, start: int, stop: int) -> torch.Tensor:
    return states[:, start:stop] if isinstance(states, torch.Tensor) else states.take(start, stop)


class TokenMixer(nn.Module):
    """One pre-norm self-attention layer, with a residual, over each example's tokens in side
    space. Padding never attends or is attended to; the output keeps the input's token layout."""

    def __init__(self, dim: int, heads: int = MIXING_HEADS):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, h: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
        """h (M, r): the tokens at the True positions of ``read`` (B, T), in row-major order."""
        rows, cols = read.nonzero(as_tuple=True)
        grid = h.new_zeros(*read.shape, h.shape[-1]).index_put((rows, cols), h)      # (B, T, r)
        x = self.norm(grid)
        mixed, _ = self.attention(x, x, x, key_padding_mask=~read, need_weights=False)
        return h + mixed[rows, cols]


class TokenRNN(nn.Module):
    """One pre-norm bidirectional RNN, with a residual, over each example's tokens in side space
    (width/2 per direction). Padding is never read: each row's tokens are packed, so the output
    keeps the input's token layout whatever the padding (or holes) around them."""

    def __init__(self, dim: int, rnn_type: str = "lstm"):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.rnn = _RNNS[rnn_type](dim, dim // 2, batch_first=True, bidirectional=True)

    def forward(self, h: torch.Tensor, read: torch.Tensor) -> torch.Tensor:
        """h (M, r): the tokens at the True positions of ``read`` (B, T), in row-major order."""
        rows, cols = read.nonzero(as_tuple=True)
        slots = (read.cumsum(1) - 1)[rows, cols]              # each token's place among its row's
        lengths = read.sum(1)
        grid = h.new_zeros(read.shape[0], int(lengths.max()), h.shape[-1]).index_put((rows, slots), h)
        keep = lengths > 0                                     # pack refuses empty rows
        packed = nn.utils.rnn.pack_padded_sequence(self.norm(grid[keep]), lengths[keep].cpu(),
                                                   batch_first=True, enforce_sorted=False)
        out, _ = nn.utils.rnn.pad_packed_sequence(run_rnn(self.rnn, packed)[0], batch_first=True,
                                                  total_length=grid.shape[1])
        mixed = grid.new_zeros(grid.shape[0], grid.shape[1], out.shape[-1])
        mixed[keep] = out
        return h + mixed[rows, slots]


class SideNetwork(nn.Module):
    """RNN over depth + aggregation (+ optional token mixing) + zero-initialised W_out.

    forward(states (L, M, d) or TokenStates, cross (L, M, d) or None, read (B, T) or None)
    -> correction (M, d), where L is the number of layers read and M the number of token
    sequences; ``read`` says where those M tokens sit in the batch (needed only with token mixing).

    ``chunk_tokens`` bounds training memory. The M sequences are independent, so with gradients
    on the network runs over at most ``chunk_tokens`` of them at a time and recomputes each chunk
    in the backward pass (activation checkpointing): what autograd keeps is one chunk's RNN
    activations, not M tokens' worth, whatever the batch's length. The correction and the
    gradients are those of the unchunked network; the price is one more side-network forward,
    small beside the frozen backbone's pass. None runs all M at once.

    ``compute_dtype`` (None: the weights' dtype) runs the network under autocast in that dtype; the
    correction comes back in the weights' dtype either way.
    """

    def __init__(self, dim: int, rnn_dim: int = 128, rnn_type: str = "gru", aggregation: str = "mean",
                 norm: str = "layernorm", eps: float = 1e-12, input_scale: float = 1.0,
                 output_scale: float = 1.0, cross: bool = False, chunk_tokens: Optional[int] = None,
                 mixing: str = "none", joiner: str = "norm", bidirectional: bool = False):
        super().__init__()
        self.chunk_tokens = chunk_tokens
        self.compute_dtype: Optional[torch.dtype] = None
        if joiner == "projection":
            self.joiner = ProjectingJoiner(dim, rnn_dim, norm, eps, input_scale, cross)
        else:
            self.joiner = Joiner(dim, norm, eps, input_scale, cross)
        rnn_input = rnn_dim if joiner == "projection" else dim
        # (L, M, width) layout: time = depth; both directions: rnn_dim/2 each, concatenated to rnn_dim
        self.rnn = _RNNS[rnn_type](rnn_input, rnn_dim // 2 if bidirectional else rnn_dim, bidirectional=bidirectional)
        self.aggregation = aggregation
        self.output_scale = output_scale
        self.mixer: Optional[nn.Module] = None
        if mixing == "attention":
            self.mixer = TokenMixer(rnn_dim)
        elif mixing == "rnn":
            self.mixer = TokenRNN(rnn_dim, rnn_type)
        self.out = nn.Linear(rnn_dim, dim, bias=False)
        # Zero init: before the first update the model is exactly the frozen backbone.
        nn.init.zeros_(self.out.weight)

    def forward(self, states: States, cross: Optional[torch.Tensor] = None,
                read: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self._in_compute_dtype(self._forward, states, cross, read)

    def mean_correction(self, states: States, read: torch.Tensor) -> torch.Tensor:
        """(B, d): each row's mean over its ``read`` tokens of :meth:`forward`'s correction, what a
        mean-pooling head reads of it. W_out is linear, so it maps each row's mean RNN summary once
        instead of mapping every token's and averaging those: the same value (to rounding), and the
        output map's matrix products shrink from one row per token to one per example."""
        return self._in_compute_dtype(self._mean_correction, states, read)

    def _in_compute_dtype(self, fn, *args) -> torch.Tensor:
        weights = self.out.weight
        if self.compute_dtype is None or self.compute_dtype == weights.dtype:
            return fn(*args)
        with torch.autocast(weights.device.type, dtype=self.compute_dtype):
            return fn(*args).to(weights.dtype)

    def _mean_correction(self, states: States, read: torch.Tensor) -> torch.Tensor:
        h = self._chunked(self._summary, states, None)                                  # (M, r)
        if self.mixer is not None:
            h = self.mixer(h, read)
        rows = read.nonzero(as_tuple=True)[0]
        # the sum in float32: a bfloat16 sum over a long row's tokens would round away its small terms
        sums = torch.zeros(read.shape[0], h.shape[-1], device=h.device).index_add_(0, rows, h.float())
        return scaled(self.out(sums / read.sum(1, keepdim=True).clamp(min=1)), self.output_scale)

    def _forward(self, states: States, cross: Optional[torch.Tensor], read: Optional[torch.Tensor]) -> torch.Tensor:
        if self.mixer is None:  # every token on its own: W_out can be part of the chunked pass
            return self._chunked(self._correction, states, cross)
        if read is None:
            raise ValueError("a side network with token mixing needs read= (where its tokens sit)")
        return scaled(self.out(self.mixer(self._chunked(self._summary, states, cross), read)), self.output_scale)

    def _chunked(self, fn, states: States, cross: Optional[torch.Tensor]) -> torch.Tensor:
        chunk, total = self.chunk_tokens, _count(states)
        if chunk is None or total <= chunk or not torch.is_grad_enabled():
            return fn(_take(states, 0, total), cross)
        starts = range(0, total, chunk)
        crosses = cross.split(chunk, dim=1) if cross is not None else [None] * len(starts)

        def run(start: int, cross_chunk: Optional[torch.Tensor]) -> torch.Tensor:
            # the chunk is gathered inside the checkpoint: recomputed in backward, never kept
            return fn(_take(states, start, start + chunk), cross_chunk)

        return torch.cat([checkpoint(run, start, c, use_reentrant=False) for start, c in zip(starts, crosses)])

    def _summary(self, states: torch.Tensor, cross: Optional[torch.Tensor]) -> torch.Tensor:
        """(L, M, d) -> (M, r): the RNN over depth, aggregated."""
        x = self.joiner(states.to(self.out.weight.dtype), cross)
        outputs, _ = run_rnn(self.rnn, x)            # h_0 = 0
        return outputs.mean(0) if self.aggregation == "mean" else outputs[-1]

    def _correction(self, states: torch.Tensor, cross: Optional[torch.Tensor]) -> torch.Tensor:
        return scaled(self.out(self._summary(states, cross)), self.output_scale)
