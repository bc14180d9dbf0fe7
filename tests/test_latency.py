"""Latency side by side (analysis.latency): every model of a table timed in one process, taking
turns, after the runs; a module that only adds work is never reported faster than the
baseline beyond the spread measured with it."""

from __future__ import annotations

from analysis import latency
from danet import config as C


def _models(*arms: tuple[str, str]) -> dict:
    base = C.build(None, ["data.image_size=96"])
    out = {}
    for variant, head in arms:
        cfg = C.apply(base, {"model.variant": variant, "model.head": head}, "test")
        out[f"{variant} {head}"] = (C.to_dict(cfg), 8, (1, 3, 96, 96))
    return out


def test_added_work_is_never_faster_than_the_baseline_beyond_the_spread():
    """pam is none plus an attention module; danet is none (dual) plus two. Timed side by
    side, each is at least as slow as its baseline within the two spreads (half-IQRs)."""
    m = latency.measure(
        _models(("none", "single"), ("pam", "single"), ("none", "dual"), ("danet", "auto")),
        threads=1, rounds=15,
    )["models"]
    for more, base in (("pam single", "none single"), ("danet auto", "none dual")):
        slack = m[more]["spread_ms"] + m[base]["spread_ms"]
        assert m[more]["median_ms"] + slack >= m[base]["median_ms"], (more, m[more], m[base])
    assert all(len(v["samples"]) == 15 for v in m.values())


def test_measurement_is_cached_per_machine_and_models(tmp_path, monkeypatch):
    models = _models(("none", "single"), ("cam", "single"))
    first = latency.cached_measure(models, 1, tmp_path)
    monkeypatch.setattr(latency, "measure", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("measured again")))
    assert latency.cached_measure(models, 1, tmp_path) == first
    assert latency.cached_measure(_models(("none", "single")), 1, tmp_path, run=False) is None
    assert first["machine"] == latency.machine() and first["threads"] == 1
