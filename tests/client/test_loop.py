"""The whole loop against real services: the file loop end to end, and barge-in in a loop fed in real time.

The SER service runs a small untrained checkpoint the tests make, so the detected emotions are arbitrary here;
what is specified is the flow: one answer and one CSV line per utterance, stage timings, and cancelling.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from bench.common import free_port
from emoloop.client.connect import connect
from emoloop.client.csvlog import TurnLog, read_log
from emoloop.client.ser import SerStream
from emoloop.client.session import Conversation, FileSink, Stubs, converse, keep_conversing, replies_from
from emoloop.client.synthesis import SpeechChunk
from emoloop.client.wavio import read_wav, write_wav
from emoloop.services.policy.servicer import default_servicer
from emoloop.services.ser.servicer import SerServicer
from emoloop.services.synthesis.servicer import SynthesisServicer
from tests.conftest import started
from tests.models.test_ser import save_tiny_checkpoint
from tests.services.test_ser_service import silence, speech

RATE = 16000
EMOTIONS = {"neutral", "calm", "happy", "sad", "angry", "fearful"}


@pytest.fixture(scope="module")
def port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """All three services in one in-process server."""
    checkpoint = save_tiny_checkpoint(tmp_path_factory.mktemp("ser"))
    with started(
        SerServicer(checkpoint), default_servicer(), SynthesisServicer(engines=["espeak"], default_engine="espeak")
    ) as running:
        yield running.port


@pytest.fixture(scope="module")
def two_turns() -> np.ndarray:
    return np.concatenate(
        [
            silence(0.4),
            speech("I have been waiting for an hour."),
            silence(1.2),
            speech("Nobody told me a thing."),
            silence(0.3),
        ]
    )


def test_run_answers_each_utterance_writes_the_answers_and_logs_one_line_per_turn(
    tmp_path: Path, port: int, two_turns: np.ndarray
) -> None:
    write_wav(tmp_path / "in.wav", two_turns, RATE)
    (tmp_path / "replies.txt").write_text("I see, go on.\nThank you, that helps.\n")
    env = {**os.environ, **{f"EMOLOOP_{s}_ADDRESS": f"127.0.0.1:{port}" for s in ("SER", "POLICY", "SYNTHESIS")}}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emoloop.client.cli",
            "run",
            "--input",
            str(tmp_path / "in.wav"),
            "--output",
            str(tmp_path / "out.wav"),
            "--replies",
            str(tmp_path / "replies.txt"),
            "--log",
            str(tmp_path / "turns.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    rows = read_log(tmp_path / "turns.csv")
    assert [r["text"] for r in rows] == ["I see, go on.", "Thank you, that helps."]
    for row in rows:
        assert row["in_emotion"] in EMOTIONS and row["out_emotion"] in EMOTIONS
        stages = sum(float(row[k]) for k in ("ser_ms", "policy_ms", "synthesis_first_chunk_ms", "playback_ms"))
        assert float(row["latency_ms"]) == pytest.approx(stages, abs=1.0)  # the stages add up to the whole
        assert 0 < float(row["latency_ms"]) < 5000
    answers, rate = read_wav(tmp_path / "out.wav")
    assert answers.size / rate == pytest.approx(sum(float(r["answer_ms"]) for r in rows) / 1000 + 0.3, abs=0.05)
    for stage in ("heard", "policy", "answer", "latency"):
        assert result.stdout.count(f"\n{stage} ") + result.stdout.startswith(f"{stage} ") == 2


class PlayingSink(FileSink):
    """A file sink that 'plays' in real time, like a speaker, and remembers which turns were interrupted."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupted: list[str] = []
        self._audio_s: dict[str, float] = {}

    def push(self, chunk: SpeechChunk, turn_id: str) -> None:
        super().push(chunk, turn_id)
        self._audio_s[turn_id] = self._audio_s.get(turn_id, 0.0) + chunk.samples.size / chunk.sample_rate_hz

    def playing(self, turn_id: str) -> bool:
        started = self.first_sample_at(turn_id, 0)
        heard = time.perf_counter() - started if started else 0.0
        return turn_id not in self.interrupted and heard < self._audio_s.get(turn_id, 0.0)

    def interrupt(self, turn_id: str) -> None:
        self.interrupted.append(turn_id)


def realtime(audio: np.ndarray) -> Iterator[np.ndarray]:
    from emoloop.client.cli import file_blocks

    return file_blocks(audio, realtime=True)


def test_speaking_over_an_answer_cancels_it(tmp_path: Path, port: int) -> None:
    """The user starts again 1 s after the endpoint (time for a first chunk even on a loaded CPU), mid-answer."""
    audio = np.concatenate(
        [silence(0.3), speech("Please tell me everything."), silence(1.0), speech("No wait, stop, stop.")]
    )
    long_answer = " ".join(["This answer goes on and on, phrase after phrase, for a long time."] * 30)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stubs = Stubs.of(channel, channel, channel)
        sink = PlayingSink()
        lines: list[str] = []
        conversation = Conversation(
            stubs, replies_from([long_answer, "Okay."]), sink, log=TurnLog(tmp_path / "t.csv"), report=lines.append
        )
        converse(conversation, SerStream(stubs.ser, interim=True), realtime(audio), barge_in=True)
        records = conversation.records
    assert "barge-in: the user spoke; the answer was stopped" in lines
    assert sink.interrupted == [records[0].turn_id]  # once, though the user spoke on for a while
    assert len(records) == 2 and records[1].text == "Okay."


def test_when_the_ser_service_dies_mid_stream_the_loop_says_so_and_recovers_when_it_returns(
    tmp_path: Path, port: int
) -> None:
    checkpoint = save_tiny_checkpoint(tmp_path)
    ser_port = free_port()
    command = [sys.executable, "-m", "emoloop.services.ser", "--port", str(ser_port), "--checkpoint", str(checkpoint)]
    ser = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    audio = np.concatenate(
        [silence(0.3), speech("The first thing I said."), silence(6.0), speech("And the second thing."), silence(0.6)]
    )
    lines: list[str] = []
    local = grpc.insecure_channel(f"127.0.0.1:{port}")

    def reconnect(timeout_s: float = 2.0) -> Stubs:
        return Stubs.of(connect("ser", f"127.0.0.1:{ser_port}", timeout_s=timeout_s), local, local)

    def outage() -> None:  # the SER service is killed after the first answer and comes back 2 s later
        while not any(line.startswith("latency") for line in lines):
            time.sleep(0.05)
        ser.kill()
        ser.wait()
        time.sleep(2.0)
        restarted.append(subprocess.Popen(command, stderr=subprocess.DEVNULL))

    restarted: list[subprocess.Popen] = []
    killer = threading.Thread(target=outage, daemon=True)
    try:
        conversation = Conversation(reconnect(60), replies_from(["One.", "Two."]), FileSink(), report=lines.append)
        killer.start()
        keep_conversing(conversation, reconnect, realtime(audio), barge_in=False, backoff_s=(0.5,))
    finally:
        if killer.is_alive():
            killer.join(30)
        for process in [ser, *restarted]:
            process.kill()
        local.close()
    assert [r.text for r in conversation.records] == ["One.", "Two."]
    failed = [line for line in lines if line.startswith("the ser service failed")]
    assert failed and failed[0].endswith("; reconnecting")
    assert "reconnected; listening again" in lines
