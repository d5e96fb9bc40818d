"""The dashboard rendered headless with Streamlit's AppTest against a missing log, a full log and a seed-only log."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

from emoloop.client import dashboard
from emoloop.client.csvlog import TurnLog, TurnRecord

APP = Path(dashboard.__file__)
SEED_COLUMNS = ["timestamp", "text", "in_emotion", "out_emotion", "latency_ms"]
# (in, out, latency): five turns, mixed emotions, one over the 120 ms budget; p50 = 95, max = 180.
TURNS = [
    ("neutral", "neutral", 80.0),
    ("sad", "calm", 95.0),
    ("angry", "calm", 180.0),
    ("happy", "happy", 90.0),
    ("sad", "calm", 100.0),
]


def _record(index: int, in_emotion: str, out_emotion: str, latency_ms: float) -> TurnRecord:
    return TurnRecord(
        timestamp=f"2026-11-24T05:14:{50 + index:02d}.123Z",
        text=f"answer {index}",
        in_emotion=in_emotion,
        out_emotion=out_emotion,
        latency_ms=latency_ms,
        turn_id=f"t{index}",
        in_confidence=0.8,
        policy_reason="rule",
        ser_ms=latency_ms * 0.4,
        policy_ms=latency_ms * 0.1,
        synthesis_first_chunk_ms=latency_ms * 0.4,
        playback_ms=latency_ms * 0.1,
        utterance_ms=1500.0,
        answer_ms=2000.0,
    )


@pytest.fixture
def full_log(tmp_path: Path) -> Path:
    path = tmp_path / "turns.csv"
    log = TurnLog(path)
    for index, turn in enumerate(TURNS):
        log.append(_record(index, *turn))
    return path


@pytest.fixture
def seed_log(full_log: Path, tmp_path: Path) -> Path:
    """The same turns with only the seed's five columns, as another tool would write them."""
    path = tmp_path / "seed.csv"
    with open(full_log, newline="") as source, open(path, "w", newline="") as target:
        writer = csv.DictWriter(target, fieldnames=SEED_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(csv.DictReader(source))
    return path


def _run(path: Path, monkeypatch: pytest.MonkeyPatch) -> AppTest:
    monkeypatch.setenv("EMOLOOP_LOG", str(path))
    app = AppTest.from_file(str(APP), default_timeout=20).run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def _metrics(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def _charts(app: AppTest) -> list[str]:
    """The Vega-Lite specs of the page's Altair charts (the element's name changed across Streamlit versions)."""
    return [chart.proto.spec for name in ("vega_lite_chart", "arrow_vega_lite_chart") for chart in app.get(name)]


def test_missing_log_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nothing" / "turns.csv"
    app = _run(path, monkeypatch)
    assert app.title[0].value.startswith("emoloop")
    assert any("No turn log" in info.value and str(path) in info.value for info in app.info)
    assert not app.metric and not _charts(app)


def test_empty_log_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "turns.csv"
    path.write_text("")
    app = _run(path, monkeypatch)
    assert any("no turns yet" in info.value for info in app.info)


def test_full_log(full_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(full_log, monkeypatch)
    assert _metrics(app) == {
        "Turns": "5",
        "Latency p50": "95 ms",
        "Latency p95": "164 ms",  # numpy's linear interpolation between 100 and 180
        "Latency max": "180 ms",
        "Within 120 ms": "80%",
    }
    latency, stages, emotions = _charts(app)
    assert '"mark": {"type": "rule"' in latency and '"datum": 120.0' in latency
    assert '"sort": ["SER result", "policy", "first synthesis chunk", "playback"]' in stages
    assert '"field": "side"' in emotions
    assert any("Median per stage" in caption.value for caption in app.caption)
    transitions, last_turns = (frame.value for frame in app.dataframe)
    assert transitions.loc["sad", "calm"] == 2 and transitions.loc["angry", "calm"] == 1
    assert list(last_turns["turn"]) == [5, 4, 3, 2, 1]
    assert "ser_ms" in last_turns


def test_seed_columns_only(seed_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = _run(seed_log, monkeypatch)
    assert _metrics(app)["Turns"] == "5" and _metrics(app)["Latency p50"] == "95 ms"
    assert len(_charts(app)) == 2  # latency and emotions; no stages
    assert any("only the five seed columns" in info.value for info in app.info)
    assert "ser_ms" not in app.dataframe[1].value


def test_rerun_picks_up_new_turns(full_log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each (fragment) re-run re-reads the file, which is how the page follows the log live."""
    app = _run(full_log, monkeypatch)
    TurnLog(full_log).append(_record(len(TURNS), "happy", "happy", 300.0))
    app.run()
    assert not app.exception
    assert _metrics(app)["Turns"] == "6" and _metrics(app)["Latency max"] == "300 ms"


def test_log_path_precedence() -> None:
    assert dashboard.log_path(["--log", "a.csv"], {"EMOLOOP_LOG": "b.csv"}) == Path("a.csv")
    assert dashboard.log_path(["tests/x.py", "-q"], {"EMOLOOP_LOG": "b.csv"}) == Path("b.csv")
    assert dashboard.log_path([], {}) == Path(dashboard.DEFAULT_LOG)
