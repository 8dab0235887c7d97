"""The serving hot path's shortcuts agree with the general code they bypass.

- ``parse_tabular_request`` checks plainly valid small fields by hand and leaves the rest to
  pydantic: both must give the same call for valid bodies, and pydantic's error otherwise;
- batch replies are length-framed: framing round-trips, and a cut message is refused;
- ``usfad bench serve`` builds image requests whose multipart body carries the file unchanged,
  and calls a level's throughput a fall only beyond the round-to-round spread;
- the drift gauges, kept up to date by counting, equal the mean over the window.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.exceptions import RequestValidationError
from prometheus_client import CollectorRegistry, Gauge

from service.bench import _image_bytes, build_request, throughput_by_level
from service.calibration import DRIFT_LEVELS
from service.drift import DriftMonitor
from service.errors import CodecError
from service.queue.redis_replies import frame, unframe
from service.schemas import TabularRequest
from service.tabular_request import parse_tabular_request


def _through_pydantic(body: dict) -> tuple:
    checked = TabularRequest.model_validate({**body, "rows": []})
    return checked.model, checked.version, body["rows"], checked.threshold, checked.timeout_s


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "rows": [[1.0, 2.0]]},
        {"model": "m", "version": "v1", "rows": [[1]], "threshold": 2, "timeout_s": 5},
        {"model": "m", "rows": [[1]], "threshold": -0.25, "timeout_s": 300},
        {"model": "m", "rows": [[1]], "version": None, "threshold": None, "timeout_s": None},
        {"model": "m", "rows": [[1]], "threshold": True},  # pydantic's lax float: 1.0
    ],
)
def test_plain_fields_give_the_call_pydantic_gives(body: dict) -> None:
    call = parse_tabular_request(orjson.dumps(body))
    assert (call.model, call.version, call.rows, call.threshold, call.timeout_s) == _through_pydantic(body)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": "m", "rows": [[1]], "timeout_s": 0}, "timeout_s"),
        ({"model": "m", "rows": [[1]], "timeout_s": 301}, "timeout_s"),
        ({"model": "m", "rows": [[1]], "threshold": "high"}, "threshold"),
        ({"model": "m", "rows": [[1]], "extra": 1}, "extra"),
        ({"model": 3, "rows": [[1]]}, "model"),
        ({"rows": [[1]]}, "model"),
        ({"model": "m", "rows": [[1]], "version": 2}, "version"),
    ],
)
def test_other_fields_get_pydantics_error(body: dict, field: str) -> None:
    with pytest.raises(RequestValidationError) as caught:
        parse_tabular_request(orjson.dumps(body))
    assert caught.value.errors()[0]["loc"] == ("body", field)


def test_huge_threshold_is_refused_not_overflowed() -> None:
    body = b'{"model": "m", "rows": [[1]], "threshold": 1' + b"0" * 400 + b"}"
    with pytest.raises(RequestValidationError):
        parse_tabular_request(body)


def test_reply_frames_round_trip_and_a_cut_message_is_refused() -> None:
    parts = [b"", b"one", bytes(range(256)) * 40]
    message = b"".join(frame(part) for part in parts)
    assert unframe(message) == parts
    with pytest.raises(CodecError):
        unframe(message[:-1])
    with pytest.raises(CodecError):
        unframe(message + b"\x01")


def test_bench_multipart_request_carries_the_image_unchanged(tmp_path: Path) -> None:
    image = tmp_path / "tile.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 3 + b"\r\n--not-a-boundary")
    args = argparse.Namespace(model="tile", rows_per_request=3, image=image, upload="multipart", map="png")
    spec = build_request(args, argparse.Namespace(kind="image"))
    assert spec.items == 3 and spec.path == "/score/image?model=tile&map=png"
    assert spec.body.count(b'name="images"') == 3 and _image_bytes(spec) == image.read_bytes()
    tabular = argparse.Namespace(model="m", rows_per_request=2, image=None, upload="raw", map="none")
    manifest = argparse.Namespace(kind="tabular", features=4)
    rows = json.loads(build_request(tabular, manifest).body)["rows"]
    assert len(rows) == 2 and all(len(row) == 4 for row in rows)


def test_bench_calls_a_fall_only_beyond_the_spread_of_the_rounds() -> None:
    def results(rates: dict[int, list[float]]) -> list[dict]:
        rounds = zip(*rates.values(), strict=True)
        return [
            {"concurrency": c, "rows_per_s": r} for row in rounds for c, r in zip(rates, row, strict=True)
        ]

    flat = {8: [100, 110, 120], 32: [105, 118, 101], 64: [104, 99, 108]}
    within = throughput_by_level(results(flat), "img")
    assert "over 3 rounds" in within and "8: 110 (100–120)" in within and within.endswith("spread: none")
    beyond = throughput_by_level(results({8: [100, 110, 120], 32: [90, 95, 99], 64: [96, 94, 97]}), "img")
    assert beyond.endswith("spread: 8 → 32 (-13.6%)")  # 95 < 100, the lowest round at 8


def test_drift_counts_equal_the_mean_over_the_window() -> None:
    gauge = Gauge("share", "share", ["model", "level"], registry=CollectorRegistry())
    monitor = DriftMonitor(gauge, window=50)
    rng = np.random.default_rng(1)
    seen: list[float] = []
    for _ in range(300):
        values = rng.uniform(0, 0.1, int(rng.choice([1, 1, 2, 7, 60])))
        if rng.random() < 0.1:
            values[0] = np.nan  # never counted as at or below a level
        monitor.observe("m", values)
        seen += values.tolist()
        recent = np.asarray(seen[-50:])
        for level in DRIFT_LEVELS:
            assert gauge.labels("m", f"{level:g}")._value.get() == float(np.mean(recent <= level))
