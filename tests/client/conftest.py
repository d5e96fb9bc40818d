"""JACK fixtures: a real PortAudio path without a sound card.

jackd's "dummy" driver runs a JACK graph on a real-time clock with no hardware. The tests open PortAudio
streams on the JACK host API and connect the speaker's output port to the microphone's input port, so audio
played comes back with exact real-time timing. Each server has its own name (`jackd -n`), so a developer's
own JACK server is never touched; PortAudio connects to the server named by $JACK_DEFAULT_SERVER when it
initialises, so `JackServer.activate` sets that and re-initialises PortAudio (`audio.rescan`).
The tests skip, saying why, only when jackd (or PortAudio) is not there: `.ci/audio-setup.sh` installs both.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from emoloop.client import audio

START_TIMEOUT_S = 10.0


@dataclass
class JackServer:
    """A running `jackd -d dummy` at one sample rate, with helpers to wire its ports."""

    name: str
    sample_rate_hz: int
    period: int
    process: subprocess.Popen[bytes]

    def _run(self, *command: str) -> str:
        return subprocess.run(
            [command[0], "-s", self.name, *command[1:]], check=True, capture_output=True, text=True, timeout=5
        ).stdout

    def ports(self) -> list[str]:
        return self._run("jack_lsp").split()

    def loopback(self) -> None:
        """Connect every PortAudio output port to every PortAudio input port (open the streams first)."""
        ports = [p for p in self.ports() if p.startswith("PortAudio")]
        outputs = [p for p in ports if ":out_" in p]
        inputs = [p for p in ports if ":in_" in p]
        assert outputs and inputs, f"no PortAudio ports to connect among {self.ports()}"
        for source in outputs:
            for destination in inputs:
                self._run("jack_connect", source, destination)

    def activate(self) -> None:
        """Make PortAudio use this server (no stream may be open)."""
        os.environ["JACK_DEFAULT_SERVER"] = self.name
        audio.rescan()
        if not any(d.host_api.startswith("JACK") for d in audio.list_devices()):
            pytest.skip("PortAudio was built without JACK support, so the loopback tests cannot run")


def _start(name: str, sample_rate_hz: int, period: int, log: Path) -> JackServer:
    if shutil.which("jackd") is None or shutil.which("jack_lsp") is None:
        pytest.skip("jackd is not installed (run .ci/audio-setup.sh: Debian packages jackd2 libportaudio2)")
    try:
        audio.list_devices()
    except RuntimeError as error:
        pytest.skip(str(error))
    command = ["jackd", "-n", name, "--no-realtime", "-d", "dummy", "-r", str(sample_rate_hz), "-p", str(period)]
    with log.open("wb") as out:
        process = subprocess.Popen([*command, "-C", "1", "-P", "1"], stdout=out, stderr=subprocess.STDOUT)
    server = JackServer(name, sample_rate_hz, period, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if "system:playback_1" in server.ports():
                return server
        except subprocess.CalledProcessError:
            pass
        time.sleep(0.1)
    _stop(server)
    pytest.skip(f"jackd could not be started ({' '.join(command)}): {log.read_text(errors='replace')[-500:]}")


def _stop(server: JackServer) -> None:
    if os.environ.get("JACK_DEFAULT_SERVER") == server.name:  # let PortAudio's JACK client go first
        del os.environ["JACK_DEFAULT_SERVER"]
        audio.rescan()
    server.process.terminate()  # by its own PID, never by name
    try:
        server.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def _no_jack_autostart() -> None:
    """A JACK client (jack_lsp, PortAudio) would otherwise start a server of its own when ours is not running."""
    os.environ["JACK_NO_START_SERVER"] = "1"


@pytest.fixture(scope="session")
def jack_16k(_no_jack_autostart: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JackServer]:
    """A JACK server at 16 kHz (the loop's rate), 20 ms periods."""
    server = _start(f"emoloop-test-{os.getpid()}-16k", 16_000, 320, tmp_path_factory.mktemp("jack") / "16k.log")
    yield server
    _stop(server)


@pytest.fixture(scope="session")
def jack_48k(_no_jack_autostart: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JackServer]:
    """A JACK server at 48 kHz, so the microphone has to resample to 16 kHz."""
    server = _start(f"emoloop-test-{os.getpid()}-48k", 48_000, 960, tmp_path_factory.mktemp("jack") / "48k.log")
    yield server
    _stop(server)


@pytest.fixture
def jack(jack_16k: JackServer) -> JackServer:
    jack_16k.activate()
    return jack_16k


@pytest.fixture
def jack48(jack_48k: JackServer) -> JackServer:
    jack_48k.activate()
    return jack_48k
