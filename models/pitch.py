"""F0 level, range and jitter edits with the WORLD vocoder (pyworld), block by block.

VITS voices have no pitch input, so emotional pitch is put on the decoded waveform:
F0 is tracked with YIN, WORLD's CheapTrick and D4C take the spectral envelope and
aperiodicity, and WORLD resynthesises with the edited F0 contour, which keeps formants
(timbre) in place. A stream is handled in blocks; each block is analysed with real
audio on both sides and neighbouring blocks are cross-faded, so there are no seams.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyworld

from .features import voicing_lowpass

if TYPE_CHECKING:
    from .prosody import Prosody

FRAME_SAMPLES = 128  # WORLD analysis hop: ~5.8 ms at 22.05 kHz
F0_FLOOR_HZ = 50.0  # speech F0 search range, low and high voices alike
F0_CEIL_HZ = 400.0
YIN_THRESHOLD = 0.1  # the paper's absolute threshold for picking the period
# Voicing is judged below VOICING_LOWPASS_HZ, where a VITS voice's breath and creak noise is weak
# (as the SER feature extractor does): judged on the full band, ~40% of the frames that are voiced
# in Piper's joe came out of WORLD as noise. Low-passed white noise stays unvoiced at this threshold.
VOICING_LOWPASS_HZ = 1000.0
VOICING_THRESHOLD = 0.4
SILENCE_FLOOR = 1e-10  # frame energy 100 dB under the clip's loudest: silence, never voiced


def median5(values: np.ndarray) -> np.ndarray:
    """5-point running median with zero padding at the ends (scipy's medfilt(x, 5), without importing scipy.signal,
    which alone costs ~70 MB of resident memory in the synthesis process)."""
    return np.median(np.lib.stride_tricks.sliding_window_view(np.pad(values, 2), 5), axis=1)


@dataclass(frozen=True)
class F0Edit:
    """Map F0 in semitones around `center_hz`: s -> s * range_ratio + shift + jitter noise."""

    center_hz: float
    shift_semitones: float = 0.0
    range_ratio: float = 1.0
    jitter_semitones: float = 0.0

    @classmethod
    def for_prosody(cls, center_hz: float, prosody: Prosody) -> F0Edit:
        """The pitch part of a prosody entry, pivoting on the voice's `center_hz`."""
        return cls(center_hz, prosody.pitch_shift_semitones, prosody.pitch_range_ratio, prosody.jitter_semitones)

    def apply(self, f0: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Edited copy of an F0 contour in Hz; unvoiced frames (0 Hz) stay unvoiced."""
        edited = f0.copy()
        voiced = f0 > 0
        semitones = 12.0 * np.log2(f0[voiced] / self.center_hz)
        semitones = semitones * self.range_ratio + self.shift_semitones
        if self.jitter_semitones:
            semitones += self.jitter_semitones * rng.standard_normal(semitones.size)
        edited[voiced] = self.center_hz * 2.0 ** (semitones / 12.0)
        return edited


def _frame_period_ms(sample_rate_hz: int) -> float:
    return 1000.0 * FRAME_SAMPLES / sample_rate_hz


def _normalised_difference(x: np.ndarray, tau_max: int) -> np.ndarray:
    """YIN's cumulative-mean-normalised difference d'(tau), one row per WORLD frame.

    Frames are centred on multiples of FRAME_SAMPLES (as WORLD's are); the difference
    sum(x[j] - x[j + tau])^2 is expanded into energies and a cross-correlation (FFT).
    """
    length = 2 ** int(np.ceil(np.log2(2 * tau_max + 1)))
    width = length - tau_max  # integration window
    padded = np.pad(x, length // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, length)[::FRAME_SAMPLES]
    frames = frames[: x.size // FRAME_SAMPLES + 1]
    spectrum = np.conj(np.fft.rfft(frames[:, :width], 2 * length))
    cross = np.fft.irfft(spectrum * np.fft.rfft(frames, 2 * length))[:, : tau_max + 1]
    energy = np.cumsum(np.pad(frames**2, ((0, 0), (1, 0))), axis=1)
    shifted = energy[:, width : width + tau_max + 1] - energy[:, : tau_max + 1]
    difference = np.maximum(energy[:, width : width + 1] + shifted - 2 * cross, 0.0)
    normalised = np.ones_like(difference)
    running_mean = np.cumsum(difference[:, 1:], axis=1) / np.arange(1, tau_max + 1)
    # Digital silence differs from itself by nothing at every lag: it is aperiodic (1), not periodic (0). So is
    # what filtering leaves of it beside speech (round-off 100 dB and more below the clip's loudest frame), which
    # would otherwise look periodic at any lag.
    audible = energy[:, width] > SILENCE_FLOOR * max(float(energy[:, width].max(initial=0.0)), 1e-12)
    np.divide(difference[:, 1:], running_mean, out=normalised[:, 1:], where=(running_mean > 1e-12) & audible[:, None])
    return normalised


def _lags(sample_rate_hz: int) -> tuple[int, int]:
    """The shortest and longest searched period, in samples."""
    return int(sample_rate_hz / F0_CEIL_HZ), int(np.ceil(sample_rate_hz / F0_FLOOR_HZ))


def _lowpassed(x: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """x through the SER features' voicing low-pass at VOICING_LOWPASS_HZ."""
    n = 1 << int(np.ceil(np.log2(max(x.size, 2))))
    gain = voicing_lowpass(np.fft.rfftfreq(n, 1.0 / sample_rate_hz), VOICING_LOWPASS_HZ)
    return np.fft.irfft(np.fft.rfft(x, n) * gain, n)[: x.size]


def _aperiodicity(x: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Per frame, the deepest d'(tau) over the searched periods: near 0 periodic, near 1 noise."""
    tau_min, tau_max = _lags(sample_rate_hz)
    return _normalised_difference(x, tau_max)[:, tau_min:].min(axis=1)


def _yin(x: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """YIN (de Cheveigné & Kawahara 2002): F0 per frame, whether voiced or not.

    Used instead of WORLD's DIO, which on low voices with a weak fundamental (joe, ~90 Hz)
    reports an octave too high on ~75% of frames against pYIN; after the median filter in
    estimate_f0, this YIN is within a semitone of pYIN on ~98% of frames both call voiced.
    """
    tau_min, tau_max = _lags(sample_rate_hz)
    # The searched lags, plus one on either side for the trough tests.
    band = _normalised_difference(x, tau_max)[:, tau_min - 1 :]
    inner = band[:, 1:-1]
    trough = (inner <= band[:, :-2]) & (inner < band[:, 2:])
    # The first trough under the threshold, else the deepest point.
    below = trough & (inner < YIN_THRESHOLD)
    lag = np.where(below.any(axis=1), below.argmax(axis=1), inner.argmin(axis=1))
    rows = np.arange(lag.size)
    left, mid, right = band[rows, lag], band[rows, lag + 1], band[rows, lag + 2]
    # Parabolic interpolation for a sub-sample period.
    curvature = left - 2 * mid + right
    offset = np.divide(0.5 * (left - right), curvature, out=np.zeros_like(mid), where=np.abs(curvature) > 1e-12)
    return sample_rate_hz / (tau_min + lag + np.clip(offset, -1.0, 1.0))


def estimate_f0(samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """F0 per WORLD frame in Hz (YIN on the full band), 0 where unvoiced (judged low-passed)."""
    x = samples.astype(np.float64)
    periodic = _aperiodicity(_lowpassed(x, sample_rate_hz), sample_rate_hz) < VOICING_THRESHOLD
    f0 = np.where(periodic, _yin(x, sample_rate_hz), 0.0)
    # A 5-frame median over voiced frames removes isolated octave jumps, which the F0
    # edit would otherwise turn into audible warbles.
    voiced = f0 > 0
    if voiced.sum() >= 5:
        f0[voiced] = median5(f0[voiced])
    return f0


def resynthesize(
    samples: np.ndarray, sample_rate_hz: int, edit: F0Edit, rng: np.random.Generator, f0: np.ndarray | None = None
) -> np.ndarray:
    """WORLD analysis, F0 edit, synthesis; same length as the input. `f0`: the input's estimate_f0, for a caller
    that already has it."""
    x = samples.astype(np.float64)
    period = _frame_period_ms(sample_rate_hz)
    f0 = estimate_f0(x, sample_rate_hz) if f0 is None else f0
    times = np.arange(f0.size) * period / 1000.0
    envelope = pyworld.cheaptrick(x, f0, times, sample_rate_hz)
    aperiodicity = pyworld.d4c(x, f0, times, sample_rate_hz)
    y = pyworld.synthesize(edit.apply(f0, rng), envelope, aperiodicity, sample_rate_hz, period)
    y = np.pad(y[: x.size], (0, max(0, x.size - y.size)))
    # WORLD comes out ~12% louder than its input; loudness belongs to volume_ratio alone.
    energy = float(np.sum(y**2))
    if energy > 0:
        y *= np.sqrt(float(np.sum(x**2)) / energy)
    return y.astype(np.float32)


def edit_blocks(
    blocks: Iterable[np.ndarray], sample_rate_hz: int, edit: F0Edit, seed: int | None = None
) -> Iterator[np.ndarray]:
    """Consecutive audio blocks with `edit` applied, for engines whose models have no pitch input."""
    shifter = StreamingPitchShifter(sample_rate_hz, edit, seed=seed)
    for block in blocks:
        yield shifter.push(block)
    yield shifter.flush()


class StreamingPitchShifter:
    """Applies an F0Edit to consecutive audio blocks.

    Output lags input by `context + crossfade` samples until `flush()`: each block is
    resynthesised with `context` samples of real audio before and after it (WORLD's
    analysis windows reach ~3 pitch periods), and the `crossfade` samples beyond the
    block are blended into the start of the next one.
    """

    def __init__(
        self,
        sample_rate_hz: int,
        edit: F0Edit,
        context: int = 1024,
        crossfade: int = 256,
        seed: int | None = None,
    ) -> None:
        self.sample_rate_hz = sample_rate_hz
        self.edit = edit
        self.context = context
        self.crossfade = crossfade
        self._rng = np.random.default_rng(seed)
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # stream index of _buffer[0]
        self._done = 0  # stream index up to which output was returned
        self._tail = np.zeros(0, np.float32)  # resynthesised audio just past _done

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add input; return the output that is now final (possibly empty)."""
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32)])
        ready = self._buffer_start + self._buffer.size - self.context - self.crossfade
        return self._emit(ready, final=False)

    def flush(self) -> np.ndarray:
        """End of stream: return all remaining output."""
        return self._emit(self._buffer_start + self._buffer.size, final=True)

    def _emit(self, ready: int, final: bool) -> np.ndarray:
        if ready <= self._done:
            return np.zeros(0, np.float32)
        window_start = max(self._buffer_start, self._done - self.context)
        window = self._buffer[window_start - self._buffer_start :]
        y = resynthesize(window, self.sample_rate_hz, self.edit, self._rng)
        start, stop = self._done - window_start, ready - window_start
        out = y[start:stop]
        n = min(self._tail.size, out.size)
        if n:
            fade = np.linspace(0.0, 1.0, n, endpoint=False, dtype=np.float32)
            out[:n] = self._tail[:n] * (1.0 - fade) + out[:n] * fade
        self._tail = np.zeros(0, np.float32) if final else y[stop : stop + self.crossfade]
        self._done = ready
        keep_from = self._done - self.context
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :]
            self._buffer_start = keep_from
        return out
