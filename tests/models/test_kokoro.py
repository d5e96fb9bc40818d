"""Kokoro engine behaviour. Most tests need the model installed by
`python -m emoloop.training.install_kokoro` (make kokoro) and are skipped without it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.signal import resample_poly

from emoloop.models.features import F0_COLUMN, FeatureExtractor, f0_hz_from_column
from emoloop.models.prosody import prosody_for
from emoloop.models.tts.kokoro import INSTALL_COMMAND, MANIFEST_FILE, KokoroEngine, edit_f0, install_dir

needs_kokoro = pytest.mark.skipif(
    not (install_dir() / MANIFEST_FILE).is_file(),
    reason=f"Kokoro is not installed in {install_dir()}; run `{INSTALL_COMMAND}` (make kokoro)",
)
SENTENCE = "I walked down to the river this morning and watched the boats."


@pytest.fixture(scope="module")
def engine() -> KokoroEngine:
    return KokoroEngine(seed=0)


def speak(engine: KokoroEngine, text: str, emotion: str = "neutral", voice: str | None = None) -> np.ndarray:
    return np.concatenate([chunk.samples for chunk in engine.synthesize(text, emotion, voice)])


def median_f0(samples: np.ndarray) -> float:
    """Median F0 of voiced frames, with the project's own YIN (16 kHz)."""
    features = FeatureExtractor().extract(resample_poly(samples, 2, 3).astype(np.float32))
    f0 = f0_hz_from_column(features[:, F0_COLUMN])
    return float(np.median(f0[f0 > 0]))


def test_missing_install_names_the_install_command(tmp_path):
    with pytest.raises(FileNotFoundError, match=INSTALL_COMMAND):
        KokoroEngine(tmp_path)


def test_f0_edit_moves_voiced_frames_and_keeps_unvoiced_ones():
    f0 = np.array([[8.0, 12.0, 180.0, 200.0, 220.0, 9.0]])
    edited = edit_f0(f0, prosody_for("happy"), np.random.default_rng(0))
    np.testing.assert_array_equal(edited[:, [0, 1, 5]], f0[:, [0, 1, 5]])
    semitones = 12 * np.log2(edited[0, 2:5] / 200.0)
    # happy: range x1.5 around the median (200 Hz), then +3 semitones
    np.testing.assert_allclose(semitones, 1.5 * 12 * np.log2(f0[0, 2:5] / 200.0) + 3.0, atol=1e-9)
    assert edit_f0(f0, prosody_for("neutral"), np.random.default_rng(0)) is f0


@needs_kokoro
def test_voices_are_english_24k_apache(engine):
    voices = engine.voices()
    assert {"af_heart", "bm_george"} <= {voice.name for voice in voices}
    assert {voice.language for voice in voices} == {"en-US", "en-GB"}
    assert all(v.engine == "kokoro" and v.sample_rate_hz == 24000 and v.license == "Apache-2.0" for v in voices)


@needs_kokoro
@pytest.mark.parametrize("voice", [None, "bm_george"])
def test_a_phrase_is_spoken(engine, voice):
    samples = speak(engine, "Good morning, how are you?", voice=voice)
    assert samples.dtype == np.float32
    assert 0.8 < samples.size / 24000 < 4.0
    assert np.sqrt(np.mean(samples**2)) > 0.01
    assert np.abs(samples).max() <= 1.0


@needs_kokoro
def test_happy_is_higher_and_faster_than_sad(engine):
    happy, sad = speak(engine, SENTENCE, "happy"), speak(engine, SENTENCE, "sad")
    # prosody.toml: happy +3 st, rate 1.1; sad -2.5 st, rate 0.8
    assert 12 * np.log2(median_f0(happy) / median_f0(sad)) > 3.0
    assert sad.size > 1.2 * happy.size


@needs_kokoro
def test_unknown_voice_raises(engine):
    with pytest.raises(ValueError, match="unknown kokoro voice"):
        engine.synthesize("Hello.", voice="nobody")


@needs_kokoro
def test_long_text_streams_phrase_by_phrase(engine):
    words = "Well, that went better than I expected. We should try it again tomorrow, if the weather holds."
    chunks = list(engine.synthesize(iter(word + " " for word in words.split())))
    assert [chunk.phrase_index for chunk in chunks] == list(range(len(chunks)))
    assert len(chunks) > 1
    for before, after in itertools.pairwise(chunks):
        assert after.start_s == pytest.approx(before.start_s + before.duration_s)
