"""The end-to-end loop benchmark: its stage arithmetic, tables, bottleneck naming and history, and a tiny real run."""

from __future__ import annotations

import csv
import math
import re
import socket
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from bench.common import comparison_lines, previous_values, read_history, record_history
from bench.loop import (
    LENGTHS,
    RATE,
    STAGES,
    Clip,
    Phase,
    Summary,
    Turn,
    clip_at,
    first_bottleneck,
    length_clips,
    main,
    procfile_commands,
    session_audio,
    stage_table,
    within_budget,
)

CORES = {"ser": 0.1, "policy": 0.0, "synthesis": 0.1, "clients": 0.02}


def turn(**stages: float) -> Turn:
    """A turn with the given stage times (ms) and an end-to-end time that is their sum, as in a real turn."""
    values = {"ser": 10.0, "handoff": 0.5, "policy": 3.0, "synthesis": 60.0, "transport": 2.0, **stages}
    return Turn(
        session=0,
        turn_id="t",
        clip="angry",
        utterance_ms=2000.0,
        end_to_end_ms=sum(values.values()),
        ser_result_ms=values["ser"],
        handoff_ms=values["handoff"],
        policy_ms=values["policy"],
        synthesis_client_ms=values["synthesis"] + values["transport"],
        synthesis_server_ms=values["synthesis"],
        playback_ms=0.0,
        whole_turn_ms=300.0,
    )


def phase(sessions: int, turns: list[Turn], machine_cores: float = 0.5) -> Phase:
    return Phase(f"{sessions} sessions", sessions, turns, wall_s=10.0, cores=CORES, machine_cores=machine_cores)


def test_the_stages_of_a_turn_add_up_to_its_end_to_end_time() -> None:
    t = turn(ser=12.0, handoff=1.0, policy=4.0, synthesis=70.0, transport=3.0)
    assert sum(t.stage(name) for name in STAGES) == pytest.approx(t.end_to_end_ms) == 90.0
    assert t.transport_ms == pytest.approx(3.0)  # the synthesis call's time less the service's own


def test_without_the_services_first_chunk_time_the_whole_call_counts_as_synthesis() -> None:
    t = replace(turn(synthesis=60.0, transport=2.0), synthesis_server_ms=math.nan)
    assert t.synthesis_ms == pytest.approx(62.0) and t.transport_ms == pytest.approx(0.0)


def test_summary_gives_median_p95_and_max_ignoring_missing_values() -> None:
    s = Summary.of([*range(1, 101), math.nan])
    assert (s.n, s.p50, s.max) == (100, 50.5, 100)
    assert s.p95 == pytest.approx(95.05)
    assert math.isnan(Summary.of([]).p50)


def test_stage_table_has_a_row_per_stage_with_its_percentiles() -> None:
    turns = [turn(synthesis=float(v)) for v in range(50, 150)]
    table = stage_table(turns)
    row = next(line for line in table if line.startswith("| first synthesis chunk |"))
    assert row.endswith("| 99.5 | 144.1 | 149.0 |")
    assert sum(line.startswith("| ") for line in table) == 1 + len(STAGES) + 2  # header, stages, e2e, whole turn
    assert within_budget(turns) == pytest.approx(sum(t.end_to_end_ms <= 120 for t in turns) / 100)


def test_the_first_stage_to_grow_with_sessions_is_named_with_what_would_move_it() -> None:
    one = phase(1, [turn() for _ in range(10)])
    two = phase(2, [turn(policy=4.0) for _ in range(10)])  # +1 ms: noise
    four = phase(4, [turn(synthesis=200.0, handoff=30.0) for _ in range(10)])
    stage, text = first_bottleneck([one, two, four])
    assert stage == "synthesis"
    assert "first bottleneck is **first synthesis chunk**" in text and "at 4 sessions" in text
    assert "To move it" in text


def test_what_grows_most_at_the_highest_level_is_named_too_when_it_is_another_stage() -> None:
    one = phase(1, [turn() for _ in range(10)])
    four = phase(4, [turn(synthesis=100.0) for _ in range(10)])
    eight = phase(8, [replace(turn(synthesis=150.0, handoff=5000.0), whole_turn_ms=4000.0) for _ in range(10)])
    stage, text = first_bottleneck([one, four, eight])
    assert stage == "synthesis" and "at 4 sessions" in text
    assert "At 8 sessions the largest growth is in **hand-off** (median +5000 ms)" in text
    assert "synthesis throughput" in text


def test_no_bottleneck_is_named_when_nothing_grows_beyond_noise() -> None:
    stage, text = first_bottleneck([phase(1, [turn()]), phase(8, [turn(ser=13.0)])])
    assert stage is None and "beyond noise" in text
    assert first_bottleneck([phase(1, [turn()])])[0] is None


def test_a_growing_hand_off_is_explained_by_whole_turns_and_a_saturated_machine_is_said() -> None:
    slow = [replace(turn(handoff=900.0), whole_turn_ms=4000.0) for _ in range(10)]
    stage, text = first_bottleneck([phase(1, [turn()]), phase(8, slow, machine_cores=2.0)])
    assert stage == "handoff"
    assert "whole turn" in text and "4000 ms" in text and "synthesis throughput" in text
    assert "by other work on the machine" in text


def test_history_shows_the_previous_run_of_the_same_mode_and_marks_a_regression(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    first = record_history("loop", "full", {"e2e_p50_ms": 80.0, "memory_mb": 500.0}, history)
    assert "| e2e_p50_ms | 80 | – | – | |" in first
    record_history("loop", "quick", {"e2e_p50_ms": 500.0}, history)  # another mode is no baseline
    second = record_history("loop", "full", {"e2e_p50_ms": 100.0, "memory_mb": 490.0}, history)
    e2e = next(line for line in second if line.startswith("| e2e_p50_ms |"))
    memory = next(line for line in second if line.startswith("| memory_mb |"))
    assert "| 100 | 80 (" in e2e and "| 1.25 | ▲ worse |" in e2e
    assert "| 0.98 | |" in memory
    rows = read_history(history)
    assert len(rows) == 5 and set(rows[0]) == {"timestamp", "commit", "bench", "mode", "metric", "value"}
    assert previous_values(rows, "loop", "full")["e2e_p50_ms"][0] == 100.0


def test_comparison_of_a_metric_without_a_previous_value_says_so() -> None:
    lines = comparison_lines({"x": 1.0}, {})
    assert lines[-1] == "| x | 1 | – | – | |"


def test_the_procfile_gives_the_three_service_commands_and_shell_syntax_is_refused(tmp_path: Path) -> None:
    commands = procfile_commands(Path(__file__).resolve().parents[2] / "Procfile")
    assert commands["ser"][-2:] == ["-m", "emoloop.services.ser"] and set(commands) == {"ser", "policy", "synthesis"}
    bad = tmp_path / "Procfile"
    bad.write_text("ser: python -m x --port $PORT\npolicy: a\nsynthesis: b\n")
    with pytest.raises(ValueError, match="shell syntax"):
        procfile_commands(bad)
    bad.write_text("ser: a\n")
    with pytest.raises(ValueError, match="no entry for policy, synthesis"):
        procfile_commands(bad)


def test_each_utterance_is_attributed_to_the_clip_it_overlaps_most() -> None:
    clips = [Clip("a", np.ones(RATE, np.float32)), Clip("b", np.ones(2 * RATE, np.float32))]
    audio, placed = session_audio(clips, lead_s=0.5, gap_s=1.0)
    assert audio.size == int(0.5 * RATE) + RATE + RATE + 2 * RATE + RATE
    assert [(p.name, p.start_ms, p.end_ms) for p in placed] == [("a", 500, 1500), ("b", 2500, 4500)]
    assert clip_at(placed, 450, 1600) == "a" and clip_at(placed, 1400, 2900) == "b"  # 100 ms of a, 400 of b
    assert clip_at(placed, 5000, 6000) == "?"


def test_length_classes_grow_from_one_second_to_several_utterances() -> None:
    speech = np.sin(np.arange(2 * RATE) / 10).astype(np.float32)
    clips = [Clip(str(i), np.concatenate([np.zeros(RATE // 2, np.float32), speech])) for i in range(4)]
    seconds = {name: length_clips(clips, name, 2)[0].seconds for name in LENGTHS}
    assert seconds["short"] == pytest.approx(1.0)
    assert seconds["medium"] == pytest.approx(2.0, abs=0.02)  # the leading silence trimmed
    assert seconds["long"] > 2 * seconds["medium"] and seconds["very-long"] > 2 * seconds["long"]


def test_a_tiny_real_run_measures_turns_and_stops_every_service(tmp_path: Path) -> None:
    results, plot, turns_csv = tmp_path / "results.md", tmp_path / "loop.png", tmp_path / "turns.csv"
    argv = ["--turns", "2", "--sessions", "1", "--lengths", "none", "--warmup", "0"]
    assert main([*argv, "--results", str(results), "--plot", str(plot), "--turns-csv", str(turns_csv)]) == 0
    text = results.read_text()
    assert text.startswith("## End-to-end loop benchmark") and "### Against the previous run" in text
    e2e = re.search(r"\| \*\*end to end\*\* \| [^|]+ \| ([0-9.]+) \|", text)
    assert e2e and 0 < float(e2e[1]) < 10_000
    rows = list(csv.DictReader(turns_csv.open()))
    assert len(rows) >= 2 and all(float(r["end_to_end_ms"]) > float(r["ser_result_ms"]) > 0 for r in rows)
    assert all(math.isfinite(float(r["synthesis_server_ms"])) for r in rows)  # read from the service's log
    assert {r["metric"] for r in read_history(tmp_path / "history.csv")} >= {"e2e_p50_ms", "memory_idle_sum_mb"}
    assert plot.stat().st_size > 10_000
    ports = re.search(r"ser (\d+), policy (\d+), synthesis (\d+)", text)
    assert ports
    for port in ports.groups():  # nothing is left listening
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", int(port))) != 0
