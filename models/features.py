"""Streaming acoustic features for speech emotion recognition: 80 log-mel bands, F0 and energy.

One row per 10 ms frame (hop 160 samples at 16 kHz), 82 float32 columns:

* columns 0..79 — natural log of mel-filtered power spectrum (periodic Hann window of 400 samples,
  rFFT of 400, HTK mel scale without area normalisation), floored at 1e-10 so digital silence stays
  finite (ln 1e-10 ≈ -23.0);
* column 80 (`F0_COLUMN`) — natural log of F0 in Hz for voiced frames, exactly 0.0 for unvoiced
  frames (voiced values are ≥ about ln f0_min_hz ≈ 4.1, so 0 cannot be a pitch); decode with
  `f0_hz_from_column`;
* column 81 (`ENERGY_COLUMN`) — frame energy in dB re full scale, 10·log10(mean(x²) + 1e-10) over the
  same 400 samples (a full-scale sine is about -3 dB, digital silence -100 dB).

Frame t is the window [t·hop, t·hop + 400) of the stream; no centre padding. F0 comes from one of
two trackers, chosen by `FeatureConfig.f0_tracker` and stored with each checkpoint:

* "yin" — a per-frame YIN estimator whose analysis span is centred on the same point as the mel
  window, so each frame depends only on its own samples and rows leave `push` as soon as the window
  is complete;
* "swift-f0" — the swift-f0 ONNX pitch network (16 ms frames; each row takes the frame nearest its
  centre). Its frames are final only 10 frames (160 ms) later, so `push` holds rows back until their
  pitch is known.

Either way `push` block after block gives the rows that `extract` gives for the whole clip
(docs/f0-comparison.md compares the trackers). No torch is needed, so the module can run in a process
that has no torch loaded.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from .audio import check_mono_float32

N_MEL_COLUMNS = 80
F0_COLUMN = 80
ENERGY_COLUMN = 81
F0_TRACKERS = ("yin", "swift-f0")

_LOG_FLOOR = 1e-10
# Whole clips are computed this many frames at a time: ~6x faster than one huge batch.
_BATCH_FRAMES = 32


@dataclass(frozen=True)
class FeatureConfig:
    """Everything that changes the numbers a FeatureExtractor produces; stored beside a checkpoint."""

    sample_rate_hz: int = 16000
    n_fft: int = 400
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = N_MEL_COLUMNS
    fmin_hz: float = 0.0
    fmax_hz: float = 8000.0
    f0_min_hz: float = 60.0
    f0_max_hz: float = 600.0
    yin_threshold: float = 0.15
    voicing_threshold: float = 0.35
    voicing_min_energy_db: float = -60.0
    yin_lowpass_hz: float = 1000.0
    # A stored config without this key predates the choice and was made with YIN (see `from_dict`).
    f0_tracker: str = "yin"
    # swift-f0's confidence is calibrated so that a frame is voiced at 0.5 or more.
    swift_f0_confidence: float = 0.5

    def __post_init__(self) -> None:
        if self.f0_tracker not in F0_TRACKERS:
            raise ValueError(f"f0_tracker must be one of {', '.join(F0_TRACKERS)}, got {self.f0_tracker!r}")
        if not 0 < self.swift_f0_confidence < 1:
            raise ValueError("need 0 < swift_f0_confidence < 1")
        if self.f0_tracker == "swift-f0" and self.sample_rate_hz != 16000:
            raise ValueError("the swift-f0 tracker needs sample_rate_hz 16000, the rate its network was trained at")
        if self.n_mels != N_MEL_COLUMNS:
            raise ValueError(f"n_mels must be {N_MEL_COLUMNS}: the column layout depends on it")
        if self.win_length > self.n_fft:
            raise ValueError("win_length must not exceed n_fft")
        if not 0 <= self.fmin_hz < self.fmax_hz <= self.sample_rate_hz / 2:
            raise ValueError("need 0 <= fmin_hz < fmax_hz <= sample_rate_hz / 2")
        if not 0 < self.f0_min_hz < self.f0_max_hz < self.sample_rate_hz / 4:
            raise ValueError("need 0 < f0_min_hz < f0_max_hz < sample_rate_hz / 4")

    @property
    def n_features(self) -> int:
        return self.n_mels + 2

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureConfig:
        """Build from a stored dict; unknown keys are refused rather than silently dropped.

        Configs stored before `f0_tracker` existed were all made with YIN, whatever today's default is.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown FeatureConfig field(s): {', '.join(unknown)}")
        return cls(**{"f0_tracker": "yin", **data})

    def check_compatible(self, other: FeatureConfig) -> None:
        """Raise ValueError naming every field where `other` (e.g. a checkpoint's config) differs."""
        diffs = [
            f"{f.name}: {getattr(self, f.name)!r} != {getattr(other, f.name)!r}"
            for f in dataclasses.fields(self)
            if getattr(self, f.name) != getattr(other, f.name)
        ]
        if diffs:
            raise ValueError("feature config mismatch: " + "; ".join(diffs))


def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """HTK-scale triangular filters without normalisation, [n_mels, n_fft//2 + 1].

    Same weights as librosa.filters.mel(htk=True, norm=None) and torchaudio's MelSpectrogram default.
    """

    def hz_to_mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def mel_to_hz(mel: np.ndarray) -> np.ndarray:
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    fft_hz = np.linspace(0.0, config.sample_rate_hz / 2, config.n_fft // 2 + 1)
    edges_mel = np.linspace(
        hz_to_mel(np.float64(config.fmin_hz)), hz_to_mel(np.float64(config.fmax_hz)), config.n_mels + 2
    )
    edges_hz = mel_to_hz(edges_mel)
    widths = np.diff(edges_hz)
    offsets = edges_hz[:, None] - fft_hz[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    return np.maximum(0.0, np.minimum(rising, falling))


def voicing_lowpass(hz: np.ndarray, cutoff_hz: float) -> np.ndarray:
    """Gain at frequencies `hz` of the low-pass that voicing is judged through: flat to cutoff / 2, then a
    linear roll-off to 0 at 1.5 × cutoff. Below it a breathy or creaky voice is still clearly periodic."""
    return np.clip((1.5 * cutoff_hz - hz) / cutoff_hz, 0.0, 1.0)


def voiced_frames(rows: np.ndarray) -> np.ndarray:
    """Which feature rows [T, 82] are voiced: the F0 column holds ln Hz there and 0 (ln 1) where unvoiced."""
    return np.asarray(rows)[:, F0_COLUMN] > 0


def f0_hz_from_column(f0_column: np.ndarray) -> np.ndarray:
    """Decode the F0 column to Hz, keeping 0 for unvoiced frames."""
    column = np.asarray(f0_column, dtype=np.float64)
    return np.where(column > 0, np.exp(column), 0.0)


@cache
def _swift_detector() -> Any:
    """One swift-f0 ONNX session per process, shared by every stream: building one takes ~20 ms and a thread
    pool. One thread without spinning, so a per-block call does not hold a core busy between blocks."""
    from swift_f0 import SwiftF0

    return SwiftF0(threads=1, spin=False)


class _SwiftF0Column:
    """Fills the F0 column from swift-f0, holding rows back until the pitch frame nearest their centre is final.

    swift-f0 frames are 16 ms (k·256 samples is the centre of frame k) and final 10 frames after their own;
    a row's centre is t·hop + win_length/2. Pitch frames no held row needs any more are dropped.
    """

    def __init__(self, config: FeatureConfig) -> None:
        from swift_f0.core import HOP

        self.config = config
        self._swift_hop = HOP
        self._detector = _swift_detector()
        self.reset()

    def reset(self) -> None:
        c = self.config
        self._stream = self._detector.stream(fmin=c.f0_min_hz, fmax=c.f0_max_hz)
        self._ln_f0 = np.zeros(0)  # ln Hz (0 where unvoiced) of pitch frames _base, _base + 1, ...
        self._base = 0
        self._held = np.zeros((0, c.n_features), dtype=np.float32)  # rows from frame _next_row on
        self._next_row = 0

    def push(self, samples: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Take a block of audio and the rows it completed; return the rows whose F0 is now known."""
        self._add(self._stream.push(samples, self.config.sample_rate_hz))
        return self._release(rows, final=False)

    def flush(self, rows: np.ndarray) -> np.ndarray:
        """End the stream: every held row gets its F0 (the last pitch frame serves rows past it)."""
        self._add(self._stream.flush())
        return self._release(rows, final=True)

    def _nearest(self, frames: np.ndarray) -> np.ndarray:
        centre2 = 2 * frames * self.config.hop_length + self.config.win_length  # twice the centre, in samples
        return (centre2 + self._swift_hop) // (2 * self._swift_hop)

    def _add(self, result: Any) -> None:
        voiced = result.confidence >= self.config.swift_f0_confidence
        ln_f0 = np.log(np.where(voiced, np.maximum(result.pitch_hz, 1.0), 1.0))  # ln 1 = 0 marks unvoiced
        self._ln_f0 = np.concatenate([self._ln_f0, ln_f0])

    def _release(self, rows: np.ndarray, final: bool) -> np.ndarray:
        held = np.concatenate([self._held, rows])
        nearest = self._nearest(self._next_row + np.arange(len(held)))
        known = self._base + len(self._ln_f0)
        n_out = len(held) if final else int(np.searchsorted(nearest, known))
        out = held[:n_out]
        if n_out:
            out[:, F0_COLUMN] = self._ln_f0[np.minimum(nearest[:n_out], known - 1) - self._base]
        self._held = held[n_out:]
        self._next_row += n_out
        unneeded = min(int(self._nearest(np.asarray(self._next_row))) - self._base, len(self._ln_f0))
        if unneeded > 0:
            self._ln_f0 = self._ln_f0[unneeded:]
            self._base += unneeded
        return out


class FeatureExtractor:
    """Turns a 16 kHz float32 stream into [n, 82] feature rows, block by block.

    `push` returns the frames whose analysis span (and, with swift-f0, pitch) is complete; `flush`
    zero-pads the tail and returns the rest, so push(...)* + flush() equals extract(whole clip). The
    buffers never hold more than one analysis span plus the last block, so the cost per block does not grow.
    """

    def __init__(self, config: FeatureConfig | None = None) -> None:
        self.config = config or FeatureConfig()
        c = self.config
        self._min_lag = max(2, math.floor(c.sample_rate_hz / c.f0_max_hz))
        self._max_lag = math.ceil(c.sample_rate_hz / c.f0_min_hz)
        # YIN integrates over one window length, plus the longest lag.
        self._yin_span = c.win_length + self._max_lag
        self._yin_fft = 1 << (self._yin_span - 1).bit_length()
        # Centre the YIN span on the mel window: it reaches `_lookback` samples before the window
        # start and `_lookahead` samples past its end.
        self._lookback = (self._yin_span - c.win_length) // 2
        self._lookahead = self._yin_span - c.win_length - self._lookback
        # Periodic Hann, as torch.hann_window and torchaudio use.
        self._window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(c.win_length) / c.win_length)
        self._mel = mel_filterbank(c).T.copy()
        self._lowpass = voicing_lowpass(np.fft.rfftfreq(self._yin_fft, 1 / c.sample_rate_hz), c.yin_lowpass_hz)
        self._swift = _SwiftF0Column(c) if c.f0_tracker == "swift-f0" else None
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far; the next push starts a new clip."""
        # The buffer starts with the look-back zeros the first frame's F0 span reaches into.
        self._buffer = np.zeros(self._lookback, dtype=np.float64)
        self._n_samples = 0  # samples pushed since reset
        self._next_frame = 0  # index of the next frame to emit
        if self._swift is not None:
            self._swift.reset()

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append a block of samples; return the rows of every frame that became complete."""
        block = check_mono_float32(samples)
        self._buffer = np.concatenate([self._buffer, block.astype(np.float64)])
        self._n_samples += block.size
        hop = self.config.hop_length
        ready_until = self._n_samples - self.config.win_length - self._lookahead
        n_ready = 0 if ready_until < 0 else ready_until // hop + 1 - self._next_frame
        rows = self._emit(max(0, n_ready))
        return rows if self._swift is None else self._swift.push(block, rows)

    def flush(self) -> np.ndarray:
        """Zero-pad the tail, return the remaining rows and reset for the next stream.

        A clip of N > 0 samples has 1 + ceil(max(0, N - win_length) / hop_length) frames: the last
        frame is the first whose window reaches the final sample.
        """
        c = self.config
        n = self._n_samples
        total = 0 if n == 0 else 1 + -(-max(0, n - c.win_length) // c.hop_length)
        n_left = total - self._next_frame
        needed = (n_left - 1) * c.hop_length + self._yin_span
        if n_left > 0 and self._buffer.size < needed:
            self._buffer = np.pad(self._buffer, (0, needed - self._buffer.size))
        rows = self._emit(max(0, n_left))
        if self._swift is not None:
            rows = self._swift.flush(rows)
        self.reset()
        return rows

    def extract(self, samples: np.ndarray) -> np.ndarray:
        """Features of a whole clip, [T, 82]; the same rows a stream of the same samples gives."""
        self.reset()
        head = self.push(samples)
        return np.concatenate([head, self.flush()])

    def _emit(self, n_frames: int) -> np.ndarray:
        """Rows of the next n_frames frames, in batches small enough to stay in cache."""
        batches = [self._emit_batch(min(_BATCH_FRAMES, n_frames - i)) for i in range(0, n_frames, _BATCH_FRAMES)]
        return np.concatenate(batches) if batches else np.zeros((0, self.config.n_features), dtype=np.float32)

    def _emit_batch(self, n_frames: int) -> np.ndarray:
        c = self.config
        hop = c.hop_length
        used = (n_frames - 1) * hop + self._yin_span
        spans = np.lib.stride_tricks.sliding_window_view(self._buffer[:used], self._yin_span)[::hop]
        frames = spans[:, self._lookback : self._lookback + c.win_length]
        rows = np.empty((n_frames, c.n_features), dtype=np.float32)
        rows[:, :F0_COLUMN] = self._log_mel(frames)
        energy_db = 10.0 * np.log10(np.mean(frames**2, axis=1) + _LOG_FLOOR)
        if self._swift is None:
            f0 = self._yin(spans, energy_db)
            rows[:, F0_COLUMN] = np.log(np.where(f0 > 0, f0, 1.0))  # ln 1 = 0 marks unvoiced
        else:
            rows[:, F0_COLUMN] = 0.0  # filled in by _SwiftF0Column once the pitch frame is final
        rows[:, ENERGY_COLUMN] = energy_db
        self._buffer = self._buffer[n_frames * hop :]
        self._next_frame += n_frames
        return rows

    def _log_mel(self, frames: np.ndarray) -> np.ndarray:
        power = np.abs(np.fft.rfft(frames * self._window, self.config.n_fft, axis=1)) ** 2
        return np.log(np.maximum(power @ self._mel, _LOG_FLOOR))

    def _yin(self, spans: np.ndarray, energy_db: np.ndarray) -> np.ndarray:
        """YIN F0 per frame (de Cheveigné & Kawahara 2002) in Hz, 0 where unvoiced.

        The period is the first local minimum of the cumulative-mean-normalised difference (CMND)
        under `yin_threshold` (else the deepest one), refined by parabolic interpolation. Voicing
        is judged on a low-passed copy (`yin_lowpass_hz`), where most broadband noise is gone: a
        frame is voiced when that copy's deepest CMND dip is under `voicing_threshold` and its
        energy is above `voicing_min_energy_db`. Low-passing only for voicing keeps the full band
        for the period, where a weak fundamental would otherwise give octave-up errors.
        """
        c = self.config
        centred = spans - spans.mean(axis=1, keepdims=True)
        spectrum = np.fft.rfft(centred, self._yin_fft, axis=1)
        search = self._cmnd(centred, spectrum)
        lowpassed_spectrum = spectrum * self._lowpass
        lowpassed = np.fft.irfft(lowpassed_spectrum, self._yin_fft, axis=1)[:, : self._yin_span]
        lowpassed = self._cmnd(lowpassed, lowpassed_spectrum)

        rows = np.arange(len(search))
        local_min = np.zeros_like(search, dtype=bool)
        local_min[:, 1:-1] = (search[:, 1:-1] <= search[:, :-2]) & (search[:, 1:-1] <= search[:, 2:])
        under = local_min & (search < c.yin_threshold)
        best = np.where(under.any(axis=1), under.argmax(axis=1), search.argmin(axis=1))

        dip = search[rows, best]
        left = search[rows, np.maximum(best - 1, 0)]
        right = search[rows, np.minimum(best + 1, search.shape[1] - 1)]
        curvature = left - 2.0 * dip + right
        inner = (best > 0) & (best < search.shape[1] - 1) & (curvature > 0)
        shift = np.where(inner, 0.5 * (left - right) / np.where(inner, curvature, 1.0), 0.0)
        lag = best + self._min_lag + np.clip(shift, -1.0, 1.0)

        voiced = (lowpassed.min(axis=1) < c.voicing_threshold) & (energy_db > c.voicing_min_energy_db)
        return np.where(voiced, c.sample_rate_hz / lag, 0.0)

    def _cmnd(self, spans: np.ndarray, spectrum: np.ndarray) -> np.ndarray:
        """CMND of each span (given with its rFFT) for lags min_lag..max_lag: [n_frames, n_lags]."""
        w, max_lag, n_fft = self.config.win_length, self._max_lag, self._yin_fft
        squares = np.concatenate([np.zeros((len(spans), 1)), np.cumsum(spans**2, axis=1)], axis=1)
        lags = np.arange(max_lag + 1)
        energy_shifted = squares[:, lags + w] - squares[:, lags]
        head = np.fft.rfft(spans[:, :w], n_fft, axis=1)
        cross = np.fft.irfft(np.conj(head) * spectrum, n_fft, axis=1)[:, : max_lag + 1]
        diff = np.maximum(energy_shifted[:, :1] + energy_shifted - 2.0 * cross, 0.0)
        cmnd = diff[:, 1:] * lags[1:] / np.maximum(np.cumsum(diff[:, 1:], axis=1), 1e-12)
        return cmnd[:, self._min_lag - 1 :]


class FeatureNormalizer:
    """Per-column mean/std fitted once on training features and stored with the model.

    The F0 column's statistics come from voiced frames only, and unvoiced frames stay 0 after normalising.
    Over all frames the column is mostly a 0-or-about-5 voicing switch (std about 2.5 in ln Hz), which
    squashes a 3-semitone pitch change (0.17) to 0.07 std: a trained model was measured to ignore F0
    altogether. Over voiced frames the same change is about 0.6 std.
    """

    def __init__(self, n_features: int = N_MEL_COLUMNS + 2) -> None:
        self.count = np.zeros(n_features, dtype=np.int64)  # per column: the F0 column counts voiced frames
        self.mean = np.zeros(n_features, dtype=np.float64)
        self._m2 = np.zeros(n_features, dtype=np.float64)

    @classmethod
    def fit(cls, arrays: Iterable[np.ndarray], n_features: int = N_MEL_COLUMNS + 2) -> FeatureNormalizer:
        """Running mean/variance over any number of [T, n_features] arrays, in one pass."""
        normalizer = cls(n_features)
        for features in arrays:
            normalizer.update(features)
        return normalizer

    def update(self, features: np.ndarray) -> None:
        """Merge a batch of rows into the statistics (Chan et al. parallel update, column by column)."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.size:
            raise ValueError(f"expected [T, {self.mean.size}] features, got shape {x.shape}")
        counted = np.ones(x.shape, dtype=bool)
        counted[:, F0_COLUMN] = voiced_frames(x)
        n = counted.sum(axis=0)
        batch_mean = np.where(counted, x, 0.0).sum(axis=0) / np.maximum(n, 1)
        batch_m2 = np.where(counted, (x - batch_mean) ** 2, 0.0).sum(axis=0)
        total = self.count + n
        delta = batch_mean - self.mean
        share = n / np.maximum(total, 1)
        self.mean = self.mean + delta * share
        self._m2 = self._m2 + batch_m2 + delta**2 * self.count * share
        self.count = total

    @property
    def std(self) -> np.ndarray:
        """Population std, floored so a constant column does not divide by zero."""
        variance = self._m2 / np.maximum(self.count, 1)
        return np.maximum(np.sqrt(variance), 1e-5)

    def apply(self, features: np.ndarray) -> np.ndarray:
        if not self.count.any():
            raise ValueError("FeatureNormalizer has not been fitted")
        x = np.asarray(features, dtype=np.float64)
        out = ((x - self.mean) / self.std).astype(np.float32)
        out[~voiced_frames(x), F0_COLUMN] = 0.0  # unvoiced: at the voiced mean, the model reads voicing elsewhere
        return out

    def to_dict(self) -> dict[str, Any]:
        variance = self._m2 / np.maximum(self.count, 1)
        return {"count": self.count.tolist(), "mean": self.mean.tolist(), "var": variance.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureNormalizer:
        count = np.asarray(data["count"], dtype=np.int64)
        mean = np.asarray(data["mean"], dtype=np.float64)
        var = np.asarray(data["var"], dtype=np.float64)
        if not (count.shape == mean.shape == var.shape) or mean.ndim != 1:
            raise ValueError("normalizer count, mean and var must be equal-length lists")
        normalizer = cls(mean.size)
        normalizer.count = count
        normalizer.mean = mean
        normalizer._m2 = var * count
        return normalizer
