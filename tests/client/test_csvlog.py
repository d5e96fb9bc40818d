"""The turn log: the seed's five columns first, a header once, proper quoting, and no line lost or torn."""

from __future__ import annotations

import csv
import multiprocessing
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

from emoloop.client.csvlog import COLUMNS, TurnLog, TurnRecord, read_log, utc_now


def record(text: str = "Hi", latency_ms: float = 42.0) -> TurnRecord:
    return TurnRecord(utc_now(), text, "angry", "calm", latency_ms, turn_id="t", ser_ms=10.0)


def test_the_seed_columns_come_first_and_the_header_is_written_once(tmp_path: Path) -> None:
    log = TurnLog(tmp_path / "turns.csv")
    log.append(record())
    log.append(record())
    lines = (tmp_path / "turns.csv").read_text().splitlines()
    assert lines[0].startswith("timestamp,text,in_emotion,out_emotion,latency_ms,")
    assert lines.count(lines[0]) == 1 and len(lines) == 3


def test_text_with_commas_quotes_and_newlines_round_trips(tmp_path: Path) -> None:
    tricky = 'Well, "calm down",\nplease — ünïcode'
    TurnLog(tmp_path / "turns.csv").append(record(tricky))
    (row,) = read_log(tmp_path / "turns.csv")
    assert row["text"] == tricky and row["in_emotion"] == "angry" and row["latency_ms"] == "42.0"


def test_timestamps_are_iso_8601_utc(tmp_path: Path) -> None:
    TurnLog(tmp_path / "turns.csv").append(record())
    (row,) = read_log(tmp_path / "turns.csv")
    assert row["timestamp"].endswith("Z")
    assert datetime.fromisoformat(row["timestamp"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0


def _write_many(path: str, worker: int) -> None:
    log = TurnLog(Path(path))
    for i in range(50):
        log.append(record(f"worker {worker} line {i}, with a comma"))


def test_concurrent_writers_lose_no_line_and_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "turns.csv"
    workers = [multiprocessing.Process(target=_write_many, args=(str(path), w)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    assert rows[0] == COLUMNS and rows.count(COLUMNS) == 1
    body = rows[1:]
    assert len(body) == 200 and all(len(r) == len(COLUMNS) for r in body)
    assert {r[1] for r in body} == {f"worker {w} line {i}, with a comma" for w in range(4) for i in range(50)}


WRITER = """
import sys
from pathlib import Path
from emoloop.client.csvlog import TurnLog, TurnRecord, utc_now
log = TurnLog(Path(sys.argv[1]))
for i in range(100000):
    log.append(TurnRecord(utc_now(), f"line {i}, quoted \\"text\\"", "sad", "calm", 50.0))
    print(i, flush=True)
"""


def test_a_client_killed_mid_session_loses_no_line_it_had_logged(tmp_path: Path) -> None:
    path = tmp_path / "turns.csv"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True)
    for _ in range(300):  # let it log a few hundred turns, then kill it without warning
        last_logged = int(writer.stdout.readline())
    writer.send_signal(signal.SIGKILL)
    writer.wait(10)
    rows = read_log(path)
    assert len(rows) >= last_logged + 1  # every append that returned is on disk
    assert [row["text"] for row in rows] == [f'line {i}, quoted "text"' for i in range(len(rows))]  # none torn
