"""ReadModel: a frozen backbone + READ side network(s) + task head, with PEFT-style save/load.

    from readapt import ReadConfig, get_read_model, ReadModel
    model = get_read_model(backbone, ReadConfig(task_type="SEQ_CLS", rnn_dim=128))
    out = model(input_ids=..., attention_mask=..., labels=...)   # out.loss, out.logits
    model.save_pretrained(out_dir)         # read_config.json + read_model.safetensors + README.md
    model = ReadModel.from_pretrained(backbone, out_dir)       # or a Hub id: "user/repo"
    model.push_to_hub("user/repo")
    with model.disable_adapter(): ...      # the backbone's own output, without the correction
    model.generate(input_ids=..., max_new_tokens=20)  # LM tasks: corrected, with the KV cache

transformers.Trainer: use readapt.trainer.ReadTrainer, which saves and resumes these files.

The backbone runs once per batch under no_grad; the side network runs only at the positions the
head reads (each token is its own RNN sequence), and its correction lands on the final state:
phi_N' = phi_N + correction. For T5 the encoder side network's correction reaches the decoder
side network through the Joiner's cross-attention term (backbones/seq2seq.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from transformers.modeling_outputs import CausalLMOutput, Seq2SeqLMOutput, SequenceClassifierOutput

from readapt import card, hub
from readapt.backbones import BackboneStates, family, load_backbone
from readapt.checkpoint import save_tensors
from readapt.config import CONFIG_NAME, MAX_NUM_LABELS, WEIGHTS_NAME, ConfigError, ReadConfig, short
from readapt.heads import ClassificationHead, lm_loss, pool, pooled_size, positions_read
from readapt.inputs import InputFileError, check_user_file, human_bytes
from readapt.side import SideNetwork, TokenStates

# Token sequences the side network trains on at a time, which bounds its activation memory at
# about one chunk's for any batch. On a CPU a training step runs the batch in parts of whole
# examples of about SIDE_PART_TOKENS side tokens (microbatch.py: nothing recomputed; on MiniLM 256
# took about 1,024's time, and the paper network's tensor peak fell from 1.85x to 1.00x a frozen
# forward's: README, "One training step"); on a
# GPU the side network checkpoints chunks of SIDE_CHUNK_TOKENS (SideNetwork.chunk_tokens: one more
# side forward, cheaper there than parts' extra kernel launches).
SIDE_PART_TOKENS = 256
SIDE_CHUNK_TOKENS = 1024

# What the side network(s) and head may hold, in fp32 bytes, checked before any is allocated.
# READ's default (r=128) on a 4096-wide backbone is ~9 MB: this is over 200x that.
MAX_TRAINABLE_BYTES = 2 * 1024**3
_GATES = {"lstm": 4, "gru": 3, "rnn": 1}


class ReadModel(nn.Module):
    def __init__(self, backbone: nn.Module, config: ReadConfig):
        super().__init__()
        self.runner = load_backbone(backbone)          # freezes the backbone, eval mode
        self.base_model = backbone                     # a submodule so .to(device) moves it
        self.config = config
        self.correction_enabled = True                 # off inside disable_adapter()
        kind = self.runner.family
        if config.task_type == "SEQ_2_SEQ_LM" and kind != "seq2seq":
            raise ConfigError(f"task_type SEQ_2_SEQ_LM needs an encoder-decoder backbone, got {kind}")
        if config.task_type == "CAUSAL_LM" and kind != "causal":
            raise ConfigError(f"task_type CAUSAL_LM needs a decoder-only backbone, got {kind}")
        if kind == "seq2seq" and config.task_type != "SEQ_2_SEQ_LM":
            raise ConfigError("T5 backbones are text-to-text: use task_type SEQ_2_SEQ_LM")
        self.layers = self._layers_read(self.runner.num_layers)
        if kind == "seq2seq":
            self.encoder_layers = self._layers_read(self.runner.num_encoder_layers)
        d, r = self.runner.hidden_size, config.rnn_dim
        num_labels = None
        if config.task_type == "SEQ_CLS":
            num_labels = config.num_labels or getattr(backbone.config, "num_labels", None) or 2
        check_trainable_size(config, d, self.runner.norm, kind, num_labels)
        side = dict(rnn_dim=r, rnn_type=config.rnn_type, aggregation=config.aggregation,
                    norm=self.runner.norm, eps=self.runner.eps,
                    input_scale=config.input_scale, output_scale=config.output_scale,
                    chunk_tokens=SIDE_CHUNK_TOKENS, joiner=config.joiner, bidirectional=config.bidirectional)
        self.side_chunk_tokens: Optional[int] = SIDE_PART_TOKENS  # training's parts (microbatch.py)
        self.side = SideNetwork(d, cross=kind == "seq2seq", mixing=config.mixing, **side)
        if kind == "seq2seq":
            self.encoder_side = SideNetwork(d, **side)
        self.head: Optional[ClassificationHead] = None
        if config.task_type == "SEQ_CLS":
            pooling = config.pooling or ("last" if kind == "causal" else "mean")
            self.head = ClassificationHead(d, num_labels, pooling, config.head_dropout)

    def _layers_read(self, num_layers: int) -> list[int]:
        """config.layers, else every layer_stride-th layer counted down from the last (the state
        corrected, so the RNN always reads it last)."""
        layers = self.config.layers or list(range(num_layers, 0, -self.config.layer_stride))[::-1]
        if max(layers) > num_layers:
            raise ConfigError(f"layers={short(layers)}: the backbone has layers 0..{num_layers}")
        return layers

    def set_side_chunk_tokens(self, tokens: Optional[int]) -> "ReadModel":
        """Train the side network(s) over at most ``tokens`` token sequences at a time, both in the
        parts of whole examples readapt's training step runs on a CPU (microbatch.py; default
        SIDE_PART_TOKENS) and in the chunks a side network called on more tokens recomputes in the
        backward pass (on a GPU, or a caller's own ``model(**batch)``; default SIDE_CHUNK_TOKENS).
        None trains on all of a batch's tokens at once (fewer, larger kernels; more memory). The
        results are the same either way."""
        if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
            raise ValueError(f"side chunk size {tokens!r}: give a positive number of tokens, or None")
        self.side_chunk_tokens = tokens
        for module in self.modules():
            if isinstance(module, SideNetwork):
                module.chunk_tokens = tokens
        return self

    def set_side_dtype(self, dtype: Optional[torch.dtype]) -> "ReadModel":
        """Run the side network(s) under autocast in ``dtype`` (torch.bfloat16), or None for their
        weights' own dtype (float32). Weights, gradients, optimizer state and the correction handed
        to the backbone's final state stay float32; only the side network's products change precision
        (readapt.side.side_dtype picks it from the device)."""
        if dtype not in (None, torch.bfloat16, torch.float32):
            raise ValueError(f"side dtype {dtype!r}: give torch.bfloat16, or None for float32")
        for module in self.modules():
            if isinstance(module, SideNetwork):
                module.compute_dtype = None if dtype == torch.float32 else dtype
        return self

    def train(self, mode: bool = True) -> "ReadModel":
        super().train(mode)
        self.base_model.eval()  # the backbone never leaves eval mode: its states stay deterministic
        return self

    # -- PEFT's names --------------------------------------------------------------------------
    def get_base_model(self) -> nn.Module:
        """The frozen backbone (PEFT's PeftModel.get_base_model)."""
        return self.base_model

    @contextlib.contextmanager
    def disable_adapter(self):
        """Inside this block the model gives the backbone's own output: the head (classification)
        or the frozen LM head reads the uncorrected final state (PEFT's disable_adapter)."""
        was, self.correction_enabled = self.correction_enabled, False
        try:
            yield self
        finally:
            self.correction_enabled = was

    # -- forward -------------------------------------------------------------------------------
    def backbone_states(self, **batch) -> BackboneStates:
        """The frozen pass alone (cacheable: it carries no autograd history)."""
        return self.runner.run(**batch)

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None,
                decoder_input_ids=None, decoder_attention_mask=None,
                states: Optional[BackboneStates] = None, segment_ids=None, **_):
        if states is None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            states = self.states_read(self.runner.run(input_ids=input_ids, attention_mask=attention_mask,
                                                      token_type_ids=token_type_ids, labels=labels,
                                                      decoder_input_ids=decoder_input_ids,
                                                      decoder_attention_mask=decoder_attention_mask))
        if self.config.task_type == "SEQ_CLS":
            return self._classify(states, labels, segment_ids)
        if self.config.task_type == "CAUSAL_LM":
            return self._causal_lm(states, labels)
        return self._seq2seq_lm(states, labels)

    def corrected_final_state(self, states: BackboneStates, read: torch.Tensor,
                              cross: Optional[torch.Tensor] = None) -> torch.Tensor:
        """phi_N + correction at the ``read`` positions (B, T) bool; other positions unchanged."""
        if not self.correction_enabled:  # disable_adapter(): the backbone's own final state
            return states.hidden_states[-1].to(self.side.out.weight.dtype)
        tokens = TokenStates([states.hidden_states[i] for i in self.layers], read)      # (L, M, d)
        cross_read = None if cross is None else cross[:, read]                          # (L, M, d)
        correction = self.side(tokens, cross_read, read)                                # (M, d)
        final = states.hidden_states[-1]
        where = (tokens.rows, tokens.cols)                                               # the M positions read
        return final.to(correction.dtype).index_put(where, final[where].to(correction.dtype) + correction)

    def corrected_mean(self, states: BackboneStates) -> torch.Tensor:
        """(B, d): mean pooling of phi_N + correction over each row's real tokens, computed as
        mean(phi_N) + mean(correction) (SideNetwork.mean_correction: W_out runs once per example,
        not once per token; the head reads the same features, to rounding)."""
        read = states.attention_mask.bool()
        tokens = TokenStates([states.hidden_states[i] for i in self.layers], read)
        correction = self.side.mean_correction(tokens, read)                             # (B, d)
        return pool(states.hidden_states[-1].to(correction.dtype), states.attention_mask, "mean") + correction

    def states_read(self, states: BackboneStates) -> BackboneStates:
        """``states`` with None for every layer nothing here reads, so those are freed before the side
        network runs: the layers read, the final state and, for T5, the decoder's embeddings (the
        shape of the Joiner's layer-0 term) and the cross-attention of the decoder layers read."""
        def keep(tensors: Optional[tuple], wanted: set[int]) -> Optional[tuple]:
            return None if tensors is None else tuple(t if i in wanted else None for i, t in enumerate(tensors))

        final = len(states.hidden_states) - 1
        if self.runner.family != "seq2seq":
            return dataclasses.replace(states, hidden_states=keep(states.hidden_states, {*self.layers, final}))
        return dataclasses.replace(
            states, hidden_states=keep(states.hidden_states, {0, *self.layers, final}),
            encoder_hidden_states=keep(states.encoder_hidden_states, set(self.encoder_layers)),
            cross_attentions=keep(states.cross_attentions, {i - 1 for i in self.layers if i > 0}))

    def side_tokens(self, states: BackboneStates, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(rows,) how many token sequences the side network(s) run on in each row of the batch."""
        if self.config.task_type == "SEQ_CLS":
            read = positions_read(states.attention_mask, self.head.pooling)
        else:
            read = self._lm_positions(states.attention_mask, labels, shift=self.config.task_type == "CAUSAL_LM")
        count = read.sum(1)
        if states.encoder_attention_mask is not None:  # T5: the encoder's side network, on every real token
            count = count + states.encoder_attention_mask.bool().sum(1)
        return count

    def _classify(self, states: BackboneStates, labels, segment_ids=None):
        mask = states.attention_mask
        if self.head.pooling == "mean" and self.correction_enabled:
            logits = self.head.classify(self.corrected_mean(states))
        else:
            final = self.corrected_final_state(states, positions_read(mask, self.head.pooling))
            logits = self.head(final, mask, segment_ids)
        loss = self.head.loss(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)

    def _lm_positions(self, mask: torch.Tensor, labels: Optional[torch.Tensor], shift: bool) -> torch.Tensor:
        """Positions whose prediction the loss reads (all real ones when there are no labels)."""
        if labels is None:
            return mask.bool()
        if not shift:
            return labels != -100
        read = torch.zeros_like(mask, dtype=torch.bool)
        read[:, :-1] = labels[:, 1:] != -100   # position t predicts token t+1
        return read

    def _causal_lm(self, states: BackboneStates, labels):
        read = self._lm_positions(states.attention_mask, labels, shift=True)
        final = self.corrected_final_state(states, read)
        return self._lm_output(final, read, None if labels is None else labels[:, 1:][read[:, :-1]], CausalLMOutput)

    def _seq2seq_lm(self, states: BackboneStates, labels):
        read = self._lm_positions(states.attention_mask, labels, shift=False)
        if not self.correction_enabled:  # disable_adapter(): no side network runs at all
            final = self.corrected_final_state(states, read)
            return self._lm_output(final, read, None if labels is None else labels[read], Seq2SeqLMOutput)
        d_enc = self.encoder_correction(states.encoder_hidden_states, states.encoder_attention_mask)
        cross = self.cross_terms(d_enc, states.cross_attentions, states.hidden_states[0])
        final = self.corrected_final_state(states, read, cross)
        return self._lm_output(final, read, None if labels is None else labels[read], Seq2SeqLMOutput)

    def encoder_correction(self, encoder_hidden_states: tuple[torch.Tensor, ...],
                           encoder_mask: torch.Tensor) -> torch.Tensor:
        """T5: the encoder side network's correction d_enc, (B, T_enc, d), zero at padding."""
        enc_mask = encoder_mask.bool()
        enc_tokens = TokenStates([encoder_hidden_states[i] for i in self.encoder_layers], enc_mask)
        enc_correction = self.encoder_side(enc_tokens)                                 # (M_enc, d)
        d_enc = enc_correction.new_zeros(*enc_mask.shape, enc_correction.shape[-1])
        return d_enc.index_put(enc_mask.nonzero(as_tuple=True), enc_correction)         # (B, T_enc, d)

    def cross_terms(self, d_enc: torch.Tensor, cross_attentions: tuple[torch.Tensor, ...],
                    embeddings: torch.Tensor) -> torch.Tensor:
        """The Joiner's input from the encoder: d_enc's first-order effect on each decoder layer read,
        (L, B, T_dec, d), through that layer's cross-attention probabilities (B, H, T_dec, T_enc);
        ``embeddings`` (the decoder's phi_0) gives the shape of layer 0's term, which is zero."""
        return torch.stack([
            self.runner.cross_value_path(i, d_enc, cross_attentions[i - 1]) if i > 0
            else torch.zeros_like(embeddings, dtype=d_enc.dtype)
            for i in self.layers])

    def _lm_output(self, final, read, targets, output_cls):
        # The loss reads only the positions the side network corrected; full-vocabulary logits
        # for every position are returned for reading, outside the graph, to keep memory flat.
        # Where every position is read (targets of one length: a T5 classifier's label texts), the
        # loss's logits are those logits: the head (d x vocab, often the model's largest matrix)
        # runs once, not twice, and still as the model's own forward runs it.
        loss = None
        if targets is not None and bool(read.all()):
            logits = self.runner.lm_logits(final)
            return output_cls(loss=lm_loss(logits.flatten(0, -2), targets), logits=logits.detach())
        if targets is not None:
            loss = lm_loss(self.runner.lm_logits(final[read]), targets)
        with torch.no_grad():
            logits = self.runner.lm_logits(final)
        return output_cls(loss=loss, logits=logits)

    # -- generation ----------------------------------------------------------------------------
    def generate(self, *args, **kwargs):
        """Generate text with the correction at every new position (CAUSAL_LM and SEQ_2_SEQ_LM):
        the backbone's own ``generate`` (same arguments and outputs: greedy, sampling, beam search,
        GenerationConfig, logits processors, stopping criteria, streamers) with its KV cache, each
        step running the backbone on the new position only (readapt.generation says how)."""
        from readapt.generation import generate

        return generate(self, *args, **kwargs)

    # -- parameters ----------------------------------------------------------------------------
    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if p.requires_grad}

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        return trainable, total

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / total:.4f}")

    # -- persistence ---------------------------------------------------------------------------
    def save_pretrained(self, save_directory: str | Path, state_dict: Optional[dict[str, torch.Tensor]] = None,
                        safe_serialization: bool = True, is_main_process: bool = True, *,
                        dataset: Optional[str] = None, metrics: Optional[dict] = None,
                        command: Optional[str] = None) -> Path:
        """Writes read_config.json, read_model.safetensors (side network + head only, never the
        backbone) and a model card, README.md, naming ``dataset``, ``metrics`` and the training
        ``command`` when given. Takes transformers' arguments: ``state_dict`` (the model's full
        state dict, as Trainer and accelerate pass it: only READ's tensors are kept from it) and
        ``is_main_process`` (False writes nothing)."""
        if not safe_serialization:
            raise ValueError("readapt saves safetensors only (nothing executes on load): drop safe_serialization=False")
        directory = Path(save_directory)
        if not is_main_process:
            return directory
        tensors = self.trainable_state_dict()
        if state_dict is not None:
            missing = sorted(set(tensors) - set(state_dict))
            if missing:
                raise ValueError(f"the state_dict given to save_pretrained lacks READ's tensors {missing[:3]}; pass "
                                 f"this model's state_dict() or none")
            tensors = {name: state_dict[name] for name in tensors}
        directory.mkdir(parents=True, exist_ok=True)
        save_tensors(tensors, directory / WEIGHTS_NAME)  # atomic, as the config
        self.config.save_pretrained(directory)
        trainable, total = self.get_nb_trainable_parameters()
        card.write(directory, card.render(self.config, trainable=trainable, total=total, dataset=dataset,
                                          metrics=metrics, command=command))
        return directory

    def push_to_hub(self, repo_id: str, *, private: Optional[bool] = None, token: Optional[str] = None,
                    commit_message: str = "Upload READ model", revision: Optional[str] = None,
                    create_pr: bool = False, **card_fields):
        """Upload what save_pretrained writes (never the backbone) to the Hub repo ``repo_id``,
        creating it if needed; ``card_fields`` (dataset, metrics, command) go to the model card."""
        with tempfile.TemporaryDirectory(prefix="readapt-push-") as folder:
            self.save_pretrained(folder, **card_fields)
            return hub.push(Path(folder), repo_id, private=private, token=token, commit_message=commit_message,
                            revision=revision, create_pr=create_pr)

    @classmethod
    def from_pretrained(cls, backbone: nn.Module, model_id: str | Path, *, revision: Optional[str] = None,
                        token: Optional[str] = None, cache_dir: Optional[str | Path] = None) -> "ReadModel":
        """A saved READ model on ``backbone``: ``model_id`` is a local folder (save_pretrained's, or a
        transformers Trainer checkpoint written by ReadTrainer) or a Hugging Face Hub repo id."""
        directory = hub.resolve(model_id, revision=revision, token=token, cache_dir=cache_dir)
        config = ReadConfig.from_pretrained(directory)
        check_backbone_matches(config, backbone)
        model = cls(backbone, config)
        model.load_trainable(directory / WEIGHTS_NAME)
        return model

    def load_read_weights(self, directory: str | Path) -> None:
        """Load the READ weights saved in ``directory`` into this model, after checking that they were
        saved for this backbone and this exact READ config (resuming, best-model reloads)."""
        directory = Path(directory)
        try:
            saved = ReadConfig.from_pretrained(directory)  # strict JSON: unknown/missing keys, wrong types
        except ConfigError as exc:
            if str(directory) in str(exc):
                raise
            raise ConfigError(f"{directory / CONFIG_NAME}: {exc}") from None
        check_backbone_matches(saved, self.base_model)
        differ = [f"{k} {v!r} vs {getattr(self.config, k)!r}" for k, v in saved.to_dict().items()
                  if k != "base_model_name_or_path" and v != getattr(self.config, k)]
        if differ:
            raise ConfigError(f"{directory / CONFIG_NAME} was saved for another READ config (saved vs this "
                              f"model: {'; '.join(differ)}); load the folder this model was trained in")
        self.load_trainable(directory / WEIGHTS_NAME)

    def load_trainable(self, path: Path) -> None:
        expected = self.trainable_state_dict()
        # safetensors reads every tensor before we can check a name: cap the file at what this
        # config's tensors take in the widest dtype (fp64), plus room for the header.
        limit = 8 * sum(t.numel() for t in expected.values()) + 1024**2
        try:
            check_user_file(path, limit)
        except InputFileError as exc:
            if exc.missing:
                raise ConfigError(f"no {WEIGHTS_NAME} in {Path(path).parent}: the side network weights are "
                                  f"missing") from None
            hint = "; it is not the side network saved for this config" if exc.too_large else ""
            raise ConfigError(f"{exc}{hint}") from None
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise ConfigError(f"{path} is not a readable safetensors file ({exc}); it is truncated or corrupted") from None
        missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise ConfigError(f"{path} was saved for another READ config (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
        for name, tensor in tensors.items():
            if tensor.shape != expected[name].shape:
                raise ConfigError(f"{path}: {name} has shape {tuple(tensor.shape)}, this config expects "
                                  f"{tuple(expected[name].shape)}; it was saved for another config")
        require_finite(tensors, path)
        with torch.no_grad():
            params = dict(self.named_parameters())
            for name, tensor in tensors.items():
                params[name].copy_(tensor)


def require_finite(tensors: dict[str, torch.Tensor], source: Path) -> None:
    """NaN or inf weights would evaluate and predict without a word (every answer one class)."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise ConfigError(f"{source}: {name} holds {bad:,d} NaN or infinite value(s); these weights "
                                  f"are damaged (did the run diverge?): retrain, or load an earlier checkpoint")


def trainable_parameters(config: ReadConfig, d: int, norm: str, kind: str, num_labels: Optional[int]) -> int:
    """The number of parameters ReadModel will train, computed before building anything."""
    gates, r = _GATES[config.rnn_type], config.rnn_dim

    def rnn(width: int, h: int, directions: int) -> int:               # input + hidden weights, two biases
        return directions * (gates * h * (width + h) + 2 * gates * h)

    def side(cross: bool) -> int:
        if config.joiner == "projection":                         # W_in (+ bias), W_c; the RNN reads width r
            joiner, width = d * r + r + (d * r if cross else 0), r
        else:                                                     # norm (RMSNorm: weight; LayerNorm: + bias)
            joiner, width = (d if norm == "rmsnorm" else 2 * d) + (2 * d * d + d if cross else 0), d
        depth = rnn(width, r // 2, 2) if config.bidirectional else rnn(width, r, 1)
        return joiner + depth + r * d                             # + W_out (no bias)

    mixer = {"attention": 4 * r * r + 4 * r + 2 * r,             # q/k/v/out + biases, LayerNorm
             "rnn": rnn(r, r // 2, 2) + 2 * r,                    # both directions over the tokens, LayerNorm
             "none": 0}[config.mixing]
    total = side(cross=kind == "seq2seq") + mixer + (side(cross=False) if kind == "seq2seq" else 0)
    features, query = pooled_size(d, config.pooling or "mean"), d if config.pooling == "attention" else 0
    return total + (0 if num_labels is None else features * num_labels + num_labels + query)


def check_trainable_size(config: ReadConfig, d: int, norm: str, kind: str, num_labels: Optional[int]) -> None:
    if num_labels is not None and not 1 <= num_labels <= MAX_NUM_LABELS:  # from the backbone's config
        raise ConfigError(f"num_labels={num_labels}: must be between 1 (regression) and {MAX_NUM_LABELS:,d}")
    count = trainable_parameters(config, d, norm, kind, num_labels)
    if 4 * count > MAX_TRAINABLE_BYTES:
        labels = "" if num_labels is None else f" or num_labels ({num_labels:,d})"
        raise ConfigError(f"this READ config would train {count:,d} parameters ({human_bytes(4 * count)} in fp32) "
                          f"on a {d}-wide backbone, above readapt's limit of {human_bytes(MAX_TRAINABLE_BYTES)}; "
                          f"lower rnn_dim ({config.rnn_dim}){labels}")


def backbone_identity(backbone: nn.Module) -> dict:
    """What a saved side network records about its backbone (and checks on load)."""
    runner_config = backbone.config
    kind = family(runner_config.model_type)
    hidden = runner_config.d_model if kind == "seq2seq" else runner_config.hidden_size
    layers = runner_config.num_decoder_layers if kind == "seq2seq" else runner_config.num_hidden_layers
    return {"backbone_model_type": runner_config.model_type, "backbone_hidden_size": hidden,
            "backbone_num_layers": layers,
            "base_model_name_or_path": getattr(runner_config, "_name_or_path", None) or None}


def check_backbone_matches(config: ReadConfig, backbone: nn.Module) -> None:
    found = backbone_identity(backbone)
    wrong = [f"{key.removeprefix('backbone_')} {getattr(config, key)!r} vs {found[key]!r}"
             for key in ("backbone_model_type", "backbone_hidden_size", "backbone_num_layers")
             if getattr(config, key) is not None and getattr(config, key) != found[key]]
    if wrong:
        raise ConfigError(f"this side network was saved for another backbone (saved vs given: {'; '.join(wrong)}); "
                          f"load the backbone it was trained on ({config.base_model_name_or_path or 'unknown'})")


def get_read_model(backbone: nn.Module, config: Optional[ReadConfig] = None) -> ReadModel:
    """Freeze ``backbone`` and wrap it with a fresh READ side network (PEFT's get_peft_model)."""
    config = dataclasses.replace(config or ReadConfig(), **backbone_identity(backbone))
    return ReadModel(backbone, config)
