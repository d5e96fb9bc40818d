"""Sample-rate conversion for streamed audio.

Resampling each chunk on its own would zero-pad every chunk edge and click at the seams,
so the resampler keeps a little input history and holds back a few samples of lookahead;
its output equals resampling the whole signal at once.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

_HALF_TAPS = 10  # scipy.signal.resample_poly's default filter half-length, per max(up, down)


class Resampler:
    """Streaming polyphase resampler: push chunks, then flush at the end."""

    def __init__(self, from_hz: int, to_hz: int) -> None:
        ratio = Fraction(to_hz, from_hz)
        self.from_hz, self.to_hz = from_hz, to_hz
        self.up, self.down = ratio.numerator, ratio.denominator
        # Input samples the filter reaches on each side of an output sample.
        self._reach = math.ceil(_HALF_TAPS * max(self.up, self.down) / self.up) + 1
        self._buffer = np.zeros(0, np.float32)
        self._buffer_start = 0  # input index of _buffer[0]
        self._done = 0  # output samples returned so far

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add input; return the output samples whose filter support is complete."""
        self._buffer = np.concatenate([self._buffer, samples.astype(np.float32)])
        available = self._buffer_start + self._buffer.size - self._reach
        return self._emit(max(0, available) * self.up // self.down)

    def flush(self) -> np.ndarray:
        """End of stream: return the remaining output."""
        total = self._buffer_start + self._buffer.size
        return self._emit(math.ceil(total * self.up / self.down))

    def _emit(self, ready: int) -> np.ndarray:
        if self.up == self.down:
            out, self._buffer = self._buffer, np.zeros(0, np.float32)
            return out
        if ready <= self._done:
            return np.zeros(0, np.float32)
        from scipy.signal import resample_poly  # imported only when rates differ: scipy.signal costs ~70 MB

        # Windows start on multiples of `down` input samples, where the output grid of a
        # window coincides with the whole signal's grid.
        position = self._done * self.down // self.up - self._reach
        start = max(self._buffer_start, position // self.down * self.down)
        y = resample_poly(self._buffer[start - self._buffer_start :], self.up, self.down)
        offset = start * self.up // self.down
        out = y[self._done - offset : ready - offset].astype(np.float32)
        self._done = ready
        keep_from = (self._done * self.down // self.up - self._reach) // self.down * self.down
        if keep_from > self._buffer_start:
            self._buffer = self._buffer[keep_from - self._buffer_start :]
            self._buffer_start = keep_from
        return out


def resample(samples: np.ndarray, from_hz: int, to_hz: int) -> np.ndarray:
    """Resample a whole signal (float32 mono)."""
    resampler = Resampler(from_hz, to_hz)
    return np.concatenate([resampler.push(samples), resampler.flush()])


def check_mono_float32(samples: np.ndarray, name: str = "samples") -> np.ndarray:
    """Refuse what the audio models cannot take, with a message that says what is wrong."""
    if not isinstance(samples, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(samples).__name__}")
    if samples.dtype != np.float32:
        raise ValueError(f"{name} must be float32 samples in [-1, 1], got dtype {samples.dtype}")
    if samples.ndim != 1:
        raise ValueError(f"{name} must be 1-D (mono), got shape {samples.shape}")
    if not np.isfinite(samples).all():
        raise ValueError(f"{name} contains NaN or infinite samples")
    return samples
