"""`emoloop live` end to end, as a user runs it: a subprocess on JACK's dummy backend, talked to and listened to.

A second JACK client (a PortAudio stream in the test process, the "talker") plays a shipped sample into
emoloop's microphone port and records emoloop's speaker port; the three services run in the test process on
one free port. The test then checks the turn logged to the CSV, the answer heard on the speaker port, and
that Ctrl-C stops emoloop with exit code 0, leaving no process and no JACK port behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.signal import resample_poly

from emoloop.client.csvlog import read_log
from emoloop.client.emotions import EMOTIONS
from emoloop.client.wavio import read_wav
from emoloop.services.policy.servicer import default_servicer
from emoloop.services.ser.servicer import SerServicer
from emoloop.services.synthesis.servicer import SynthesisServicer
from tests.conftest import started

from .conftest import JackServer

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "samples" / "angry.wav"
REPLY = "I hear you, tell me more."
SILENCE = 1e-3
START_S = 60.0  # emoloop's start (imports, PortAudio, connecting) on a busy 2-core machine
TURN_S = 30.0  # from the end of the sample to the CSV line
STOP_S = 10.0  # from Ctrl-C to the exit


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, str]]:
    """The three services (the shipped SER model, espeak for a quick answer) and the environment naming them."""
    with started(
        SerServicer(), default_servicer(), SynthesisServicer(engines=["espeak"], default_engine="espeak")
    ) as running:
        address = f"127.0.0.1:{running.port}"
        yield {f"EMOLOOP_{name}_ADDRESS": address for name in ("SER", "POLICY", "SYNTHESIS")}


@pytest.fixture(scope="module")
def expected_emotion(services: dict[str, str]) -> str:
    """What `emoloop ser` says for the sample as a whole clip."""
    result = subprocess.run(
        [sys.executable, "-m", "emoloop.client.cli", "ser", "--json", str(SAMPLE)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **services},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["emotion"]


class Talker:
    """A JACK client that plays a clip on cue from its output port and records its input port from the start."""

    def __init__(self, sample_rate_hz: int, clip: np.ndarray, record_s: float = 60.0) -> None:
        import sounddevice as sd

        device = next(i for i, d in enumerate(sd.query_devices()) if d["name"] == "system")
        self.clip = clip
        self.recording = np.zeros(round(record_s * sample_rate_hz), np.float32)
        self.recorded = 0  # samples recorded so far
        self.played = -1  # samples of the clip played; -1 until cued
        self.clip_started_at = -1  # recording index at which the clip's first sample went out
        self.xruns = 0
        self.stream = sd.Stream(
            device=(device, device),
            samplerate=sample_rate_hz,
            channels=1,
            dtype="float32",
            callback=self._callback,
        )

    def _callback(self, indata: np.ndarray, outdata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        if status.input_overflow or status.output_underflow:
            self.xruns += 1
        count = min(frames, self.recording.size - self.recorded)
        self.recording[self.recorded : self.recorded + count] = indata[:count, 0]
        outdata[:] = 0.0
        if 0 <= self.played < self.clip.size:
            if self.played == 0:
                self.clip_started_at = self.recorded
            piece = self.clip[self.played : self.played + frames]
            outdata[: piece.size, 0] = piece
            self.played += piece.size
        self.recorded += count

    def say(self) -> None:
        self.played = 0

    @property
    def done_talking(self) -> bool:
        return self.played >= self.clip.size


def jack_ports(server: JackServer) -> set[str]:
    return set(server.ports())


def new_ports(server: JackServer, before: set[str], count: int) -> list[str]:
    """The PortAudio ports that were not there before, once there are `count` of them."""
    ports = sorted(p for p in jack_ports(server) - before if p.startswith("PortAudio"))
    return ports if len(ports) >= count else []


def processes_in_group(group: int) -> list[str]:
    """`pid command` of every live process whose process group is `group` (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
            if int(pgrp) == group and state != "Z":
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{entry.name} {command}")
        except (OSError, ValueError):
            continue  # the process went away while we looked
    return found


class Output:
    """Collects a pipe's lines on a thread so waits can have deadlines."""

    def __init__(self, pipe: Any) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(pipe,), daemon=True)
        self._thread.start()

    def _read(self, pipe: Any) -> None:
        for line in pipe:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        self._thread.join(timeout=5)
        return "\n".join(self.lines)


def wait_for(condition: Callable[[], Any], timeout_s: float, what: str, process: subprocess.Popen) -> Any:
    """Poll until condition() is truthy; fail naming `what` on timeout or when emoloop exits first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        if process.poll() is not None:
            pytest.fail(f"emoloop live exited with {process.returncode} while waiting for {what}")
        time.sleep(0.05)
    pytest.fail(f"no {what} within {timeout_s:g} s")


@pytest.mark.timeout(240)
@pytest.mark.parametrize("server_fixture", ["jack", "jack48"])
def test_live_answers_a_spoken_sample_on_the_speaker_logs_the_turn_and_stops_on_ctrl_c(
    server_fixture: str,
    request: pytest.FixtureRequest,
    services: dict[str, str],
    expected_emotion: str,
    tmp_path: Path,
) -> None:
    server: JackServer = request.getfixturevalue(server_fixture)  # activated: $JACK_DEFAULT_SERVER names it
    rate = server.sample_rate_hz
    clip, _ = read_wav(SAMPLE, 16_000)
    if rate != 16_000:
        clip = resample_poly(clip, rate, 16_000).astype(np.float32)  # the microphone has to resample it back
    log = tmp_path / "turns.csv"
    env = {**os.environ, **services, "PYTHONUNBUFFERED": "1"}
    assert env["JACK_DEFAULT_SERVER"] == server.name and env["JACK_NO_START_SERVER"] == "1"

    talker = Talker(rate, clip)
    talker.stream.start()
    try:
        before = jack_ports(server)
        command = [sys.executable, "-m", "emoloop.client.cli", "live", "--host-api", "JACK"]
        command += ["--input-device", "system", "--output-device", "system", "--engine", "espeak"]
        command += ["--text", REPLY, "--log", str(log)]
        process = subprocess.Popen(
            command,
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own process group, as a terminal's foreground job would be
            # Ctrl-C's default action, as a terminal's foreground job has it: a test run started in the background
            # by a non-interactive shell (nohup ... &) ignores SIGINT, and its children inherit that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        stdout, stderr = Output(process.stdout), Output(process.stderr)

        def said(prefix: str) -> Callable[[], bool]:
            return lambda: any(line.startswith(prefix) for line in stdout.lines)

        try:
            wait_for(said("listening on system"), START_S, "'listening on' line", process)
            assert f"({rate} Hz)" in next(line for line in stdout.lines if line.startswith("listening on"))
            emoloop_ports = wait_for(lambda: new_ports(server, before, 2), 5.0, "emoloop's JACK ports", process)
            microphone = [p for p in emoloop_ports if ":in_" in p]
            speaker = [p for p in emoloop_ports if ":out_" in p]
            assert len(microphone) == len(speaker) == 1, f"emoloop's ports: {emoloop_ports}"
            talker_ports = sorted(p for p in before if p.startswith("PortAudio"))
            talker_out = [p for p in talker_ports if ":out_" in p]
            talker_in = [p for p in talker_ports if ":in_" in p]
            assert len(talker_out) == len(talker_in) == 1, f"the talker's ports: {talker_ports}"
            server._run("jack_connect", talker_out[0], microphone[0])
            server._run("jack_connect", speaker[0], talker_in[0])

            talker.say()
            wait_for(lambda: talker.done_talking, 2 * clip.size / rate + 10, "end of the sample", process)
            rows = wait_for(lambda: log.exists() and read_log(log), TURN_S, "CSV line", process)
            wait_for(said("latency"), 5.0, "'latency' line", process)
            row = rows[0]
            answer_s = float(row["answer_ms"]) / 1000
            time.sleep(answer_s + 1.0)  # let the whole answer play
            sigint_at = time.monotonic()
            os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
            code = process.wait(timeout=STOP_S)
            stop_s = time.monotonic() - sigint_at
        except BaseException:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            print(f"emoloop stdout:\n{stdout.text()}\nemoloop stderr:\n{stderr.text()}")
            raise
    finally:
        talker.stream.stop()
        talker.stream.close()
    err = stderr.text()

    # The turn, in the CSV and on stdout.
    assert code == 0, err
    assert stop_s < STOP_S and "stopped" in err and "Traceback" not in err, err
    rows = read_log(log)
    assert len(rows) == 1, rows
    assert row["text"] == REPLY
    assert row["in_emotion"] == expected_emotion, (row, stdout.text())
    assert row["out_emotion"] in EMOTIONS
    assert 0 < float(row["latency_ms"]) < 5000
    assert f'answer   "{REPLY}"' in stdout.text() and "barge-in" not in stdout.text()

    # The answer, heard on emoloop's speaker port after the sample began, about as long as synthesis made it.
    heard = talker.recording[: talker.recorded]
    assert talker.clip_started_at >= 0
    loud = np.flatnonzero(np.abs(heard) > SILENCE)
    assert loud.size, "nothing was heard on emoloop's speaker port"
    user_done = talker.clip_started_at + np.flatnonzero(np.abs(clip) > SILENCE)[-1]
    felt_delay_s = (loud[0] - user_done) / rate  # the endpointer's trailing silence, then the latency
    assert 0 < felt_delay_s < 2.0, f"the answer began {felt_delay_s:.2f} s after the user's last sound"
    span_s = (loud[-1] - loud[0] + 1) / rate
    assert 0.8 * answer_s < span_s < answer_s + 0.25, f"heard {span_s:.2f} s of a {answer_s:.2f} s answer"
    assert np.sqrt(np.mean(heard[loud[0] : loud[-1] + 1] ** 2)) > 0.01  # speech, not a click

    # Ctrl-C left nothing behind: no process of its group, no JACK port.
    assert processes_in_group(process.pid) == []
    deadline = time.monotonic() + 5.0  # the JACK server drops a gone client's ports when it notices
    while set(emoloop_ports) & jack_ports(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not set(emoloop_ports) & jack_ports(server), "emoloop's JACK ports outlived it"
    print(
        f"{rate} Hz: heard {row['in_emotion']} (expected {expected_emotion}), answered {row['out_emotion']}; "
        f"latency {float(row['latency_ms']):.0f} ms, answer heard {felt_delay_s:.2f} s after the user's last sound; "
        f"answer {answer_s:.2f} s, heard {span_s:.2f} s; "
        f"Ctrl-C to exit {1000 * stop_s:.0f} ms; talker xruns {talker.xruns}"
    )
