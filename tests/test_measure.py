"""readapt.measure: the cost figures must be real measurements, or None with a reason."""

import json
import os
import time

import pytest
import torch

from readapt import measure
from readapt.measure import (
    EnergyUnavailable,
    Meter,
    NvmlEnergy,
    RaplEnergy,
    TensorMemoryTracker,
    device_name,
    machine_info,
    measure_inference,
)

KEYS = {
    "seconds",
    "peak_memory_mb",
    "peak_memory_reserved_mb",
    "peak_rss_mb",
    "rss_baseline_mb",
    "peak_tensor_memory_mb",
    "energy_joules",
    "energy_source",
    "energy_unavailable_reason",
}


def assert_energy_consistent(result):
    if result["energy_joules"] is None:
        assert result["energy_source"] is None
        reason = result["energy_unavailable_reason"]
        assert isinstance(reason, str) and reason
    else:
        assert result["energy_joules"] >= 0
        assert result["energy_source"] in ("nvml", "rapl")
        assert result["energy_unavailable_reason"] is None


# ----------------------------------------------------------------------------- Meter on CPU


def test_meter_cpu_reports_every_key_as_json():
    with Meter("cpu") as meter:
        time.sleep(0.05)
    result = meter.result()
    assert KEYS <= result.keys()
    json.dumps(result)
    assert result["seconds"] >= 0.05
    assert result["peak_memory_reserved_mb"] is None
    assert result["peak_tensor_memory_mb"] is None  # no tracked window
    assert result["rss_baseline_mb"] > 0
    assert result["peak_memory_mb"] == result["peak_rss_mb"]
    assert_energy_consistent(result)


def test_meter_result_before_exit_is_an_error():
    with pytest.raises(RuntimeError):
        Meter().result()


def test_peak_rss_sees_a_touched_allocation_and_next_meter_starts_fresh():
    with Meter() as first:
        big = torch.ones(50_000_000)  # 200 MB, every page written
        del big
    assert first.result()["peak_rss_mb"] >= 150

    with Meter() as second:
        small = torch.ones(1000)
        del small
    assert second.result()["peak_rss_mb"] < 50


def test_inner_meter_does_not_erase_outer_peak():
    with Meter() as outer:
        big = torch.ones(50_000_000)
        del big
        with Meter() as inner:
            pass
    assert outer.result()["peak_rss_mb"] >= 150
    assert inner.result()["peak_rss_mb"] < 50


def test_meter_keeps_max_over_tracked_windows():
    with Meter() as meter:
        with meter.track_tensors():
            x = torch.empty(250_000)  # 1 MB
            del x
        with meter.track_tensors():
            y = torch.empty(25_000)
            del y
    assert meter.result()["peak_tensor_memory_mb"] == pytest.approx(1e6 / measure.MiB, abs=0.01)


# ----------------------------------------------------------------------------- TensorMemoryTracker


def test_tracker_peak_is_largest_live_allocation():
    with TensorMemoryTracker() as tracker:
        big = torch.empty(1_000_000)  # 4,000,000 bytes
        del big
        small = torch.empty(100_000)
    assert tracker.peak_bytes == pytest.approx(4_000_000, rel=0.01)
    del small


def test_tracker_counts_matmul_operands_and_result():
    with TensorMemoryTracker() as tracker:
        a = torch.randn(256, 512)
        b = torch.randn(512, 128)
        c = a @ b
    assert tracker.peak_bytes == pytest.approx((256 * 512 + 512 * 128 + 256 * 128) * 4, rel=0.01)
    del a, b, c


def test_tracker_ignores_views_and_tensors_from_before():
    before = torch.ones(100_000)
    with TensorMemoryTracker() as tracker:
        view = before[10:]
        before.add_(1)
        view.mul_(2)
        fresh = torch.tensor([1.0, 2.0, 3.0])  # built from Python data: counted
    assert tracker.peak_bytes == 12
    del view, fresh


def test_tracker_backward_peak_exceeds_forward_only():
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Linear(256, 1024), nn.ReLU(), nn.Linear(1024, 10))
    x = torch.randn(64, 256)
    with TensorMemoryTracker() as forward, torch.no_grad():
        model(x).sum()
    with TensorMemoryTracker() as backward:
        model(x).sum().backward()
    assert forward.peak_bytes > 0
    assert backward.peak_bytes > forward.peak_bytes


# ----------------------------------------------------------------------------- energy


def fake_package(root, name, energy, wrap, label="package-0"):
    zone = root / name
    zone.mkdir(parents=True)
    (zone / "name").write_text(label + "\n")
    (zone / "energy_uj").write_text(f"{energy}\n")
    (zone / "max_energy_range_uj").write_text(f"{wrap}\n")
    return zone


def test_rapl_sums_packages_and_undoes_wraparound(tmp_path):
    pkg0 = fake_package(tmp_path, "intel-rapl:0", 990_000, 1_000_000)
    pkg1 = fake_package(tmp_path, "intel-rapl:1", 5_000, 1_000_000, label="package-1")
    fake_package(tmp_path, "intel-rapl:0:0", 123, 1_000_000, label="core")  # part of package 0
    fake_package(tmp_path, "intel-rapl:2", 0, 1_000_000, label="psys")  # contains the packages
    fake_package(tmp_path, "intel-rapl-mmio:0", 0, 1_000_000)  # duplicate view of package 0

    counter = RaplEnergy(tmp_path, poll_s=0)
    (pkg0 / "energy_uj").write_text("10000\n")  # wrapped: 990,000 -> 1,000,000 -> 10,000
    counter.poll()
    (pkg0 / "energy_uj").write_text("20000\n")
    (pkg1 / "energy_uj").write_text("7000\n")
    (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("999999\n")
    assert counter.stop() == pytest.approx((20_000 + 10_000 + 2_000) / 1e6)


def test_rapl_without_powercap_says_why(tmp_path):
    with pytest.raises(EnergyUnavailable, match="does not exist"):
        RaplEnergy(tmp_path / "missing")
    with pytest.raises(EnergyUnavailable, match="no RAPL package domains"):
        RaplEnergy(tmp_path)


def test_nvml_reads_or_says_why():
    try:
        counter = NvmlEnergy(0)
    except EnergyUnavailable as e:
        assert str(e)
    else:
        assert counter.stop() >= 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_meter_cuda_peak_is_max_memory_allocated():
    device = torch.device("cuda")
    with Meter(device) as meter:
        with meter.track_tensors() as tracker:  # a no-op on CUDA
            x = torch.ones(25_000_000, device=device)  # 100 MB
            del x
        assert tracker is None
    result = meter.result()
    assert result["peak_memory_mb"] >= 95
    assert result["peak_memory_reserved_mb"] >= result["peak_memory_mb"]
    assert result["peak_tensor_memory_mb"] == result["peak_memory_mb"]
    assert_energy_consistent(result)


# ----------------------------------------------------------------------------- helpers


def test_measure_inference_reports_latency_and_memory():
    model = torch.nn.Linear(128, 128)
    x = torch.randn(32, 128)
    stats = measure_inference(lambda: model(x), "cpu", warmup=1, repeats=3)
    assert stats["latency_ms"] > 0
    assert stats["peak_memory_mb"] >= 0
    assert stats["peak_tensor_memory_mb"] > 0
    with pytest.raises(ValueError):
        measure_inference(lambda: None, "cpu", repeats=0)


def test_device_name_and_machine_info():
    assert device_name("cpu")
    info = machine_info("cpu")
    json.dumps(info)
    assert info["device"] == device_name("cpu")
    assert info["torch"] == torch.__version__
    assert info["cpu_count"] == os.cpu_count()
    assert info["python"]


def test_sampled_rss_fallback_where_hwm_reset_is_refused(monkeypatch):
    monkeypatch.setattr(measure, "_hwm_reset_works", False)  # as where clear_refs is refused
    with Meter() as meter:
        big = torch.ones(50_000_000)
        time.sleep(0.1)  # sampled every 20 ms: hold the peak long enough to be seen
        del big
    result = meter.result()
    expected = "sampled" if measure._IS_LINUX else "ru_maxrss"
    assert result["peak_rss_source"] == expected
    if expected == "sampled":
        assert result["peak_rss_mb"] >= 150
