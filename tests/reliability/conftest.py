"""Shared fixtures for the reliability suite: all three services (in-process or as a subprocess) and probes.

The in-process server hosts every service on one port with the small untrained SER checkpoint and the espeak
engine, so the suite specifies behaviour under load, faults and bad input without the heavy models. The
subprocess form exists for what only a separate process shows: its resident memory, and SIGKILL.
"""

from __future__ import annotations

import contextlib
import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import GeneratorType

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import free_port
from emoloop.client.connect import SERVICES, connect
from emoloop.services.policy.servicer import default_servicer
from emoloop.services.ser.servicer import SerServicer
from emoloop.services.server import RunningServer
from emoloop.services.synthesis.servicer import SynthesisServicer
from emoloop.v1 import common_pb2, policy_pb2, policy_pb2_grpc, ser_pb2_grpc, synthesis_pb2, synthesis_pb2_grpc
from tests.conftest import started
from tests.models.test_ser import save_tiny_checkpoint

REPO = Path(__file__).resolve().parents[2]
MAX_STREAM_S = 5.0
"""The SER servicer's stream limit here: small, so that an endless stream is cut off within the suite's time."""
CALL_TIMEOUT_S = 30.0
"""Every call has a deadline: a hang fails the test instead of stalling the suite."""
EMOTION_FIELDS = ("neutral", "calm", "happy", "sad", "angry", "fearful")

BAD_INPUTS = {"count": 0}
"""How many bad inputs the suite sent; reported in the terminal summary."""


@dataclass
class Stubs:
    """One channel to the in-process server and a stub per service."""

    channel: grpc.Channel
    running: RunningServer
    ser: ser_pb2_grpc.EmotionRecognitionServiceStub
    policy: policy_pb2_grpc.PolicyServiceStub
    synthesis: synthesis_pb2_grpc.SynthesisServiceStub

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"


@pytest.fixture(scope="session")
def ser_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("reliability-ser"))


@pytest.fixture(scope="session")
def stubs(ser_checkpoint: Path) -> Iterator[Stubs]:
    """All three services in one in-process server, shared by the whole suite."""
    servicers = (
        SerServicer(ser_checkpoint, max_stream_s=MAX_STREAM_S),
        default_servicer(),
        SynthesisServicer(engines=["espeak"], default_engine="espeak"),
    )
    with started(*servicers) as running, grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield Stubs(
            channel,
            running,
            ser_pb2_grpc.EmotionRecognitionServiceStub(channel),
            policy_pb2_grpc.PolicyServiceStub(channel),
            synthesis_pb2_grpc.SynthesisServiceStub(channel),
        )


def health_status(channel: grpc.Channel, service: str = "") -> str:
    """The health status name of a service ("" is the whole server)."""
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def assert_all_serving(channel: grpc.Channel, services: tuple[str, ...] = tuple(SERVICES)) -> None:
    """After whatever a test did, the server and every service it hosts still answer SERVING."""
    for service in ["", *(SERVICES[name].grpc_name for name in services)]:
        assert health_status(channel, service) == "SERVING", service


def live_streams(module: str) -> int:
    """Stream handlers of a servicer module that have not finished: the streams it still holds state for.

    A streaming handler is a generator; grpc closes it when the call ends, however it ends, and its frame
    (with the stream's features, model window, engine iterator) goes with it. A thread count would not show
    this: the worker pool keeps its idle threads.
    """
    suffix = f"{os.sep}services{os.sep}{module}{os.sep}servicer.py"
    return sum(
        1
        for obj in gc.get_objects()
        if type(obj) is GeneratorType and obj.gi_frame is not None and obj.gi_code.co_filename.endswith(suffix)
    )


def wait_until(condition: object, timeout_s: float = 10.0) -> bool:
    """Poll a callable until it returns true or the time is up; returns its last answer."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.05)
    return bool(condition())  # type: ignore[operator]


# --- requests -------------------------------------------------------------------------------------------------


def scores(**values: float) -> common_pb2.EmotionScores:
    return common_pb2.EmotionScores(**values)


def statistics(emotion: str = "angry", confidence: float = 0.8) -> common_pb2.EmotionStatistics:
    """Valid frame statistics dominated by one emotion, as the SER service would send them."""
    mean = {name: 0.04 for name in EMOTION_FIELDS} | {emotion: 0.8}
    return common_pb2.EmotionStatistics(
        mean=scores(**mean), max=scores(**mean), std=scores(), confidence=confidence, frame_count=100
    )


def observation(emotion: str, turn_id: str) -> policy_pb2.StreamingDecideRequest:
    return policy_pb2.StreamingDecideRequest(
        observation=policy_pb2.TurnObservation(statistics=statistics(emotion), turn_id=turn_id)
    )


def synthesis_stream(
    config: synthesis_pb2.SynthesisConfig, *pieces: str
) -> Iterator[synthesis_pb2.StreamingSynthesizeRequest]:
    yield synthesis_pb2.StreamingSynthesizeRequest(config=config)
    for piece in pieces:
        yield synthesis_pb2.StreamingSynthesizeRequest(text=piece)


def chunk_samples(response: synthesis_pb2.StreamingSynthesizeResponse) -> int:
    """Samples in one synthesis chunk, whatever its encoding."""
    width = 4 if response.audio_format.encoding == common_pb2.AUDIO_ENCODING_FLOAT32 else 2
    return len(response.chunk.audio) // width


def check_synthesis_stream(responses: list[synthesis_pb2.StreamingSynthesizeResponse]) -> int:
    """Assert a complete, ordered synthesis stream; returns its length in samples."""
    assert [r.chunk.chunk_index for r in responses] == list(range(len(responses)))
    assert [r.is_final for r in responses] == [False] * (len(responses) - 1) + [True]
    return sum(chunk_samples(r) for r in responses)


# --- subprocess services --------------------------------------------------------------------------------------


@dataclass
class ServiceProcess:
    """A service run as its own process (python -m emoloop.services.<name>) on a fixed port."""

    name: str
    port: int
    args: list[str]
    process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> grpc.Channel:
        """Start the process and return a channel once it answers SERVING."""
        command = [sys.executable, "-m", f"emoloop.services.{self.name}", "--port", str(self.port), *self.args]
        env = {**os.environ, "EMOLOOP_LOG_LEVEL": "WARNING", "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            return connect(self.name, self.address, timeout_s)
        except Exception:
            self.stop()
            raise

    def rss_mb(self) -> float:
        """Resident memory of the process now, from /proc."""
        assert self.process is not None
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS in /proc status")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to close its streams."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@contextlib.contextmanager
def service_process(name: str, *args: str) -> Iterator[tuple[ServiceProcess, grpc.Channel]]:
    """A started service subprocess and a channel to it; stopped on exit."""
    service = ServiceProcess(name, free_port(), list(args))
    channel = service.start()
    try:
        yield service, channel
    finally:
        channel.close()
        service.stop()


ESPEAK_ARGS = ("--engines", "espeak", "--default-engine", "espeak")


@pytest.fixture(scope="session")
def synthesis_process() -> Iterator[tuple[ServiceProcess, grpc.Channel]]:
    """The synthesis service (espeak only) as a subprocess, shared by the memory tests."""
    with service_process("synthesis", *ESPEAK_ARGS) as running:
        yield running


class RssSampler:
    """Samples a process's RSS on a thread, to catch the peak between two reads."""

    def __init__(self, service: ServiceProcess, period_s: float = 0.05) -> None:
        self._service, self._period = service, period_s
        self.peak_mb = service.rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._period):
            self.peak_mb = max(self.peak_mb, self._service.rss_mb())

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def silence_bytes(seconds: float) -> bytes:
    return np.zeros(int(seconds * 16000), "<i2").tobytes()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if BAD_INPUTS["count"]:
        terminalreporter.write_line(f"reliability: {BAD_INPUTS['count']} bad inputs tried")
