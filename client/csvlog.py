"""The per-turn CSV log: `timestamp,text,in_emotion,out_emotion,latency_ms`, then per-stage extras.

One line per turn, written and flushed at once under an exclusive file lock, so that lines from concurrent
clients never interleave and a killed client loses nothing it had logged. The header is written once, by
whoever finds the file empty.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path


@dataclass(frozen=True)
class TurnRecord:
    """One turn of the loop. The first five fields are the seed's columns, in its order."""

    timestamp: str  # ISO-8601 UTC, when the turn was logged (its answer had started)
    text: str  # what emoloop answered
    in_emotion: str  # what the SER heard
    out_emotion: str  # what the policy chose
    latency_ms: float  # utterance end (endpoint decision) -> first answer sample
    turn_id: str = ""
    in_confidence: float = 0.0
    policy_reason: str = ""
    # The four stages add up to latency_ms:
    ser_ms: float = 0.0  # endpoint (audio that let SER decide sent) -> the client acts on the utterance result
    policy_ms: float = 0.0  # Decide round trip (and picking the reply text)
    synthesis_first_chunk_ms: float = 0.0  # synthesis call start -> first chunk at the client
    playback_ms: float = 0.0  # first chunk at the client -> first sample out (device or file)
    utterance_ms: float = 0.0  # length of the user's utterance
    answer_ms: float = 0.0  # length of the answer audio


COLUMNS = [f.name for f in fields(TurnRecord)]


def utc_now() -> str:
    """The current time as ISO-8601 UTC with milliseconds, e.g. 2026-11-24T05:14:50.123Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TurnLog:
    """Appends TurnRecords to a CSV file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: TurnRecord) -> None:
        """Write one line (and the header first, if the file is empty), flushed to the OS before returning."""
        row = asdict(record)
        for name in (
            "latency_ms",
            "ser_ms",
            "policy_ms",
            "synthesis_first_chunk_ms",
            "playback_ms",
            "utterance_ms",
            "answer_ms",
        ):
            row[name] = f"{row[name]:.1f}"
        row["in_confidence"] = f"{record.in_confidence:.3f}"
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size == 0:
                writer.writeheader()
            writer.writerow(row)
            os.write(fd, buffer.getvalue().encode("utf-8"))
        finally:
            os.close(fd)  # closing releases the lock


def read_log(path: Path) -> list[dict[str, str]]:
    """The rows of a turn log, as dictionaries keyed by column name."""
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))
