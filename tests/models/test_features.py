"""Behaviour of the streaming FeatureExtractor, its config and the feature normalizer."""

from __future__ import annotations

import numpy as np
import pytest

from emoloop.models.features import (
    ENERGY_COLUMN,
    F0_COLUMN,
    F0_TRACKERS,
    FeatureConfig,
    FeatureExtractor,
    FeatureNormalizer,
    f0_hz_from_column,
    mel_filterbank,
)

SR = 16000


def harmonic_tone(f0_hz: float, seconds: float = 1.0, amplitude: float = 0.3, seed: int = 0) -> np.ndarray:
    """A buzzy vowel-like tone: 10 harmonics falling 6 dB/octave, plus a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    tone = sum(np.sin(2 * np.pi * k * f0_hz * t) / k for k in range(1, 11))
    noise = 0.002 * np.random.default_rng(seed).standard_normal(t.size)
    return (amplitude * tone / np.abs(tone).max() + noise).astype(np.float32)


def speechlike_clip() -> np.ndarray:
    """Voiced glide, silence, a noise burst and a second tone: exercises every code path."""
    t = np.arange(int(0.8 * SR)) / SR
    glide = 0.3 * np.sin(2 * np.pi * np.cumsum(120 + 80 * t) / SR)
    rng = np.random.default_rng(1)
    return np.concatenate([glide, np.zeros(3000), 0.05 * rng.standard_normal(2500), harmonic_tone(220, 0.5)]).astype(
        np.float32
    )


def extractor_with(tracker: str) -> FeatureExtractor:
    return FeatureExtractor(FeatureConfig(f0_tracker=tracker))


def stream(extractor: FeatureExtractor, audio: np.ndarray, block: int) -> np.ndarray:
    rows = [extractor.push(audio[i : i + block]) for i in range(0, audio.size, block)]
    return np.concatenate([*rows, extractor.flush()])


def test_rows_are_float32_with_82_columns_one_per_10ms_hop() -> None:
    features = FeatureExtractor().extract(harmonic_tone(150, seconds=1.0))
    # 1 + ceil((16000 - 400) / 160) frames: the last one is the first to reach the final sample.
    assert features.shape == (99, 82)
    assert features.dtype == np.float32
    assert np.isfinite(features).all()


@pytest.mark.parametrize("tracker", F0_TRACKERS)
def test_short_and_empty_clips(tracker: str) -> None:
    extractor = extractor_with(tracker)
    assert extractor.extract(np.zeros(0, dtype=np.float32)).shape == (0, 82)
    assert extractor.extract(np.zeros(10, dtype=np.float32)).shape == (1, 82)
    assert extractor.extract(np.zeros(400, dtype=np.float32)).shape == (1, 82)
    assert extractor.extract(np.zeros(401, dtype=np.float32)).shape == (2, 82)


@pytest.mark.parametrize("tracker", F0_TRACKERS)
@pytest.mark.parametrize("block", [1, 100, 512, 1000, 4097])
def test_streaming_in_blocks_gives_the_same_rows_as_the_whole_clip(block: int, tracker: str) -> None:
    audio = speechlike_clip()
    extractor = extractor_with(tracker)
    whole = extractor.extract(audio)
    streamed = stream(extractor, audio, block)
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, rtol=0, atol=1e-4)


@pytest.mark.parametrize("tracker", F0_TRACKERS)
def test_flush_resets_so_the_extractor_can_be_reused(tracker: str) -> None:
    audio = speechlike_clip()
    extractor = extractor_with(tracker)
    first = stream(extractor, audio, 512)
    second = stream(extractor, audio, 512)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("tracker", F0_TRACKERS)
def test_the_buffers_stay_bounded_on_a_long_stream(tracker: str) -> None:
    extractor = extractor_with(tracker)
    block = harmonic_tone(150, seconds=512 / SR)
    for _ in range(2000):  # 64 s
        extractor.push(block)
        assert extractor._buffer.size < 2 * 1024
        if extractor._swift is not None:
            assert len(extractor._swift._held) < 24 and len(extractor._swift._ln_f0) < 16


def test_swift_f0_rows_wait_until_their_pitch_frame_is_final() -> None:
    """swift-f0 frames (256 samples) are final once 10 more exist: after 16 frames of audio, frames 0-5 are.
    Rows whose centre (t·160 + 200) is nearest one of those, t·160 + 200 < 5.5·256, are out: 8 rows."""
    audio = harmonic_tone(150, seconds=1.0)
    yin, swift = extractor_with("yin"), extractor_with("swift-f0")
    assert len(yin.push(audio[:4096])) == 23
    assert len(swift.push(audio[:4096])) == 8
    assert len(swift.flush()) == len(yin.flush()) + 23 - 8


@pytest.mark.parametrize("tracker", F0_TRACKERS)
@pytest.mark.parametrize("f0_hz", [150.0, 220.0])
def test_f0_of_a_harmonic_tone_is_within_2_percent(f0_hz: float, tracker: str) -> None:
    features = extractor_with(tracker).extract(harmonic_tone(f0_hz))
    f0 = f0_hz_from_column(features[:, F0_COLUMN])
    voiced = f0 > 0
    assert voiced.mean() > 0.95
    assert np.abs(f0[voiced] / f0_hz - 1).max() < 0.02


@pytest.mark.parametrize("tracker", F0_TRACKERS)
def test_silence_is_unvoiced_with_very_low_energy(tracker: str) -> None:
    features = extractor_with(tracker).extract(np.zeros(SR, dtype=np.float32))
    assert (features[:, F0_COLUMN] == 0).all()
    assert (features[:, ENERGY_COLUMN] < -90).all()


@pytest.mark.parametrize("tracker", F0_TRACKERS)
def test_white_noise_is_mostly_unvoiced(tracker: str) -> None:
    noise = (0.1 * np.random.default_rng(2).standard_normal(SR)).astype(np.float32)
    features = extractor_with(tracker).extract(noise)
    assert (features[:, F0_COLUMN] == 0).mean() > 0.9


@pytest.mark.parametrize("tracker", F0_TRACKERS)
def test_louder_input_gives_higher_energy_and_log_mel(tracker: str) -> None:
    extractor = extractor_with(tracker)
    quiet_audio = harmonic_tone(150, amplitude=0.05)
    quiet = extractor.extract(quiet_audio)
    loud = extractor.extract(quiet_audio * np.float32(10))
    # 10 × the amplitude is 100 × the power: +20 dB energy, +ln(100) in every log-mel band.
    np.testing.assert_allclose(loud[:, ENERGY_COLUMN] - quiet[:, ENERGY_COLUMN], 20.0, atol=0.01)
    np.testing.assert_allclose(loud[:, :80] - quiet[:, :80], np.log(100.0), atol=0.01)
    # Pitch does not follow loudness: within 0.01 in ln Hz, a sixth of a semitone (YIN is exactly scale-free).
    np.testing.assert_allclose(loud[:, F0_COLUMN], quiet[:, F0_COLUMN], atol=0.01)


def test_mel_filterbank_matches_librosa_htk_without_norm() -> None:
    librosa = pytest.importorskip("librosa")
    config = FeatureConfig()
    reference = librosa.filters.mel(
        sr=SR, n_fft=config.n_fft, n_mels=config.n_mels, fmin=config.fmin_hz, fmax=config.fmax_hz, htk=True, norm=None
    )
    np.testing.assert_allclose(mel_filterbank(config), reference, atol=1e-6)


def test_config_round_trips_through_a_dict() -> None:
    config = FeatureConfig(f0_max_hz=500.0)
    assert FeatureConfig.from_dict(config.to_dict()) == config


def test_a_checkpoint_with_a_different_config_is_refused_naming_the_field() -> None:
    stored = FeatureConfig.from_dict(FeatureConfig(hop_length=200).to_dict())
    with pytest.raises(ValueError, match="hop_length"):
        FeatureConfig().check_compatible(stored)
    FeatureConfig().check_compatible(FeatureConfig())


def test_a_stored_config_from_before_the_tracker_choice_reads_as_yin() -> None:
    stored = FeatureConfig(f0_tracker="swift-f0").to_dict()
    del stored["f0_tracker"]
    assert FeatureConfig.from_dict(stored).f0_tracker == "yin"


def test_an_unknown_f0_tracker_is_refused() -> None:
    with pytest.raises(ValueError, match="f0_tracker"):
        FeatureConfig(f0_tracker="crepe")


def test_unknown_config_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="n_bands"):
        FeatureConfig.from_dict({**FeatureConfig().to_dict(), "n_bands": 64})


@pytest.mark.parametrize(
    ("samples", "message"),
    [
        (np.array([0.0, np.nan, 0.0], dtype=np.float32), "NaN or infinite"),
        (np.array([0.0, np.inf], dtype=np.float32), "NaN or infinite"),
        (np.zeros(10, dtype=np.float64), "float32"),
        (np.zeros(10, dtype=np.int16), "float32"),
        (np.zeros((2, 10), dtype=np.float32), "1-D"),
        ([0.0, 0.1], "numpy array"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_message(samples: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FeatureExtractor().push(samples)  # type: ignore[arg-type]


def test_normalizer_gives_zero_mean_unit_std_and_round_trips() -> None:
    extractor = FeatureExtractor()
    clips = [extractor.extract(harmonic_tone(f, amplitude=a)) for f, a in [(120, 0.1), (200, 0.3), (300, 0.6)]]
    normalizer = FeatureNormalizer.fit(clips)
    everything = np.concatenate(clips).astype(np.float64)
    others = np.arange(82) != F0_COLUMN
    np.testing.assert_allclose(normalizer.mean[others], everything[:, others].mean(axis=0), atol=1e-6)
    np.testing.assert_allclose(normalizer.std[others], np.maximum(everything[:, others].std(axis=0), 1e-5), rtol=1e-6)
    normalized = normalizer.apply(everything)
    assert normalized.dtype == np.float32
    np.testing.assert_allclose(normalized[:, others].mean(axis=0), 0.0, atol=1e-4)

    restored = FeatureNormalizer.from_dict(normalizer.to_dict())
    np.testing.assert_array_equal(restored.apply(everything), normalized)


def test_pitch_is_normalised_over_voiced_frames_and_unvoiced_frames_stay_zero() -> None:
    """A semitone must stay visible: over all frames the 0/voiced switch would swamp it."""
    rows = np.zeros((400, 82))
    rows[:200, F0_COLUMN] = np.log(np.linspace(100.0, 200.0, 200))  # voiced, one octave; then 200 unvoiced frames
    normalizer = FeatureNormalizer.fit([rows[:100], rows[100:]])  # in two batches: the merge must be exact too

    voiced = rows[:200, F0_COLUMN]
    assert normalizer.count[F0_COLUMN] == 200 and normalizer.count[0] == 400
    assert normalizer.mean[F0_COLUMN] == pytest.approx(voiced.mean())
    assert normalizer.std[F0_COLUMN] == pytest.approx(voiced.std())
    normalized = normalizer.apply(rows)
    assert np.all(normalized[200:, F0_COLUMN] == 0.0)
    np.testing.assert_allclose(normalized[:200, F0_COLUMN].std(), 1.0, rtol=1e-5)


def test_an_unfitted_normalizer_refuses_to_apply() -> None:
    with pytest.raises(ValueError, match="not been fitted"):
        FeatureNormalizer().apply(np.zeros((3, 82), dtype=np.float32))
