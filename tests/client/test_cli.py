"""The `emoloop` command line: say, voices and status, against a running service or in-process (--local)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emoloop.client.wavio import read_wav
from emoloop.services.synthesis.servicer import SynthesisServicer
from tests.conftest import started


def emoloop(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emoloop.client.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def synthesis_port() -> Iterator[int]:
    with started(SynthesisServicer()) as running:
        yield running.port


def test_say_writes_a_wav_from_the_running_service(tmp_path: Path, synthesis_port: int) -> None:
    out = tmp_path / "calm.wav"
    result = emoloop(
        "say",
        "I understand, let me help you with that.",
        "--emotion",
        "calm",
        "--rate",
        "16000",
        "-o",
        str(out),
        env={"EMOLOOP_SYNTHESIS_PORT": str(synthesis_port)},
    )
    assert result.returncode == 0, result.stderr
    samples, rate = read_wav(out)
    assert rate == 16000 and 1.5 < samples.size / rate < 6
    assert "first chunk after" in result.stderr


def test_say_local_needs_no_service(tmp_path: Path) -> None:
    out = tmp_path / "happy.wav"
    result = emoloop("say", "What a lovely day.", "--emotion", "happy", "--engine", "espeak", "--local", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert read_wav(out)[0].size > 0


def test_voices_lists_the_default_engine_first_with_licences(synthesis_port: int) -> None:
    result = emoloop("voices", env={"EMOLOOP_SYNTHESIS_PORT": str(synthesis_port)})
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[1]
    assert first.startswith("piper") and "en_US-joe-medium" in first and "(default engine)" in first


def test_a_service_that_is_down_is_named_with_what_to_do() -> None:
    result = emoloop("say", "Hello.", "-o", "/dev/null", env={"EMOLOOP_SYNTHESIS_ADDRESS": "127.0.0.1:9"})
    assert result.returncode == 2
    assert "the synthesis service at 127.0.0.1:9 is not serving" in result.stderr
    assert "honcho start" in result.stderr


def test_an_unknown_emotion_is_refused_by_the_parser() -> None:
    result = emoloop("say", "Hello.", "--emotion", "bored", "-o", "/dev/null")
    assert result.returncode == 2 and "invalid choice: 'bored'" in result.stderr


@pytest.mark.parametrize("command", [[], ["say"], ["voices"], ["status"]])
def test_every_command_has_help(command: list[str]) -> None:
    result = emoloop(*command, "--help")
    assert result.returncode == 0 and "usage: emoloop" in result.stdout
