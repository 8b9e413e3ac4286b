"""The state cache: the frozen backbone's states on disk, computed once per example and reused by
every epoch, seed, side-network config (r, lr, RNN type, ...) and later run on the same data.

READ never differentiates the backbone, and the backbone stays in eval mode, so an example's
states never change. A cache entry holds one split's states: only the layers READ reads
(model.layers, plus the final state the correction lands on) and only real tokens. For an
encoder-decoder model (T5) an example's states depend on its target too (what the decoder reads):
the entry holds the decoder's states over the target tokens, the encoder's states its side network
reads, and the cross-attention probabilities of the decoder layers read (the Joiner's encoder term,
backbones/seq2seq.py), so a T5 run trains on its target text without the backbone. A text-to-text
classifier caches its training split only: evaluation scores every label's text through the
decoder, which the gold label's states do not cover.

    $READAPT_CACHE  (else $XDG_CACHE_HOME/readapt/states, else ~/.cache/readapt/states)
      CACHEDIR.TAG                  marks the folder as a cache (backup tools skip it)
      .lock                         flock: shared while building or evicting, exclusive to clear killed
                                    builds and for `readapt cache clear`
      <key>/manifest.json           what the entry holds; size + sha256 of every file (written last);
                                    "source": the model, task and split it came from (shown by `readapt cache list`)
      <key>/index.npy               per sequence: shard, offset (in values), real tokens, target tokens
      <key>/shard-00000.bin ...     raw float32/float16/bfloat16 values, (layers, tokens, d) per sequence;
                                    T5: decoder (layers, targets, d), encoder (layers, tokens, d) and
                                    cross-attention (layers, heads, targets, tokens), one after another
                                    (under torchrun shard-<rank>-00000.bin ...: each rank wrote its own)
      tmp-<key>-<pid>-<random>/     an entry being built, renamed to <key> once complete

* The key is a sha256 of everything that determines the states: the model's files and config,
  the tokenizer, max length, pair encoding, the layers stored, the split's token ids, the storage
  dtype, the device type, library versions and this format's version. Change any: another key.
* An entry folder's mtime is its last use: set when it is built and on every load that hits it.
  A run that builds (under torchrun, its rank 0) first evicts the least recently used entries to
  keep the folder within --cache-keep-gb; `readapt cache list` / `readapt cache clear` show and trim
  it by hand. Evicting moves an entry aside, then deletes it: a process that mapped its shards
  keeps reading them.
* Built into a temporary folder, manifest last, then renamed: a kill leaves no entry. Every load
  checks the manifest and each file's size and sha256 first: a damaged entry is rebuilt (with a
  warning), never used. Shards are memory-mapped: the OS pages states in as batches need them.
* Under torchrun the ranks build a missing entry together: each runs the frozen pass over its own
  contiguous part of the sequences and writes its shards into one temporary folder, then rank 0
  writes the index and manifest and renames it. The entry is the one a single process builds (the
  same key and states), so either kind of run reads what the other built.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import shutil
import time
from contextlib import ExitStack, contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from readapt.checkpoint import fsync_dir
from readapt.distributed import SINGLE, World
from readapt.evaluate import frozen_pass, item_sequences, set_states
from readapt.inputs import describe_os_error, human_bytes
from readapt.rundir import file_fingerprint, model_files, warn

FORMAT_VERSION = 2  # 2: a fourth index column (target tokens) and encoder-decoder entries
CACHE_MODES = ("auto", "on", "off")
# Storage dtypes: (torch dtype, numpy dtype of the raw values). numpy has no bfloat16: its bits
# are stored as uint16 and viewed as bfloat16 by torch.
CACHE_DTYPES = {"float32": (torch.float32, np.float32), "float16": (torch.float16, np.float16),
                "bfloat16": (torch.bfloat16, np.uint16)}
SHARD_BYTES = 1 << 30      # a new shard file after about 1 GiB
FREE_MARGIN = 256 << 20    # space left free on the cache's disk after building
MANIFEST = "manifest.json"
INDEX = "index.npy"
LOCK = ".lock"
TMP_PREFIX = "tmp-"
TAG = "CACHEDIR.TAG"
_TAG_MARK = "readapt's state cache"  # in the tag's comment line: the folder is ours to delete from
_ENTRY_NAME = re.compile(r"[0-9a-f]{40}")  # entry_key's form: nothing else in the folder is ever evicted
_MANIFEST_LIMIT = 16 << 20
_HASH_BLOCK = 4 << 20


class CacheError(ValueError):
    """The cache cannot be used as asked (--cache on): one line naming the way out."""


class Damaged(Exception):
    """An entry on disk does not match its manifest or the data asking for it."""


class CacheBusy(CacheError):
    """Another process is building entries: `readapt cache clear` must not run under it."""


def default_cache_dir() -> Path:
    if os.environ.get("READAPT_CACHE"):
        return Path(os.environ["READAPT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "readapt" / "states"


# -- what an entry is keyed by -------------------------------------------------------------------------
def stored_layers(model) -> list[int]:
    """The hidden states READ reads: its layers, and the final one the correction lands on."""
    return sorted(set(model.layers) | {model.runner.num_layers})


def layout(model) -> dict[str, Any]:
    """What an entry stores for ``model`` (and what its key and manifest record): the layers read,
    and for an encoder-decoder model the encoder layers its side network reads, the decoder layers
    whose cross-attention probabilities the Joiner reads (0-based) and their heads."""
    runner = model.runner
    described = {"layers": stored_layers(model), "num_hidden_states": runner.num_layers + 1,
                 "hidden_size": runner.hidden_size}
    if runner.family == "seq2seq":
        described.update(encoder_layers=list(model.encoder_layers),
                         num_encoder_hidden_states=runner.num_encoder_layers + 1,
                         cross_layers=sorted(i - 1 for i in model.layers if i > 0),
                         heads=runner.model.config.num_heads)
    return described


def _encoder_decoder(describe: dict) -> bool:
    return "encoder_layers" in describe


def block_shapes(describe: dict, tokens: int, targets: int) -> list[tuple[int, ...]]:
    """The shapes of what one sequence of ``tokens`` real tokens (and ``targets`` target tokens)
    stores, in order: its states; for an encoder-decoder model the decoder's states, the encoder's
    and the cross-attention probabilities."""
    width = describe["hidden_size"]
    if not _encoder_decoder(describe):
        return [(len(describe["layers"]), tokens, width)]
    return [(len(describe["layers"]), targets, width), (len(describe["encoder_layers"]), tokens, width),
            (len(describe["cross_layers"]), describe["heads"], targets, tokens)]


def block_lengths(blocks: tuple[torch.Tensor, ...]) -> tuple[int, int]:
    """(real tokens, target tokens) of one sequence's blocks: the inverse of :func:`block_shapes`."""
    if len(blocks) == 1:
        return blocks[0].shape[1], 0
    decoder, encoder, _cross = blocks
    return encoder.shape[1], decoder.shape[1]


def _hub_snapshot(name: str) -> Optional[Path]:
    """The local snapshot folder of a Hub model id (its commit's files), if it is in the HF cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an id that is not a valid repo name: nothing cached under it
        return None
    return Path(found).parent if isinstance(found, str) else None


def _files(name: str) -> dict[str, dict]:
    """Fingerprints (size + sha256) of a model folder's files, by name: a local folder, or the Hub
    snapshot (one commit's files) that a Hub id was loaded from. Moving a folder keeps them."""
    folder = Path(name) if name and Path(name).is_dir() else _hub_snapshot(name) if name else None
    return {p.name: file_fingerprint(p) for p in model_files(str(folder))} if folder else {}


def model_fields(model_name: str, model, tokenizer) -> dict[str, Any]:
    """The backbone and tokenizer, as what determines their states: their files, the config, the
    dtype and attention implementation the backbone runs in."""
    backbone = model.base_model
    files = _files(model_name)
    config = {k: v for k, v in backbone.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version")}  # where it lives is not what it is
    return {"files": files,
            "name": None if files else model_name,  # without local files, the Hub id is all that names the weights
            "config": config, "attention": getattr(backbone.config, "_attn_implementation", None),
            "dtype": str(next(backbone.parameters()).dtype),
            # an int8-quantised backbone (backbones/quantize.py) computes other states than its fp32 self
            "quantized": sorted({type(m).__module__ for m in backbone.modules() if "quantized" in type(m).__module__}),
            "tokenizer": [type(tokenizer).__name__, tokenizer.pad_token_id,
                          _files(getattr(tokenizer, "name_or_path", "") or "")]}


def tokens_fingerprint(items: list[dict], targets: bool = False) -> str:
    """sha256 of every sequence's token ids, token types and mask (and ``targets``: its target
    tokens), in order."""
    digest = hashlib.sha256()
    for item in items:
        for _, fields in item_sequences(item, targets):
            for name in sorted(fields):
                values = np.asarray(fields[name], dtype=np.int64)
                digest.update(f"{name}:{values.size};".encode())
                digest.update(values.tobytes())
    return digest.hexdigest()


def entry_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:40]


def real_lengths(items: list[dict], targets: bool = False) -> list[tuple[int, int]]:
    """(real tokens, target tokens) of each sequence, item by item (two per item for separately
    encoded pairs); target tokens are 0 unless ``targets`` (an encoder-decoder model)."""
    return [(int(sum(fields["attention_mask"])) if "attention_mask" in fields else len(fields["input_ids"]),
             len(fields["labels"]) if targets else 0)
            for item in items for _, fields in item_sequences(item, targets)]


def estimate_bytes(items: list[dict], describe: dict, dtype: str) -> int:
    width = np.dtype(CACHE_DTYPES[dtype][1]).itemsize
    return width * sum(math.prod(shape) for tokens, targets in real_lengths(items, _encoder_decoder(describe))
                       for shape in block_shapes(describe, tokens, targets))


# -- one entry ----------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


class _ShardWriter:
    """Appends each sequence's states to the current shard; sha256 computed as the bytes go out."""

    def __init__(self, folder: Path, dtype: str, prefix: str = "shard-"):
        self.folder, self.dtype, self.prefix = folder, dtype, prefix
        self.torch_dtype, self.numpy_dtype = CACHE_DTYPES[dtype]
        self.shards: list[dict] = []
        self.file, self.digest, self.values = None, None, 0

    def write(self, blocks: tuple[torch.Tensor, ...]) -> tuple[int, int]:
        """(shard number, offset in values) of one sequence's ``blocks`` once written, one after another."""
        values = (blocks[0] if len(blocks) == 1 else torch.cat([b.reshape(-1) for b in blocks])).to(self.torch_dtype)
        values = values.contiguous()
        if self.torch_dtype == torch.bfloat16:
            values = values.view(torch.int16)
        raw = values.numpy()
        if self.file is None or (self.values and (self.values + raw.size) * raw.itemsize > SHARD_BYTES):
            self._finish()
            name = f"{self.prefix}{len(self.shards):05d}.bin"
            self.file, self.digest, self.values = open(self.folder / name, "xb"), hashlib.sha256(), 0
            self.shards.append({"file": name})
        offset = self.values
        self.file.write(memoryview(raw).cast("B"))
        self.digest.update(memoryview(raw).cast("B"))
        self.values += raw.size
        return len(self.shards) - 1, offset

    def _finish(self) -> None:
        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
            self.shards[-1].update(bytes=self.values * np.dtype(self.numpy_dtype).itemsize,
                                   sha256=self.digest.hexdigest())
            self.file = None

    def close(self) -> list[dict]:
        self._finish()
        return self.shards

    def abort(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _write_part(folder: Path, states: Iterator[tuple[int, tuple[torch.Tensor, ...]]], count: int, dtype: str,
                prefix: str) -> tuple[np.ndarray, list[dict]]:
    """Write ``count`` sequences' states into new shard files in ``folder``: (their index rows, the
    shards written). A row's shard number counts this part's own shards."""
    index = np.zeros((count, 4), dtype=np.int64)
    writer = _ShardWriter(folder, dtype, prefix)
    try:
        for i, blocks in states:
            shard, offset = writer.write(blocks)
            index[i] = (shard, offset, *block_lengths(blocks))
        return index, writer.close()
    finally:
        writer.abort()


def _merge(parts: list[tuple[np.ndarray, list[dict]]]) -> tuple[np.ndarray, list[dict]]:
    """One index and shard list from the ranks' parts (see _write_part), which hold consecutive
    sequences in rank order: each part's shard numbers move past the shards of the parts before it."""
    indices, shards = [], []
    for index, part_shards in parts:
        indices.append(index + np.array([len(shards), 0, 0, 0], dtype=np.int64))
        shards += part_shards
    return np.concatenate(indices), shards


def _shard_prefix(world: World) -> str:
    """shard-00000.bin, ... in a single process (as entries always were); shard-<rank>-00000.bin
    under torchrun, so that ranks writing into one folder never collide."""
    return "shard-" if world.size == 1 else f"shard-{world.rank}-"


def _complete_entry(folder: Path, key: str, items: list[dict], describe: dict, index: np.ndarray,
                    shards: list[dict], dtype: str, source: Optional[dict] = None) -> None:
    """Make ``folder``, whose shards are written, an entry: the index, then the manifest (last: an
    entry without one is not an entry). ``source`` (model, task, split) is for people reading the
    cache: no load checks it."""
    with open(folder / INDEX, "xb") as f:
        np.save(f, index, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())
    manifest = {"format": "readapt-state-cache", "version": FORMAT_VERSION, "key": key, **describe,
                "dtype": dtype, "sequences": len(index), "items": len(items),
                "bytes": sum(s["bytes"] for s in shards),
                "index": {"file": INDEX, "bytes": (folder / INDEX).stat().st_size, "sha256": _sha256(folder / INDEX)},
                "shards": shards, "source": source}
    with open(folder / MANIFEST, "x", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(folder)


def _read_manifest(folder: Path) -> dict:
    """An entry's manifest (size-capped read), or Damaged saying what is wrong with it."""
    try:
        with open(folder / MANIFEST, "rb") as f:
            manifest = json.loads(f.read(_MANIFEST_LIMIT + 1))
    except (OSError, ValueError) as exc:
        raise Damaged(f"its {MANIFEST} is unreadable ({type(exc).__name__})") from None
    if not isinstance(manifest, dict):
        raise Damaged(f"its {MANIFEST} holds no object")
    return manifest


def _read_entry(folder: Path, key: str, items: list[dict], describe: dict,
                dtype: str) -> list[tuple[torch.Tensor, ...]]:
    """Each sequence's blocks (block_shapes, memory-mapped), after checking the manifest, every
    file's size and sha256, and the index against the sequences asking for them."""
    manifest = _read_manifest(folder)
    expected = {"format": "readapt-state-cache", "version": FORMAT_VERSION, "key": key, "dtype": dtype, **describe}
    wrong = [name for name, value in expected.items() if manifest.get(name) != value]
    if wrong:
        raise Damaged(f"its manifest does not match this key ({', '.join(wrong)})")
    lengths = np.array(real_lengths(items, _encoder_decoder(describe)), dtype=np.int64).reshape(-1, 2)
    try:
        for entry in [manifest["index"], *manifest["shards"]]:
            _check_file(folder, entry)
        index = np.load(folder / INDEX, allow_pickle=False)
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise Damaged(f"it cannot be read ({type(exc).__name__}: {exc})") from None
    if index.shape != (len(lengths), 4) or index.dtype != np.int64 or not np.array_equal(index[:, 2:], lengths):
        raise Damaged("its index does not match the examples' token counts")
    torch_dtype, numpy_dtype = CACHE_DTYPES[dtype]
    itemsize = np.dtype(numpy_dtype).itemsize
    flats = []
    for entry in manifest["shards"]:
        flat = torch.from_numpy(np.memmap(folder / entry["file"], dtype=numpy_dtype, mode="c"))  # copy-on-write
        flats.append(flat.view(torch_dtype) if torch_dtype == torch.bfloat16 else flat)
    out = []
    capacity = [entry["bytes"] // itemsize for entry in manifest["shards"]]
    for shard, offset, tokens, targets in index.tolist():
        shapes = block_shapes(describe, tokens, targets)
        sizes = [math.prod(shape) for shape in shapes]
        if not (0 <= shard < len(flats) and 0 <= offset and offset + sum(sizes) <= capacity[shard]):
            raise Damaged("its index points outside its shards")
        values = flats[shard][offset:offset + sum(sizes)].split(sizes)
        out.append(tuple(block.view(shape) for block, shape in zip(values, shapes)))
    return out


def _check_file(folder: Path, entry: dict) -> None:
    """A file of the entry has the size and sha256 its manifest says (a flipped bit is caught)."""
    path = folder / entry["file"]
    if Path(entry["file"]).name != entry["file"] or not path.is_file():  # a bare name inside the entry
        raise Damaged(f"{entry['file']} is missing")
    if path.stat().st_size != entry["bytes"]:
        raise Damaged(f"{entry['file']} is {path.stat().st_size} bytes, its manifest says {entry['bytes']}")
    if _sha256(path) != entry["sha256"]:
        raise Damaged(f"{entry['file']} does not match its sha256")


# -- the cache folder ----------------------------------------------------------------------------------
class StateCache:
    """Entries in ``root``, stored as ``dtype`` (float32: the states exactly as computed)."""

    def __init__(self, root: str | Path | None = None, dtype: str = "float32"):
        if dtype not in CACHE_DTYPES:
            raise ValueError(f"--cache-dtype {dtype}: choose one of {', '.join(CACHE_DTYPES)}")
        self.root = Path(root) if root else default_cache_dir()
        self.dtype = dtype

    def load(self, key: str, items: list[dict], describe: dict) -> Optional[list[tuple[torch.Tensor, ...]]]:
        """The entry's blocks per sequence (block_shapes), or None: not there, or damaged (then warned about and
        moved out of the way, so that it is rebuilt)."""
        folder = self.root / key
        if not folder.is_dir():
            return None
        try:
            states = _read_entry(folder, key, items, describe, self.dtype)
        except Damaged as exc:
            warn(f"state cache entry {folder} is damaged or stale ({exc}); rebuilding it")
            self._discard(folder)
            return None
        _mark_used(folder)
        return states

    def build(self, key: str, items: list[dict], describe: dict,
              compute: Callable[[list[dict]], Iterator[tuple[int, tuple[torch.Tensor, ...]]]],
              world: World = SINGLE, source: Optional[dict] = None) -> list[tuple[torch.Tensor, ...]]:
        """Write the entry and load it back; ``compute(sequences)`` yields (i, blocks of
        sequences[i]) (see frozen_pass). Under torchrun every rank computes and writes its own
        contiguous part of the sequences into rank 0's temporary folder, and rank 0 completes the
        entry. Wherever the ranks wait for one another, a failure on one fails the build on all
        (CacheError on the others). A failure or a kill leaves no entry: only a temporary folder,
        removed now or by the next build."""
        elsewhere = CacheError("another rank could not build the state cache (its own message says why); "
                               "pass --cache-dir elsewhere or --cache off")
        sequences = [fields for item in items for _, fields in item_sequences(item, _encoder_decoder(describe))]
        with ExitStack() as held:
            with world.all_or_none(elsewhere):
                self._prepare()
                # Held by every rank until the entry is renamed: rank 0 makes the folder under it, so
                # no _prepare (another rank's, another run's) can clear the folder while ranks write.
                held.enter_context(self._lock(fcntl.LOCK_SH))
                tmp = self._new_folder(key) if world.is_main else None
            tmp = world.broadcast(tmp)
            try:
                with world.all_or_none(elsewhere):
                    mine = world.shard(sequences)
                    part = _write_part(tmp, compute(mine), len(mine), self.dtype, _shard_prefix(world))
                parts = world.gather(part)
                with world.all_or_none(elsewhere):
                    if world.is_main:
                        _complete_entry(tmp, key, items, describe, *_merge(parts), self.dtype, source)
                        self._publish(tmp, key)
            finally:
                if world.is_main and tmp.exists():
                    shutil.rmtree(tmp, ignore_errors=True)
        with world.all_or_none(elsewhere):
            loaded = self.load(key, items, describe)
            if loaded is None:
                raise CacheError(f"state cache entry {self.root / key} could not be read back after building it; "
                                 f"pass --cache off")
        return loaded

    def _new_folder(self, key: str) -> Path:
        """A fresh temporary folder for an entry being built (made under the shared lock)."""
        tmp = self.root / f"{TMP_PREFIX}{key}-{os.getpid()}-{secrets.token_hex(4)}"
        tmp.mkdir()
        return tmp

    def _publish(self, tmp: Path, key: str) -> None:
        """Rename a complete entry into place; if another process finished the same entry first, theirs stays."""
        try:
            os.rename(tmp, self.root / key)
        except OSError as exc:
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                raise
        fsync_dir(self.root)

    def _prepare(self) -> None:
        """Make the folder, tag it, and clear temporary folders of builds that were killed."""
        self.root.mkdir(parents=True, exist_ok=True)
        tag = self.root / "CACHEDIR.TAG"
        if not tag.exists():
            tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n"
                           "# readapt's state cache: the frozen backbone's states. Safe to delete.\n")
        try:
            with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB):  # no build in flight anywhere
                for folder in self.root.glob(TMP_PREFIX + "*"):
                    if folder.is_dir() and not folder.is_symlink():
                        shutil.rmtree(folder, ignore_errors=True)
        except BlockingIOError:
            pass  # another process is building: its temporary folder is not stale

    @contextmanager
    def _lock(self, how: int):
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def _discard(self, folder: Path, why: str = "damaged") -> bool:
        """Move an entry aside (atomic), then delete it; readers that mapped it keep their pages.
        False if it could not be moved (gone already, or a read-only cache)."""
        aside = self.root / f"{TMP_PREFIX}{folder.name}-{why}-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.rename(folder, aside)
        except OSError:
            return False  # a read-only cache: the rebuild's rename then fails and says so
        shutil.rmtree(aside, ignore_errors=True)
        return True

    # -- what the folder holds, and eviction --------------------------------------------------------
    def is_ours(self) -> bool:
        """The folder carries the CACHEDIR.TAG readapt writes: only then is anything in it deleted."""
        try:
            return _TAG_MARK in (self.root / TAG).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False

    def check_ours(self, outcome: str) -> None:
        if not self.is_ours():
            raise CacheError(f"{self.root} is not a readapt state cache (no CACHEDIR.TAG written by readapt), "
                             f"{outcome}: pass --cache-dir with the cache's folder")

    def entries(self) -> list[Entry]:
        """Complete entries, least recently used first (builds in flight are not entries yet)."""
        found = []
        for folder in self.root.iterdir():
            if _ENTRY_NAME.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink():
                try:
                    found.append(Entry(folder.name, folder, _folder_bytes(folder), folder.stat().st_mtime))
                except FileNotFoundError:
                    pass  # evicted by another process while we looked
        return sorted(found, key=lambda entry: entry.last_used)

    def make_room(self, needed: int, keep_bytes: int, protect: set[str]) -> list[Entry]:
        """Evict the least recently used entries, none in ``protect``, until the entries plus
        ``needed`` fit ``keep_bytes``; returns those evicted. Under the shared lock: builds go on beside
        it (their tmp- folders are never touched), a `readapt cache clear` waits."""
        if not self.is_ours():  # nothing built here yet, or a folder readapt did not make
            return []
        with self._lock(fcntl.LOCK_SH):
            entries = self.entries()
            over = sum(entry.bytes for entry in entries) + needed - keep_bytes
            return self._evict(least_recently_used(entries, over, protect))

    def clear(self, keep_bytes: Optional[int]) -> list[Entry]:
        """Evict the least recently used entries until the rest fit ``keep_bytes`` (None: all), and
        what killed builds left. Refuses a folder readapt did not tag, and (CacheBusy) while any
        process builds here: a build in flight must find the folder as it left it."""
        if not self.root.exists():
            return []
        self.check_ours("nothing deleted")
        self._prepare()  # removes the temporary folders of killed builds
        try:
            with self._lock(fcntl.LOCK_EX | fcntl.LOCK_NB):
                entries = self.entries()
                if keep_bytes is not None:
                    entries = least_recently_used(entries, sum(e.bytes for e in entries) - keep_bytes, set())
                return self._evict(entries)
        except BlockingIOError:
            raise CacheBusy(f"a run is building states in {self.root}: try again when it ends") from None

    def _evict(self, entries: list[Entry]) -> list[Entry]:
        return [entry for entry in entries if self._discard(entry.folder, "evicted")]


@dataclasses.dataclass(frozen=True)
class Entry:
    key: str
    folder: Path
    bytes: int
    last_used: float  # the folder's mtime (seconds since the epoch)

    def manifest(self) -> Optional[dict]:
        """The entry's manifest, or None if it cannot be read (a damaged entry still lists)."""
        try:
            return _read_manifest(self.folder)
        except Damaged:
            return None


def least_recently_used(entries: list[Entry], over: int, protect: set[str]) -> list[Entry]:
    """The oldest-used entries outside ``protect`` whose sizes add up to at least ``over`` bytes
    (all of them if they do not). ``entries`` are least recently used first."""
    chosen, freed = [], 0
    for entry in entries:
        if freed >= over:
            break
        if entry.key not in protect:
            chosen.append(entry)
            freed += entry.bytes
    return chosen


def _folder_bytes(folder: Path) -> int:
    return sum(child.stat(follow_symlinks=False).st_size for child in os.scandir(folder))


def _mark_used(folder: Path) -> None:
    """Set the entry's mtime to now: eviction keeps what runs read, whatever was built first."""
    try:
        os.utime(folder)
    except OSError:
        pass  # a read-only cache is never evicted from by this process either


def check_gib(flag: str, value: float) -> None:
    """A GiB option within 0..1000000, as one line naming it."""
    if not (0 <= value <= 1e6 and math.isfinite(value)):
        raise ValueError(f"{flag} {value} is out of range: use 0..1000000 (GiB)")


# -- what a run uses -----------------------------------------------------------------------------------
def use_state_cache(model, tokenizer, splits: dict[str, list[dict]], *, model_name: str, max_length: int,
                    separate_pairs: bool, device: torch.device, batch_size: int, mode: str = "auto",
                    cache_dir: Optional[str] = None, max_gb: float = 8.0, dtype: str = "float32",
                    build: bool = True, world: World = SINGLE, keep_gb: float = 20.0,
                    task: Optional[str] = None) -> dict[str, Any]:
    """Attach each split's cached states to its items (``item["states"]``, memory-mapped; see
    evaluate.model_inputs), building the entries that are missing with one frozen pass each.

    ``mode`` auto uses the cache when the missing entries fit ``max_gb`` and the free space, and
    says why not otherwise; on insists (errors instead). ``build=False`` only reads: splits whose
    entry is missing keep their token ids (one pass over them costs what building would). Under
    torchrun (``world``) the ranks agree on what is missing and whether to build it, and build it
    together (StateCache.build).
    Returns what metrics.json records: ``cache`` (hit: nothing built; miss: something built; off),
    ``cache_seconds``, ``cache_bytes``. Before building, the least recently used entries of other
    data are evicted to keep the folder within ``keep_gb`` (0: never); ``task`` names the data in
    the entries' manifests."""
    off = {"cache": "off", "cache_seconds": 0.0, "cache_bytes": 0}
    if mode == "off":
        return off
    with world.all_or_none():  # a rank that failed before this point stops the others here, before they exchange more
        pass
    started = time.perf_counter()
    cache = StateCache(cache_dir, dtype)
    describe = layout(model)
    layers, targets = describe["layers"], _encoder_decoder(describe)
    common = {"format": FORMAT_VERSION, "readapt": _versions(), "device": torch.device(device).type,
              "model": model_fields(model_name, model, tokenizer), "max_length": max_length,
              "separate_pairs": separate_pairs, "dtype": dtype, **describe}
    splits = {name: items for name, items in splits.items() if items}
    keys = {name: entry_key({**common, "tokens": tokens_fingerprint(items, targets)}) for name, items in splits.items()}
    sizes = {name: estimate_bytes(items, describe, dtype) for name, items in splits.items()}
    found = {name: cache.load(keys[name], items, describe) for name, items in splits.items()}
    if not build:
        splits = {name: items for name, items in splits.items() if found[name] is not None}
    missing = [name for name in splits if world.any(found[name] is None)]  # the ranks build together
    if not splits:
        return off
    needed = sum(sizes[name] for name in missing)
    why_not = world.broadcast(_why_not(cache.root, needed, mode, max_gb) if missing and world.is_main else None)
    if why_not:
        if mode == "on":
            raise CacheError(why_not)
        tqdm.write(f"state cache off: {why_not}")
        return off
    if build and world.is_main:
        tqdm.write(f"state cache ({cache.root}, {dtype}, layers {_ranges(layers)}): " + ", ".join(
            f"{name} {'miss' if name in missing else 'hit'} ({human_bytes(sizes[name])})" for name in splits)
            + (f"; building {human_bytes(needed)}" if missing else ""))
    if missing and keep_gb and world.is_main:  # the build goes ahead (missing is empty unless building): room first
        _evict_for(cache, needed, keep_gb, protect=set(keys.values()))
    try:
        for name in missing:
            compute = partial(frozen_pass, model, pad_token_id=tokenizer.pad_token_id, device=device,
                              batch_size=batch_size, layers=layers, encoder_layers=describe.get("encoder_layers"),
                              cross_layers=describe.get("cross_layers"), desc=f"caching {name} states")
            found[name] = cache.build(keys[name], splits[name], describe, compute, world,
                                      source={"model": str(model_name), "task": task, "split": name})
    except (OSError, CacheError) as exc:  # not writable, no space left, ...
        problem = str(exc) if isinstance(exc, CacheError) else _write_problem(exc, cache.root)
        if mode == "on":
            raise CacheError(problem) from None
        warn(f"state cache off: {problem}")
        return off
    for name, items in splits.items():
        _attach(items, found[name], describe)
    return {"cache": "miss" if missing else "hit", "cache_seconds": time.perf_counter() - started,
            "cache_bytes": sum(sizes[name] for name in splits)}


def _attach(items: list[dict], blocks: list[tuple[torch.Tensor, ...]], describe: dict) -> None:
    """Give each item its sequences' blocks, and the maps from layer to stored row (model_inputs)."""
    def rows(stored: list[int], count: int) -> tuple:
        where = [None] * count
        for row, layer in enumerate(stored):
            where[layer] = row
        return tuple(where)

    maps = {"layers": rows(describe["layers"], describe["num_hidden_states"])}
    targets = _encoder_decoder(describe)
    if targets:
        maps.update(encoder_layers=rows(describe["encoder_layers"], describe["num_encoder_hidden_states"]),
                    cross_layers=rows(describe["cross_layers"], describe["num_hidden_states"] - 1))
    per_sequence = iter(blocks)
    for item in items:
        for key, _ in item_sequences(item, targets):
            set_states(item, key, next(per_sequence), maps)


def _write_problem(exc: OSError, root: Path) -> str:
    what = describe_os_error(exc) if exc.filename else f"{root}: {describe_os_error(exc)}"
    return f"cannot write the state cache ({what}); pass --cache-dir elsewhere or --cache off"


def _why_not(root: Path, needed: int, mode: str, max_gb: float) -> Optional[str]:
    """Why the missing entries cannot be built, or None."""
    if mode == "auto" and needed > max_gb * 1024**3:
        return (f"this run's states would take {human_bytes(needed)}, above --cache-max-gb {max_gb:g}; "
                f"raise it, or pass --cache on")
    existing = next(p for p in (root, *root.parents) if p.exists())
    try:
        free = shutil.disk_usage(existing).free
    except OSError:
        return None  # let the build say what is wrong
    if needed + FREE_MARGIN > free:
        return (f"this run's states would take {human_bytes(needed)}, but {existing} has only {human_bytes(free)} "
                f"free; free space, or pass --cache-dir elsewhere or --cache off")
    return None


def _evict_for(cache: StateCache, needed: int, keep_gb: float, protect: set[str]) -> None:
    """Make room for ``needed`` new bytes within ``keep_gb``, saying what went. A cache that cannot
    be written is left to the build to report."""
    try:
        evicted = cache.make_room(needed, int(keep_gb * 1024**3), protect)
    except OSError:
        return
    if evicted:
        entries = "1 entry" if len(evicted) == 1 else f"{len(evicted)} entries"
        tqdm.write(f"state cache: freed {human_bytes(sum(entry.bytes for entry in evicted))} ({entries} used least "
                   f"recently) to stay within --cache-keep-gb {keep_gb:g}; readapt cache list shows what is left")


def _versions() -> list[str]:
    import transformers

    from readapt import __version__

    return [__version__, torch.__version__, transformers.__version__]


def _ranges(layers: list[int]) -> str:
    """[1, 2, 3, 6] -> '1-3, 6'."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][1] + 1:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)
