"""Honest cost figures for a training run: wall time, peak memory and energy.

Every figure is measured, never estimated. Where this machine cannot measure something (no energy
counter, an unreadable sysfs file) the value is None and a reason says why, so a benchmark that
compares READ with full fine-tuning or LoRA never mixes measurements with guesses.

    with Meter(device) as meter:
        with meter.track_tensors():     # optional, CPU only: exact tensor peak of a few steps
            step()
        train()
    metrics.update(meter.result())
"""

from __future__ import annotations

import contextlib
import mmap
import os
import platform
import re
import statistics
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

try:
    import resource
except ImportError:  # Windows
    resource = None

__all__ = [
    "EnergyUnavailable",
    "Meter",
    "NvmlEnergy",
    "RaplEnergy",
    "TensorMemoryTracker",
    "device_name",
    "machine_info",
    "measure_inference",
]

MiB = 1024 * 1024
POWERCAP_ROOT = Path("/sys/class/powercap")  # tests point RaplEnergy at a fake tree instead
RSS_SAMPLE_S = 0.02  # sampling period when the kernel's high-water mark cannot be reset
RAPL_POLL_S = 10.0  # RAPL counters wrap after minutes at full power: fold them in well before

_IS_LINUX = sys.platform.startswith("linux")


def _mb(nbytes: float | None) -> float | None:
    return None if nbytes is None else round(nbytes / MiB, 2)


class _Ticker(threading.Thread):
    """Calls fn every `interval` seconds until stop(); a daemon, so it never keeps Python alive."""

    def __init__(self, interval: float, fn: Callable[[], None]):
        super().__init__(name="readapt-measure", daemon=True)
        self._interval, self._fn, self._halt = interval, fn, threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.wait(self._interval):
            try:
                self._fn()
            except Exception:  # the owner's final read, on the caller's thread, reports it
                return

    def stop(self) -> None:
        self._halt.set()
        self.join()


# ----------------------------------------------------------------------------- process RSS


def _proc_status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name == key:
                return int(value.split()[0]) * 1024  # always reported in kB
    raise OSError(f"{key} missing from /proc/self/status")


def _statm_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE


def _reset_hwm() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:  # EACCES/EPERM in some containers
        return False


_hwm_reset_works: bool | None = None


def _hwm_reset_supported() -> bool:
    """Probe once that resetting VmHWM works: a sandbox may accept the write and ignore it."""
    global _hwm_reset_works
    if _hwm_reset_works is None:
        _hwm_reset_works = False
        if _IS_LINUX:
            try:
                size = 16 * MiB
                buf = mmap.mmap(-1, size)  # touched, then unmapped: VmHWM ends 16 MiB above VmRSS
                for offset in range(0, size, mmap.PAGESIZE):
                    buf[offset] = 1
                buf.close()
                if _reset_hwm():
                    gap = _proc_status_bytes("VmHWM") - _proc_status_bytes("VmRSS")
                    _hwm_reset_works = gap < size // 2
            except OSError:
                pass
    return _hwm_reset_works


def _ru_maxrss_bytes() -> int:
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux/BSD kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


class _RssWindow:
    """Peak resident set size of this process during a window, above its RSS at the start.

    Sources, best first: "vmhwm" (Linux: the kernel's exact high-water mark, reset at start),
    "sampled" (Linux where the reset is refused: /proc/self/statm every RSS_SAMPLE_S, so spikes
    shorter than that can be missed), "ru_maxrss" (elsewhere: growth of the lifetime peak, a lower
    bound that reads 0 when the process had already been bigger; no baseline).
    """

    def __init__(self) -> None:
        self.baseline: int | None = None
        self.peak: int | None = None
        self.source: str | None = None
        self._sampler: _Ticker | None = None
        self._maxrss0 = 0

    def start(self) -> None:
        if _hwm_reset_supported() and _reset_hwm():
            self.source = "vmhwm"
            self.baseline = self.peak = _proc_status_bytes("VmRSS")
        elif _IS_LINUX:
            self.source = "sampled"
            self.baseline = self.peak = _statm_rss_bytes()
            self._sampler = _Ticker(RSS_SAMPLE_S, self._sample)
        elif resource is not None:
            self.source = "ru_maxrss"
            self._maxrss0 = _ru_maxrss_bytes()

    def _sample(self) -> None:
        self.peak = max(self.peak, _statm_rss_bytes())

    def fold(self) -> None:
        """Record the kernel's mark now, before another Meter resets it."""
        if self.source == "vmhwm":
            self.peak = max(self.peak, _proc_status_bytes("VmHWM"))

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
            self._sample()
        self.fold()

    def above_baseline(self) -> int | None:
        if self.source == "ru_maxrss":
            return max(0, _ru_maxrss_bytes() - self._maxrss0)
        return None if self.peak is None else self.peak - self.baseline


# ----------------------------------------------------------------------------- tensor memory


def _cpu_storages(tree: Any) -> Iterator[torch.UntypedStorage]:
    for t in tree_leaves(tree):
        if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.layout == torch.strided:
            try:
                yield t.untyped_storage()
            except (RuntimeError, NotImplementedError):  # tensor subclasses without storage
                pass


class TensorMemoryTracker(TorchDispatchMode):
    """Peak bytes of CPU tensor storage allocated inside the block and alive at the same time.

    Process RSS mixes in the allocator, the interpreter and every library; this counts only what
    the dispatcher hands out, torch.tensor(data) included. Each op output whose storage is new
    (not an input's, so views and in-place results are not counted twice) is added until that
    storage is freed. Tensors that existed before entering are not counted, even if freed inside:
    the figure is the peak *above* the tensors present at entry. Not seen: kernels' internal
    scratch buffers and tensors made without an aten op (torch.from_numpy). Costs a Python call
    per op (and about a second of one-off setup on first use in a process): wrap a few training
    steps, not a whole run.

        with TensorMemoryTracker() as t:
            step()
        t.peak_bytes
    """

    def __init__(self) -> None:
        super().__init__()
        self.peak_bytes = 0
        self.current_bytes = 0
        self._live: dict[int, list] = {}  # id(storage) -> [nbytes, finalizer]
        self._lock = threading.RLock()  # a storage may be freed on another thread

    def __enter__(self) -> "TensorMemoryTracker":
        self.peak_bytes = self.current_bytes = 0
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        with self._lock:
            for _, finalizer in self._live.values():
                finalizer.detach()
            self._live.clear()
            self.current_bytes = 0
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        # lift_fresh's input is the tensor torch.tensor() just built from Python data: new too
        fresh = func is torch.ops.aten.lift_fresh.default
        inputs = set() if fresh else {id(s) for s in _cpu_storages((args, kwargs))}
        out = func(*args, **kwargs)
        for storage in _cpu_storages(out):
            # an input's storage is either ours already (resize_ may change its size) or predates us
            if id(storage) in self._live or id(storage) not in inputs:
                self._add(storage)
        return out

    def _add(self, storage: torch.UntypedStorage) -> None:
        # Python keeps one object per storage while the storage lives, so id() is a stable key
        key, nbytes = id(storage), storage.nbytes()
        with self._lock:
            entry = self._live.get(key)
            if entry is None:
                if nbytes == 0:
                    return
                finalizer = weakref.finalize(storage, self._free, key)
                finalizer.atexit = False
                self._live[key] = [nbytes, finalizer]
                self.current_bytes += nbytes
            else:
                self.current_bytes += nbytes - entry[0]
                entry[0] = nbytes
            self.peak_bytes = max(self.peak_bytes, self.current_bytes)

    def _free(self, key: int) -> None:
        with self._lock:
            entry = self._live.pop(key, None)
            if entry is not None:
                self.current_bytes -= entry[0]


# ----------------------------------------------------------------------------- energy


class EnergyUnavailable(Exception):
    """An energy counter cannot be read on this machine; the message says why."""


def _nvml_handle(pynvml: Any, index: int) -> Any:
    """NVML numbers GPUs physically, torch after CUDA_VISIBLE_DEVICES: match by PCI bus or UUID."""
    try:
        props = torch.cuda.get_device_properties(index)
    except Exception:  # e.g. a CPU-only torch on a machine whose driver NVML can see
        props = None
    bus = getattr(props, "pci_bus_id", None)
    if bus is not None:
        domain, dev = getattr(props, "pci_domain_id", 0), getattr(props, "pci_device_id", 0)
        with contextlib.suppress(pynvml.NVMLError):  # nvidia-smi's spelling of the bus id
            return pynvml.nvmlDeviceGetHandleByPciBusId(f"{domain:08X}:{bus:02X}:{dev:02X}.0")
    uuid = getattr(props, "uuid", None)
    if uuid is not None:
        with contextlib.suppress(pynvml.NVMLError):
            return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    try:  # private torch helper that maps through CUDA_VISIBLE_DEVICES
        nvml_index = torch.cuda._get_nvml_device_index(index)
    except Exception as e:
        raise EnergyUnavailable(f"cannot match cuda:{index} to an NVML device ({e})") from None
    return pynvml.nvmlDeviceGetHandleByIndex(nvml_index)


class NvmlEnergy:
    """Joules used by one NVIDIA GPU, from NVML's total-energy counter (Volta and newer).

    Covers the whole physical GPU: every process on it and every MIG slice. The driver updates
    the counter at its power-sampling rate, so blocks well under a second read coarsely.
    Construction reads the starting value; stop() reads the end and releases NVML.
    """

    source = "nvml"

    def __init__(self, index: int):
        try:
            import pynvml
        except ImportError:
            raise EnergyUnavailable("nvidia-ml-py (pynvml) is not installed") from None
        self._nvml = pynvml
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as e:
            raise EnergyUnavailable(f"NVML could not initialise ({e})") from None
        try:
            self._handle = _nvml_handle(pynvml, index)
            self._start_mj = pynvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except (pynvml.NVMLError, EnergyUnavailable) as e:
            pynvml.nvmlShutdown()
            reason = f"NVML total energy counter unavailable for cuda:{index} ({e})"
            raise EnergyUnavailable(reason) from None

    def stop(self) -> float:
        try:
            end_mj = self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except self._nvml.NVMLError as e:
            raise EnergyUnavailable(f"NVML total energy counter failed at the end ({e})") from None
        finally:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
        return (end_mj - self._start_mj) / 1000.0


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except PermissionError:
        raise EnergyUnavailable(f"{path} is not readable (permission denied)") from None
    except OSError as e:
        raise EnergyUnavailable(f"{path} cannot be read ({e.strerror or e})") from None


class RaplEnergy:
    """Joules used by the CPU packages, from Linux powercap RAPL counters (Intel, and AMD Zen).

    RAPL measures whole packages: every process on the machine, not only this one. Only the
    top-level package domains (intel-rapl:N named package-*) are summed: their subzones
    (intel-rapl:N:M) are parts of them and psys contains them, so either would double count.
    Counters wrap at max_energy_range_uj (minutes at full power), so a background thread folds
    them in every `poll_s` seconds and each interval's wrap is undone.
    """

    source = "rapl"

    def __init__(self, root: Path | str | None = None, poll_s: float = RAPL_POLL_S):
        root = Path(root) if root is not None else POWERCAP_ROOT
        if not root.is_dir():
            raise EnergyUnavailable(f"{root} does not exist (kernel exposes no RAPL counters)")
        self._zones = [
            zone
            for zone in sorted(root.iterdir())
            if re.fullmatch(r"intel-rapl:\d+", zone.name)
            and (not (zone / "name").exists() or _read_text(zone / "name").startswith("package"))
        ]
        if not self._zones:
            raise EnergyUnavailable(f"no RAPL package domains (intel-rapl:N) under {root}")
        self._ranges = [int(_read_text(zone / "max_energy_range_uj")) for zone in self._zones]
        self._lock = threading.Lock()
        self._last = self._read()
        self._total_uj = 0
        self._poller = _Ticker(poll_s, self.poll) if poll_s > 0 else None

    def _read(self) -> list[int]:
        return [int(_read_text(zone / "energy_uj")) for zone in self._zones]

    def poll(self) -> None:
        """Add what each counter advanced since the last read, undoing one wraparound."""
        with self._lock:
            now = self._read()
            for last, current, wrap in zip(self._last, now, self._ranges):
                self._total_uj += current - last if current >= last else current + wrap - last
            self._last = now

    def stop(self) -> float:
        if self._poller is not None:
            self._poller.stop()
        self.poll()
        return self._total_uj / 1e6


def _open_energy(device: torch.device) -> tuple[NvmlEnergy | RaplEnergy | None, str | None]:
    """GPU runs get the GPU's counter, anything else the CPU packages'; never one for the other."""
    name = "NVML" if device.type == "cuda" else "RAPL"
    try:
        return (NvmlEnergy(device.index) if device.type == "cuda" else RaplEnergy()), None
    except EnergyUnavailable as e:
        prefix = "" if device.type == "cuda" else f"{device.type} run, no GPU counter applies; "
        return None, f"{prefix}{name}: {e}"


# ----------------------------------------------------------------------------- Meter


def _resolve(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# Meters inside their with-block. Resetting a process-wide high-water mark (VmHWM, CUDA's peak
# stats) would erase an enclosing Meter's peak, so every open Meter records it first.
_open_meters: list["Meter"] = []
_open_lock = threading.Lock()


class Meter:
    """Wall time, peak memory and energy of a with-block: the cost figures of a training run.

    On CUDA the headline peak is torch.cuda.max_memory_allocated, which includes whatever was
    already allocated at entry (weights, optimizer state); on CPU it is the peak RSS *above* the
    RSS at entry. Meters nest: an inner Meter does not disturb an outer one's peaks.

        with Meter(device) as meter:
            train()
        meter.result()  # dict of JSON-ready figures; None + reason where unmeasurable

    result() keys: seconds; peak_memory_mb (the headline above); peak_memory_reserved_mb and
    memory_allocated_baseline_mb (CUDA only); peak_rss_mb, rss_baseline_mb and peak_rss_source
    (how RSS was measured, see _RssWindow); peak_tensor_memory_mb (CUDA: max allocated; CPU: max
    over track_tensors() windows, None without one); energy_joules, energy_source ("nvml" for
    CUDA, "rapl" otherwise) and energy_unavailable_reason.
    """

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = _resolve(device)
        self._result: dict | None = None
        self._tensor_peak: int | None = None

    def __enter__(self) -> "Meter":
        self._result, self._tensor_peak = None, None
        _hwm_reset_supported()  # the one-off probe raises VmHWM itself: run it before any baseline
        _sync(self.device)
        with _open_lock:
            for meter in _open_meters:
                meter._fold()
            _open_meters.append(self)
            self._rss = _RssWindow()
            self._rss.start()
            self._cuda_peaks = [0, 0]  # max allocated, max reserved
            if self.device.type == "cuda":
                self._cuda_baseline = torch.cuda.memory_allocated(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
        self._energy, self._energy_reason = _open_energy(self.device)
        self._t0 = time.perf_counter()
        return self

    def _fold(self) -> None:
        self._rss.fold()
        if self.device.type == "cuda":
            allocated = torch.cuda.max_memory_allocated(self.device)
            reserved = torch.cuda.max_memory_reserved(self.device)
            peaks = self._cuda_peaks
            self._cuda_peaks = [max(peaks[0], allocated), max(peaks[1], reserved)]

    def __exit__(self, *exc: Any) -> None:
        _sync(self.device)
        seconds = time.perf_counter() - self._t0
        joules, reason = None, self._energy_reason
        if self._energy is not None:
            try:
                joules = round(self._energy.stop(), 3)
            except EnergyUnavailable as e:
                reason = str(e)
        with _open_lock:
            self._fold()
            _open_meters.remove(self)
            self._rss.stop()
        rss_peak = self._rss.above_baseline()
        cuda = self.device.type == "cuda"
        if cuda:
            headline, tensors = self._cuda_peaks[0], self._cuda_peaks[0]
        else:
            # another accelerator's memory is not in RSS and is not measured here
            headline, tensors = (rss_peak if self.device.type == "cpu" else None), self._tensor_peak
        self._result = {
            "seconds": round(seconds, 4),
            "peak_memory_mb": _mb(headline),
            "peak_memory_reserved_mb": _mb(self._cuda_peaks[1]) if cuda else None,
            "memory_allocated_baseline_mb": _mb(self._cuda_baseline) if cuda else None,
            "peak_rss_mb": _mb(rss_peak),
            "rss_baseline_mb": _mb(self._rss.baseline),
            "peak_rss_source": self._rss.source,
            "peak_tensor_memory_mb": _mb(tensors),
            "energy_joules": joules,
            "energy_source": self._energy.source if joules is not None else None,
            "energy_unavailable_reason": None if joules is not None else reason,
        }

    @contextlib.contextmanager
    def track_tensors(self) -> Iterator[TensorMemoryTracker | None]:
        """Track live CPU tensor storage for a few steps; the result keeps the max over windows.

        A no-op (yields None) on CUDA, where max_memory_allocated already counts tensors exactly.
        """
        if self.device.type == "cuda":
            yield None
            return
        tracker = TensorMemoryTracker()
        try:
            with tracker:
                yield tracker
        finally:
            self._tensor_peak = max(self._tensor_peak or 0, tracker.peak_bytes)

    def result(self) -> dict:
        if self._result is None:
            raise RuntimeError("Meter.result() is available once its with-block has exited")
        return dict(self._result)


# ----------------------------------------------------------------------------- helpers


def measure_inference(
    fn: Callable[[], Any], device: torch.device | str, warmup: int = 1, repeats: int = 5
) -> dict:
    """Median latency of fn() over `repeats` calls after `warmup`, and one call's peak memory.

    GPU work is synchronised around each call so the latency is the work's, not its launch's.
    peak_memory_mb is Meter's headline figure for one more call (on CPU, RSS growth: often ~0 for
    a small model whose freed memory the allocator reuses); peak_tensor_memory_mb is that call's
    tensor peak (TensorMemoryTracker on CPU, max_memory_allocated on CUDA).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    device = _resolve(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    with Meter(device) as meter, meter.track_tensors():
        fn()
    result = meter.result()
    return {
        "latency_ms": round(statistics.median(times) * 1e3, 3),
        "peak_memory_mb": result["peak_memory_mb"],
        "peak_tensor_memory_mb": result["peak_tensor_memory_mb"],
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: torch.device | str) -> str:
    """Human name of the device a run used, e.g. "NVIDIA H100 80GB HBM3" or "AMD EPYC, 2 CPUs"."""
    device = _resolve(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return f"{_cpu_model()}, {os.cpu_count()} CPUs"
    return device.type


def machine_info(device: torch.device | str | None = None) -> dict:
    """What a benchmark record needs to say where its numbers came from."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return {
        "device": device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
