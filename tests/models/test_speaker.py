"""Speaker adaptation: each voice is judged against its own running mean, shrunk towards the training voices'."""

from __future__ import annotations

import numpy as np
import pytest

from emoloop.models.features import F0_COLUMN
from emoloop.models.speaker import SpeakerReference, SpeakerStatistics

REFERENCE = SpeakerReference(np.where(np.arange(82) == F0_COLUMN, 5.0, -5.0), prior_frames=100.0)


def voice(n_frames: int, level: float, f0: float = 5.0, seed: int = 0) -> np.ndarray:
    """Rows around `level` in every column but F0, which is `f0` (ln Hz) on every other frame and 0 between."""
    rows = np.random.default_rng(seed).normal(level, 1.0, (n_frames, 82)).astype(np.float32)
    rows[:, F0_COLUMN] = np.where(np.arange(n_frames) % 2 == 0, f0, 0.0)
    return rows


def test_a_voice_at_the_reference_is_left_where_it_is() -> None:
    rows = voice(400, level=-5.0, f0=5.0)
    rows[:, :F0_COLUMN] -= rows[:, :F0_COLUMN].mean(axis=0) + 5.0  # exactly the reference mean in every column
    rows[:, F0_COLUMN + 1 :] -= rows[:, F0_COLUMN + 1 :].mean(axis=0) + 5.0

    adapted = SpeakerStatistics.of([rows]).apply(rows, REFERENCE)

    np.testing.assert_allclose(adapted, rows, atol=1e-4)


def test_the_shift_grows_with_the_evidence_towards_the_whole_distance() -> None:
    """offset = distance * frames / (frames + prior): a short utterance moves part of the way, a session nearly all."""
    shifts = []
    for n_frames in (100, 900, 9900):
        rows = voice(n_frames, level=-3.0)
        stats = SpeakerStatistics.of([rows])
        distance = rows[:, 0].mean() - REFERENCE.mean[0]
        shifts.append(float(stats.offset(REFERENCE)[0] / distance))
    np.testing.assert_allclose(shifts, [0.5, 0.9, 0.99], atol=1e-6)


def test_pitch_is_averaged_and_moved_on_voiced_frames_only() -> None:
    rows = voice(200, level=-5.0, f0=5.5)  # 100 voiced frames at ln F0 5.5; the reference's is 5.0

    adapted = SpeakerStatistics.of([rows]).apply(rows, REFERENCE)

    assert np.all(adapted[1::2, F0_COLUMN] == 0.0)  # unvoiced stays unvoiced
    expected = 5.5 - (5.5 - 5.0) * 100 / (100 + 100)  # mean of voiced frames only, shrunk with 100 voiced frames
    np.testing.assert_allclose(adapted[0::2, F0_COLUMN], expected, atol=1e-5)


def test_statistics_merge_like_one_long_recording() -> None:
    a, b = voice(120, -4.0, seed=1), voice(80, -6.0, seed=2)

    merged = SpeakerStatistics.of([a]).merged(SpeakerStatistics.of([b]))

    whole = SpeakerStatistics.of([np.concatenate([a, b])])
    np.testing.assert_allclose(merged.offset(REFERENCE), whole.offset(REFERENCE))


def test_no_speech_heard_yet_means_no_shift() -> None:
    rows = voice(50, level=0.0)
    np.testing.assert_array_equal(SpeakerStatistics(82).apply(rows, REFERENCE), rows)


def test_a_reference_round_trips_and_a_bad_one_is_refused_naming_the_field() -> None:
    assert np.array_equal(SpeakerReference.from_dict(REFERENCE.to_dict()).mean, REFERENCE.mean)
    with pytest.raises(ValueError, match=r"speaker_adaptation\.prior_frames"):
        SpeakerReference(np.zeros(82), prior_frames=0.0)
    with pytest.raises(ValueError, match=r"speaker_adaptation\.mean"):
        SpeakerReference(np.full(82, np.nan), prior_frames=10.0)
    with pytest.raises(ValueError, match=r"speaker_adaptation\.mean"):
        SpeakerReference(np.zeros(10), prior_frames=10.0)
