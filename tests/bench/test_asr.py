"""The benchmark's offline recogniser: WER scoring, and that it understands clear synthetic speech."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from bench.asr import PART_PACKAGES, Recognizer, normalise, to_whisper_rate, wer, word_edits
from emoloop.models.tts import load_engine

CLEAR = "I would like a cup of tea with milk and no sugar."


def test_normalise_drops_case_punctuation_and_hyphens() -> None:
    assert normalise("Don't stop — well-known, OK?") == ["dont", "stop", "well", "known", "ok"]


def test_word_edits_count_substitutions_deletions_and_insertions() -> None:
    assert word_edits(["a", "b", "c", "d"], ["a", "x", "c", "d", "e"]) == 2
    assert word_edits([], ["a", "b"]) == 2
    assert wer("the cat sat", "The cat sat.") == 0.0
    assert wer("the cat sat on the mat", "the cat sat") == 0.5


def test_resampling_to_16_khz_keeps_duration() -> None:
    one_second = np.zeros(22050, np.float32)
    assert to_whisper_rate(one_second, 22050).size == 16000


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    """One Whisper load for the module; skipped where the bench extra is not installed."""
    missing = [p for p in ("faster_whisper", *PART_PACKAGES) if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"recogniser packages not installed: {', '.join(missing)} (pip install -e '.[bench]')")
    return Recognizer()


@pytest.mark.parametrize("engine", ["espeak", "piper"])
def test_whisper_transcribes_clear_synthetic_speech(engine: str, recognizer: Recognizer) -> None:
    chunks = list(load_engine(engine).synthesize(CLEAR, "neutral"))
    audio = np.concatenate([chunk.samples for chunk in chunks])
    transcript = recognizer.transcribe(audio, chunks[0].sample_rate_hz)
    assert wer(CLEAR, transcript) < 0.3, transcript
