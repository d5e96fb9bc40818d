"""Speaker adaptation for SER: judge a voice against itself, not against the voices the model was trained on.

Pitch level, loudness and timbre are mostly the speaker's and only partly the emotion's: a model trained on
a few dozen voices hears a low, dark voice as sad or calm whatever it feels. So before the global
normaliser, each feature column is shifted by how far this speaker's running mean lies from the training
voices' mean (`SpeakerReference.mean`; for F0 the mean ln F0 of voiced frames, and only voiced frames move).
The speaker mean is shrunk towards the reference with a prior worth `prior_frames` frames, so one short
utterance moves the features only part of the way and a session of many turns moves them almost all of it:

    offset = sum(x - reference) / (frames + prior_frames)        per column

Training draws the statistics from the clip itself plus a random number of the same speaker's other clips
(any emotion), so the model knows the whole range from a cold start to a long session. A speaker who stays
angry for a whole session pulls their own baseline up: the shrinkage limits this, it does not remove it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from emoloop.models.features import F0_COLUMN, voiced_frames


@dataclass(frozen=True)
class SpeakerReference:
    """The training voices' mean feature row, and how many frames the prior is worth; stored with the model."""

    mean: np.ndarray  # [F]; the F0 entry is the mean ln F0 of voiced frames
    prior_frames: float

    def __post_init__(self) -> None:
        if self.mean.ndim != 1 or self.mean.size <= F0_COLUMN:
            raise ValueError(f"speaker_adaptation.mean: expected a row of more than {F0_COLUMN} numbers")
        if not np.all(np.isfinite(self.mean)):
            raise ValueError("speaker_adaptation.mean: must be finite")
        if not self.prior_frames > 0:
            raise ValueError("speaker_adaptation.prior_frames: must be > 0")

    @classmethod
    def fit(cls, arrays: list[np.ndarray], prior_frames: float) -> SpeakerReference:
        """The mean row of raw feature arrays [T, F] (F0 over voiced frames only)."""
        stats = SpeakerStatistics.of(arrays)
        return cls(stats.mean(), prior_frames)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean.tolist(), "prior_frames": self.prior_frames}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpeakerReference:
        return cls(np.asarray(data["mean"], dtype=np.float64), float(data["prior_frames"]))


class SpeakerStatistics:
    """Running per-column sums of one speaker's raw feature rows (F0 over voiced frames)."""

    def __init__(self, n_features: int) -> None:
        self.sums = np.zeros(n_features, dtype=np.float64)
        self.frames = 0
        self.voiced = 0

    @classmethod
    def of(cls, arrays: list[np.ndarray]) -> SpeakerStatistics:
        stats = cls(arrays[0].shape[1])
        for rows in arrays:
            stats.update(rows)
        return stats

    def update(self, rows: np.ndarray) -> None:
        voiced = voiced_frames(rows)
        self.sums += rows.sum(axis=0, dtype=np.float64)  # unvoiced F0 entries are 0 and add nothing
        self.frames += len(rows)
        self.voiced += int(voiced.sum())

    def merged(self, other: SpeakerStatistics) -> SpeakerStatistics:
        out = SpeakerStatistics(self.sums.size)
        out.sums = self.sums + other.sums
        out.frames, out.voiced = self.frames + other.frames, self.voiced + other.voiced
        return out

    def counts(self) -> np.ndarray:
        counts = np.full(self.sums.size, float(self.frames))
        counts[F0_COLUMN] = self.voiced
        return counts

    def mean(self) -> np.ndarray:
        """The mean row (columns with no frames yet are 0)."""
        return self.sums / np.maximum(self.counts(), 1)

    def with_mean(self, mean: np.ndarray) -> SpeakerStatistics:
        """The same counts with another mean row (a voice change applied to the mean, in training)."""
        out = SpeakerStatistics(self.sums.size)
        out.frames, out.voiced = self.frames, self.voiced
        out.sums = np.asarray(mean, dtype=np.float64) * self.counts()
        return out

    def offset(self, reference: SpeakerReference) -> np.ndarray:
        """How far to shift each column: the shrunk distance of this speaker's mean from the reference."""
        counts = self.counts()
        return (self.sums - counts * reference.mean) / (counts + reference.prior_frames)

    def apply(self, rows: np.ndarray, reference: SpeakerReference) -> np.ndarray:
        """Raw rows shifted towards the reference voice (unvoiced frames keep F0 = 0)."""
        offset = self.offset(reference)
        out = (rows - offset).astype(np.float32)
        out[~voiced_frames(rows), F0_COLUMN] = 0.0
        return out
