"""Voice quality of acted emotions: each effect does what acting.toml says, at the speech's loudness."""

from __future__ import annotations

import numpy as np
import pytest

from emoloop.models.emotions import EMOTIONS
from emoloop.training import acting

RATE = acting.SAMPLE_RATE_HZ


def harmonic_tone(f0: float = 150.0, seconds: float = 1.0) -> np.ndarray:
    """A voiced-like tone: harmonics falling 6 dB/octave, with a 4 Hz amplitude contour like syllables."""
    t = np.arange(int(seconds * RATE)) / RATE
    tone = sum(np.sin(2 * np.pi * f0 * h * t) / h for h in range(1, 40) if f0 * h < RATE / 2)
    return (0.3 * tone * (0.55 + 0.45 * np.sin(2 * np.pi * 4 * t))).astype(np.float64)


def centroid_hz(audio: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / RATE)
    return float(np.sum(freqs * power) / np.sum(power))


def band_power(audio: np.ndarray, low: float, high: float) -> float:
    power = np.abs(np.fft.rfft(audio)) ** 2
    freqs = np.fft.rfftfreq(audio.size, 1 / RATE)
    return float(power[(freqs >= low) & (freqs < high)].sum())


@pytest.mark.parametrize("db_per_octave", [-3.0, 3.0])
def test_tilt_moves_energy_up_or_down_the_spectrum_at_the_same_loudness(db_per_octave):
    tone = harmonic_tone()
    tilted = acting.tilt(tone, db_per_octave)

    assert np.sign(centroid_hz(tilted) - centroid_hz(tone)) == np.sign(db_per_octave)
    assert acting.rms(tilted) == pytest.approx(acting.rms(tone), rel=1e-6)
    ratio_db = 10 * np.log10(band_power(tilted, 3800, 4200) / band_power(tone, 3800, 4200))
    low_db = 10 * np.log10(band_power(tilted, 100, 400) / band_power(tone, 100, 400))
    assert ratio_db - low_db == pytest.approx(db_per_octave * np.log2(4000 / 500), abs=0.5)


def test_no_tilt_leaves_the_clip_unchanged():
    tone = harmonic_tone()
    np.testing.assert_allclose(acting.tilt(tone, 0.0), tone, atol=1e-9)


def test_breath_is_high_frequency_noise_that_follows_the_speech_and_is_silent_in_silence():
    tone = np.concatenate([harmonic_tone(seconds=0.5), np.zeros(RATE // 2)])
    breathy = acting.breathe(tone, 0.1, np.random.default_rng(0))
    added = breathy - tone

    assert acting.rms(added) == pytest.approx(0.1 * acting.rms(tone), rel=0.01)
    assert band_power(added, 0, 1000) < 0.01 * band_power(added, 1500, 8000)
    assert np.abs(added[-RATE // 4 :]).max() < 1e-3 * np.abs(added).max()


def test_tremor_modulates_the_pitch_by_the_requested_semitones():
    t = np.arange(RATE) / RATE
    sine = np.sin(2 * np.pi * 200.0 * t)
    trembling = acting.tremble(sine, 0.6, np.random.default_rng(1))
    analytic = np.fft.ifft(np.fft.fft(trembling) * np.r_[1, 2 * np.ones(RATE // 2 - 1), 1, np.zeros(RATE // 2 - 1)])
    inst_hz = np.diff(np.unwrap(np.angle(analytic)))[2000:-2000] * RATE / (2 * np.pi)
    semitones = 12 * np.log2(inst_hz / 200.0)

    assert semitones.max() == pytest.approx(0.6, abs=0.1)
    assert semitones.min() == pytest.approx(-0.6, abs=0.1)


def test_harshness_adds_odd_harmonics_to_a_pure_tone_at_the_same_loudness():
    t = np.arange(RATE) / RATE
    sine = 0.5 * np.sin(2 * np.pi * 200.0 * t)
    harsh = acting.harden(sine, 0.6)

    assert band_power(harsh, 590, 610) > 1e-3 * band_power(harsh, 190, 210)
    assert band_power(sine, 590, 610) < 1e-9 * band_power(sine, 190, 210)
    assert acting.rms(harsh) == pytest.approx(acting.rms(sine), rel=1e-6)


def test_takes_scatter_around_intensity_times_the_table_entry():
    rng = np.random.default_rng(2)
    entry = acting.load_table()[0]["angry"]
    takes = [acting.vary("angry", 1.2, rng) for _ in range(400)]

    assert np.mean([q.tilt_db_per_octave for q in takes]) == pytest.approx(1.2 * entry.tilt_db_per_octave, abs=0.15)
    assert all(0 <= q.harshness <= 1 and q.breath_ratio >= 0 and q.tremor_semitones >= 0 for q in takes)


def test_the_shipped_table_covers_every_emotion_and_neutral_is_plain():
    entries, variation = acting.load_table()
    assert set(entries) == set(EMOTIONS)
    assert entries["neutral"] == acting.VoiceQuality(0.0, 0.0, 0.0, 0.0)
    assert variation.tilt_db_per_octave > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: t.pop("sad"), r"lacks \[sad\]"),
        (lambda t: t["angry"].pop("harshness"), r"\[angry\] must have exactly"),
        (lambda t: t["calm"].update(breath_ratio=-0.1), r"\[calm\]: only tilt"),
        (lambda t: t["happy"].update(tilt_db_per_octave="up"), r"\[happy\]: every value must be a number"),
        (lambda t: t.update(bored={}), "unknown section"),
        (lambda t: t["angry"].update(harshness=1.5), "harshness"),
    ],
)
def test_a_bad_table_is_rejected_naming_what_is_wrong(change, message):
    import tomllib

    table = tomllib.loads(acting.TABLE.read_text())
    change(table)
    with pytest.raises(ValueError, match=message):
        acting.parse_table(table)
