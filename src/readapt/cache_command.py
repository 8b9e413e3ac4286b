"""`readapt cache`: what the state cache holds, and trimming it by hand.

    readapt cache list                   one line per entry: key, size, last use, what it came from
    readapt cache clear --keep-gb 10     delete the least recently used entries until 10 GiB are left
    readapt cache clear --all            delete every entry

Runs trim the cache themselves (--cache-keep-gb); this is for a disk that needs space now, or a
cache folder that runs no longer use. Only a folder carrying readapt's CACHEDIR.TAG is touched,
and never while a run is building states in it (state_cache.StateCache.clear).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

from readapt.inputs import human_bytes
from readapt.state_cache import Entry, StateCache, check_gib

ACTIONS = ("list", "clear")


@dataclass
class CacheArgs:
    action: str = field(metadata={"positional": True, "help": "list (each entry's size, last use and source) or "
                                  "clear (delete the least recently used entries)"})
    cache_dir: Optional[str] = field(default=None, metadata={
        "help": "state cache folder (default: as readapt train: $READAPT_CACHE, else "
                "$XDG_CACHE_HOME/readapt/states, else ~/.cache/readapt/states)"})
    keep_gb: Optional[float] = field(default=None, metadata={
        "help": "clear: keep the most recently used entries that fit in this many GiB, delete the others"})
    all: bool = field(default=False, metadata={"help": "clear: delete every entry"})


def run_cache(args: CacheArgs) -> None:
    if args.action not in ACTIONS:
        raise ValueError(f"readapt cache {args.action}: choose one of {', '.join(ACTIONS)}")
    cache = StateCache(args.cache_dir)
    if args.action == "list":
        if args.keep_gb is not None or args.all:
            raise ValueError("--keep-gb and --all go with readapt cache clear; drop them to list")
        print("\n".join(listing(cache)))
    else:
        print(clear(cache, _keep_bytes(args)))


def _keep_bytes(args: CacheArgs) -> Optional[int]:
    """What clear may keep: --keep-gb N, or None (nothing) with --all; asking for neither is
    refused, since clearing is not undone."""
    if args.all == (args.keep_gb is not None):
        raise ValueError("readapt cache clear needs one of --keep-gb N (keep the N GiB used most recently) "
                         "or --all")
    if args.all:
        return None
    check_gib("--keep-gb", args.keep_gb)
    return int(args.keep_gb * 1024**3)


def listing(cache: StateCache) -> list[str]:
    """The entries, most recently used first, then the total."""
    if not cache.root.exists():
        return [f"no state cache at {cache.root} (no run has built one there)"]
    cache.check_ours("nothing listed")
    entries = cache.entries()[::-1]
    if not entries:
        return [f"state cache {cache.root} is empty"]
    lines = [f"{'key':<12}  {'size':>9}  {'last used':<16}  source"]
    lines += [f"{e.key[:12]}  {human_bytes(e.bytes):>9}  {_date(e.last_used)}  {_source(e)}" for e in entries]
    return [*lines, f"{_count(entries)}, {human_bytes(sum(e.bytes for e in entries))} in {cache.root}"]


def clear(cache: StateCache, keep_bytes: Optional[int]) -> str:
    """Evict, and say what went and what is left."""
    if not cache.root.exists():
        return f"nothing to delete: no state cache at {cache.root}"
    evicted = cache.clear(keep_bytes)
    left = cache.entries()
    kept = f"{_count(left)} ({human_bytes(sum(e.bytes for e in left))}) left in {cache.root}"
    if not evicted:
        return f"nothing to delete: {kept}"
    return f"deleted {_count(evicted)} used least recently ({human_bytes(sum(e.bytes for e in evicted))}); {kept}"


def _source(entry: Entry) -> str:
    """Model, task and split (entries built before readapt recorded them show what their manifest has)."""
    manifest = entry.manifest()
    if manifest is None:
        return "manifest unreadable (a damaged entry: the next run that needs it rebuilds it)"
    source = manifest.get("source") if isinstance(manifest.get("source"), dict) else {}
    named = " ".join(str(source[k]) for k in ("model", "task", "split") if source.get(k))
    held = f"{manifest.get('items', '?')} examples, {manifest.get('dtype', '?')}"
    return f"{named}, {held}" if named else f"{held} (source not recorded)"


def _date(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(seconds))


def _count(entries: list) -> str:
    return "1 entry" if len(entries) == 1 else f"{len(entries)} entries"
