"""Audio devices through PortAudio (sounddevice): device listing, a microphone and a speaker for the loop.

The PortAudio callbacks run on the audio thread and only move samples (Pipecat's lesson): the input callback
copies into a preallocated ring, the output callback copies ≤ 40 ms from a queue of pieces the session pushed.
Neither takes a lock, waits or resamples; work that can take time (resampling, slicing into 512-sample blocks)
happens on the consumer's thread. The module knows nothing of models or gRPC.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from scipy.signal import resample_poly

SAMPLE_RATE_HZ = 16_000  # what the SER service expects
BLOCK_SAMPLES = 512  # one SER chunk: 32 ms at 16 kHz
MAX_OUTPUT_BLOCK_MS = 40.0  # an interruption must be heard within one output block

Kind = Literal["input", "output"]


def _sounddevice() -> Any:
    """The sounddevice module, or a clear error when PortAudio is missing."""
    try:
        import sounddevice
    except (ImportError, OSError) as error:
        raise RuntimeError(
            f"audio devices need PortAudio and the sounddevice package ({error}); "
            "on Debian/Ubuntu: apt-get install libportaudio2"
        ) from None
    return sounddevice


# --- devices ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """One PortAudio device, as `emoloop devices` lists it."""

    index: int
    name: str
    host_api: str
    max_input_channels: int
    max_output_channels: int
    default_sample_rate_hz: int
    is_default_input: bool
    is_default_output: bool


def _default_index(sd: Any, kind: Kind) -> int:
    try:
        return int(sd.query_devices(kind=kind)["index"])
    except (sd.PortAudioError, ValueError, KeyError):
        return -1


def list_devices() -> list[Device]:
    """Every device PortAudio knows, with its host API and whether it is the default input/output."""
    sd = _sounddevice()
    host_apis = [api["name"] for api in sd.query_hostapis()]
    default_in, default_out = _default_index(sd, "input"), _default_index(sd, "output")
    return [
        Device(
            index=info["index"],
            name=info["name"],
            host_api=host_apis[info["hostapi"]],
            max_input_channels=info["max_input_channels"],
            max_output_channels=info["max_output_channels"],
            default_sample_rate_hz=round(info["default_samplerate"]),
            is_default_input=info["index"] == default_in,
            is_default_output=info["index"] == default_out,
        )
        for info in sd.query_devices()
    ]


def rescan() -> None:
    """Re-initialise PortAudio so it sees devices that appeared since import (e.g. a JACK server started later).

    PortAudio enumerates devices once, when sounddevice is imported, and finds JACK only if a server is running
    then (the one named by $JACK_DEFAULT_SERVER). No stream may be open while this runs.
    """
    sd = _sounddevice()
    sd._terminate()
    sd._initialize()


def _describe(devices: list[Device]) -> str:
    lines = [
        f"  {d.index}: {d.name!r} ({d.host_api}, {d.max_input_channels} in, {d.max_output_channels} out)"
        for d in devices
    ]
    return "\n".join(lines) or "  (none: no sound card, or its server (JACK) was not running when PortAudio started)"


def find_device(device: str | int | None, kind: Kind, host_api: str | int | None = None) -> Device:
    """Resolve a device by index, exact name or unique name fragment (case-insensitive), on an optional host API.

    `None` means the default device (of the host API when one is given); a string of digits from a command line
    is an index. Raises ValueError listing the devices when nothing, or more than one device, matches.
    """
    if isinstance(device, str) and device.isdigit():
        device = int(device)
    devices = list_devices()
    sd = _sounddevice()
    host_apis = [api["name"] for api in sd.query_hostapis()]
    api_name: str | None = None
    if host_api is not None:
        matches = (
            [host_apis[host_api]]
            if isinstance(host_api, int) and 0 <= host_api < len(host_apis)
            else [n for n in host_apis if str(host_api).lower() in n.lower()]
        )
        if len(matches) != 1:
            raise ValueError(f"host API {host_api!r} matches {matches or 'nothing'}; known: {', '.join(host_apis)}")
        api_name = matches[0]
    channels = "max_input_channels" if kind == "input" else "max_output_channels"
    usable = [d for d in devices if getattr(d, channels) > 0 and api_name in (None, d.host_api)]
    if device is None:
        if api_name is not None:
            index = sd.query_hostapis(host_apis.index(api_name))[f"default_{kind}_device"]
        else:
            index = _default_index(sd, kind)
        chosen = [d for d in usable if d.index == index]
    elif isinstance(device, int):
        chosen = [d for d in usable if d.index == device]
    else:
        chosen = [d for d in usable if d.name == device] or [d for d in usable if device.lower() in d.name.lower()]
    if len(chosen) != 1:
        what = "no default" if device is None else ("several devices match" if chosen else "no device matches")
        where = f" on {api_name}" if api_name else ""
        raise ValueError(
            f"{kind} device {device!r}{where}: {what}; {kind} devices:\n{_describe(usable if usable else devices)}"
        )
    return chosen[0]


# --- resampling --------------------------------------------------------------------------------------------


class Resampler:
    """Streaming polyphase resampler (scipy's resample_poly) whose output equals resampling the whole signal.

    Resampling each chunk on its own would zero-pad every chunk's edges and click at the seams; this keeps the
    few input samples the filter reaches (10 taps per phase on each side) and re-filters them with the next
    chunk. It holds back under 1 ms of audio, where soxr's streaming mode holds back 20-40 ms.
    """

    def __init__(self, from_hz: int, to_hz: int) -> None:
        ratio = Fraction(to_hz, from_hz)
        self.up, self.down = ratio.numerator, ratio.denominator
        self._reach = math.ceil(10 * max(self.up, self.down) / self.up) + 1  # input samples, each side
        self._history = np.zeros(0, np.float32)
        self._history_start = 0  # input index of _history[0], always a multiple of `down`
        self._emitted = 0  # output samples returned so far

    def push(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """Add input; return every output sample whose filter input is complete (all of them when `last`)."""
        if self.up == self.down:
            return samples.astype(np.float32)
        self._history = np.concatenate([self._history, samples.astype(np.float32)])
        total = self._history_start + self._history.size
        ready = math.ceil(total * self.up / self.down) if last else max(0, total - self._reach) * self.up // self.down
        if ready <= self._emitted:
            return np.zeros(0, np.float32)
        # A window starting on a multiple of `down` puts its outputs on the whole signal's output grid.
        needed = self._emitted * self.down // self.up - self._reach
        start = max(self._history_start, needed // self.down * self.down)
        filtered = resample_poly(self._history[start - self._history_start :], self.up, self.down)
        offset = start * self.up // self.down
        out = filtered[self._emitted - offset : ready - offset].astype(np.float32)
        self._emitted = ready
        keep = max(self._history_start, (ready * self.down // self.up - self._reach) // self.down * self.down)
        self._history = self._history[keep - self._history_start :]
        self._history_start = keep
        return out


def _stream_rate(sd: Any, device: Device, kind: Kind, wanted_hz: int | None) -> int:
    """The wanted rate when the device takes it, else the device's own rate (we resample)."""
    if wanted_hz:
        check = sd.check_input_settings if kind == "input" else sd.check_output_settings
        try:
            check(device=device.index, channels=1, dtype="float32", samplerate=wanted_hz)
            return wanted_hz
        except (sd.PortAudioError, ValueError):
            pass
    return device.default_sample_rate_hz


# --- microphone ----------------------------------------------------------------------------------------------


class Microphone:
    """Mono capture delivered as 512-sample float32 blocks at 16 kHz, whatever rate the device runs at.

    The callback copies into a fixed numpy ring (about `buffer_s` seconds) and publishes a write count; the
    consumer (`read`/`blocks`) publishes a read count. One writer and one reader, each owning its counter, need
    no lock. When the consumer falls so far behind that the ring is full, the callback drops the new audio and
    counts it in `overruns`/`dropped_samples` instead of waiting or raising.
    """

    def __init__(
        self,
        device: str | int | None = None,
        host_api: str | int | None = None,
        *,
        buffer_s: float = 2.0,
        latency: str | float = "low",
    ) -> None:
        sd = _sounddevice()
        self.device = find_device(device, "input", host_api)
        self.device_rate_hz = _stream_rate(sd, self.device, "input", SAMPLE_RATE_HZ)
        self._ring = np.zeros(max(1, round(buffer_s * self.device_rate_hz)), np.float32)
        self._written = 0  # samples ever written; only the callback changes it
        self._read = 0  # samples ever read; only the consumer changes it
        self._ready = threading.Event()
        self._resampler = Resampler(self.device_rate_hz, SAMPLE_RATE_HZ)
        self._pending = np.zeros(0, np.float32)  # 16 kHz samples not yet returned as a whole block
        self.overruns = 0  # callbacks whose audio was dropped because the ring was full
        self.dropped_samples = 0  # device-rate samples dropped that way
        self.device_overflows = 0  # callbacks where PortAudio itself reported lost input
        self._stream = sd.InputStream(
            device=self.device.index,
            channels=1,
            samplerate=self.device_rate_hz,
            dtype="float32",
            latency=latency,
            callback=self._callback,
        )

    def _callback(self, indata: np.ndarray, frames: int, _time: Any, status: Any) -> None:
        if status.input_overflow:
            self.device_overflows += 1
        written, size = self._written, self._ring.size
        if written - self._read + frames > size:
            self.overruns += 1
            self.dropped_samples += frames
            self._ready.set()
            return
        start = written % size
        first = min(frames, size - start)
        self._ring[start : start + first] = indata[:first, 0]
        self._ring[: frames - first] = indata[first:, 0]
        self._written = written + frames
        self._ready.set()

    def start(self) -> Microphone:
        """Start capturing; returns self so `with Microphone(...).start() as mic:` reads well."""
        self._stream.start()
        return self

    def close(self) -> None:
        """Stop and release the device."""
        self._stream.stop()
        self._stream.close()

    def __enter__(self) -> Microphone:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _take(self) -> np.ndarray:
        """Move whatever the callback wrote from the ring, resampled, into the pending 16 kHz samples."""
        written, size = self._written, self._ring.size
        count = written - self._read
        if count:
            start = self._read % size
            first = min(count, size - start)
            raw = np.concatenate([self._ring[start : start + first], self._ring[: count - first]])
            self._read = written
            self._pending = np.concatenate([self._pending, self._resampler.push(raw)])
        return self._pending

    def read(self, timeout_s: float | None = None) -> np.ndarray | None:
        """The next block of exactly 512 samples at 16 kHz, or None if none is complete within the timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._ready.clear()  # cleared before looking, so a write after the look wakes the wait below
            if self._take().size >= BLOCK_SAMPLES:
                block, self._pending = self._pending[:BLOCK_SAMPLES], self._pending[BLOCK_SAMPLES:]
                return block
            remaining = None if deadline is None else deadline - time.monotonic()
            if (remaining is not None and remaining <= 0) or not self._stream.active:
                return None
            self._ready.wait(remaining)

    def blocks(self, timeout_s: float = 1.0) -> Iterator[np.ndarray]:
        """Blocks until the stream stops or no audio arrives for `timeout_s`."""
        while (block := self.read(timeout_s)) is not None:
            yield block


# --- speaker ------------------------------------------------------------------------------------------------


@dataclass
class TurnPlayback:
    """What happened to one turn's audio: when its first sample reached the device, how much played or was dropped.

    `first_sample_at` is on the `time.perf_counter()` clock: the callback's time plus PortAudio's estimate of
    the delay until that sample leaves the DAC, so the loop's latency is measured to the audible first sample.
    """

    turn_id: str
    sample_rate_hz: int
    queued_samples: int = 0
    played_samples: int = 0
    dropped_samples: int = 0
    first_sample_at: float | None = None
    cancelled: bool = False

    @property
    def interrupted(self) -> bool:
        """True when part of the turn was dropped (barge-in) rather than played to the end."""
        return self.dropped_samples > 0


@dataclass
class _Piece:
    samples: np.ndarray  # at the device rate
    turn: TurnPlayback
    generation: int
    position: int = 0


class Speaker:
    """Playback queue: push answer audio of any length and rate; the output callback plays it in ≤ 40 ms blocks.

    Only the callback removes pieces from the queue; `clear` marks them stale (a generation count, or a
    cancelled turn) and the next callback drops them and plays silence, so a barge-in is heard within one
    block and the callback never takes a lock. Audio pushed later for a cancelled turn is dropped on arrival.
    Call `push`, `end_turn` and `clear` from one thread (the session's).
    """

    def __init__(
        self,
        device: str | int | None = None,
        host_api: str | int | None = None,
        *,
        sample_rate_hz: int | None = None,
        block_ms: float = 20.0,
        latency: str | float = "low",
    ) -> None:
        if not 0 < block_ms <= MAX_OUTPUT_BLOCK_MS:
            raise ValueError(f"block_ms must be in (0, {MAX_OUTPUT_BLOCK_MS:g}], got {block_ms}")
        sd = _sounddevice()
        self.device = find_device(device, "output", host_api)
        self.sample_rate_hz = _stream_rate(sd, self.device, "output", sample_rate_hz)
        self.block_samples = max(1, round(self.sample_rate_hz * block_ms / 1000))
        self._queue: deque[_Piece] = deque()  # the session appends, only the callback pops
        self._generation = 0  # bumped by clear(); pieces from an older generation are stale
        self._turns: dict[str, TurnPlayback] = {}
        self._resampler: tuple[str, int, Resampler] | None = None  # (turn, rate) of the stream being resampled
        self._drained = threading.Event()
        self._last_sample_at = 0.0  # perf_counter time the last played sample leaves the DAC
        self.underflows = 0  # callbacks where PortAudio reported it ran out of output
        self._stream = sd.OutputStream(
            device=self.device.index,
            channels=1,
            samplerate=self.sample_rate_hz,
            dtype="float32",
            blocksize=self.block_samples,
            latency=latency,
            callback=self._callback,
        )

    def _callback(self, outdata: np.ndarray, frames: int, timing: Any, status: Any) -> None:
        now = time.perf_counter()
        if status.output_underflow:
            self.underflows += 1
        # PortAudio's estimate of when this block's first frame is heard (0 when the host cannot tell).
        dac_at = now + max(0.0, timing.outputBufferDacTime - timing.currentTime) if timing.currentTime else now
        out = outdata[:, 0]
        filled = 0
        queue = self._queue
        had_audio = bool(queue)
        while filled < frames and queue:
            piece = queue[0]
            turn = piece.turn
            if piece.generation != self._generation or turn.cancelled:
                turn.dropped_samples += piece.samples.size - piece.position
                queue.popleft()
                continue
            if piece.position == 0 and turn.first_sample_at is None:
                turn.first_sample_at = dac_at + filled / self.sample_rate_hz
            count = min(frames - filled, piece.samples.size - piece.position)
            out[filled : filled + count] = piece.samples[piece.position : piece.position + count]
            piece.position += count
            turn.played_samples += count
            filled += count
            if piece.position == piece.samples.size:
                queue.popleft()
        out[filled:] = 0.0
        if filled:
            self._last_sample_at = dac_at + filled / self.sample_rate_hz
        if had_audio and not queue:
            self._drained.set()

    def start(self) -> Speaker:
        """Start the output stream (it plays silence while the queue is empty)."""
        self._stream.start()
        return self

    def close(self) -> None:
        """Stop at once and release the device; queued audio is not played."""
        self._stream.abort()
        self._stream.close()

    def __enter__(self) -> Speaker:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def push(self, samples: np.ndarray, sample_rate_hz: int, turn_id: str = "", *, last: bool = False) -> None:
        """Queue mono float audio of one turn; consecutive pushes of a turn are resampled as one stream.

        Give `last=True` with the turn's final piece (or call `end_turn`) so the resampler's short tail plays.
        Audio of a turn that was cleared with `clear(turn_id)` is dropped here.
        """
        turn = self._turns.get(turn_id)
        if turn is None:
            turn = self._turns[turn_id] = TurnPlayback(turn_id, self.sample_rate_hz)
        if self._resampler is not None and self._resampler[:2] != (turn_id, sample_rate_hz):
            self._flush_resampler()
        if self._resampler is None:
            self._resampler = (turn_id, sample_rate_hz, Resampler(sample_rate_hz, self.sample_rate_hz))
        out = self._resampler[2].push(np.asarray(samples, np.float32).reshape(-1), last=last)
        if last:
            self._resampler = None
        self._enqueue(turn, out)

    def end_turn(self, turn_id: str = "") -> None:
        """The turn has no more audio: queue the resampler's held-back tail."""
        if self._resampler is not None and self._resampler[0] == turn_id:
            self._flush_resampler()

    def _flush_resampler(self) -> None:
        assert self._resampler is not None
        turn_id, _, resampler = self._resampler
        self._resampler = None
        self._enqueue(self._turns[turn_id], resampler.push(np.zeros(0, np.float32), last=True))

    def _enqueue(self, turn: TurnPlayback, samples: np.ndarray) -> None:
        if not samples.size:
            return
        if turn.cancelled:
            turn.dropped_samples += samples.size
            return
        turn.queued_samples += samples.size
        self._queue.append(_Piece(samples, turn, self._generation))

    def clear(self, turn_id: str | None = None) -> float:
        """Barge-in: drop queued audio at once (all, or one turn's, and that turn's later pushes too).

        The next callback plays silence instead. Returns the seconds of audio dropped (to within one block,
        since the callback may be playing as this runs).
        """
        if turn_id is None:
            self._generation += 1
            self._resampler = None
            stale = [p for p in self._queue.copy() if p.generation != self._generation]
        else:
            turn = self._turns.setdefault(turn_id, TurnPlayback(turn_id, self.sample_rate_hz))
            turn.cancelled = True
            if self._resampler is not None and self._resampler[0] == turn_id:
                self._resampler = None
            stale = [p for p in self._queue.copy() if p.turn is turn]
        return sum(p.samples.size - p.position for p in stale) / self.sample_rate_hz

    @property
    def playing(self) -> bool:
        """True while queued audio remains (stale pieces count until the next callback drops them)."""
        return bool(self._queue)

    def wait_drained(self, timeout_s: float | None = None) -> bool:
        """Wait until the queue is empty and its last sample has left the DAC; False on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            self._drained.clear()  # cleared before looking, so the callback's set after the look wakes us
            if not self._queue:
                break
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            self._drained.wait(remaining)
        time.sleep(max(0.0, self._last_sample_at - time.perf_counter()))
        return True

    def turn(self, turn_id: str = "") -> TurnPlayback | None:
        """The playback record of a turn (first sample time, samples played and dropped), if it was pushed."""
        return self._turns.get(turn_id)


def play(samples: np.ndarray, sample_rate_hz: int, device: str | int | None = None) -> None:
    """Play float32 mono audio to the end on an output device."""
    with Speaker(device).start() as speaker:
        speaker.push(samples, sample_rate_hz, last=True)
        speaker.wait_drained(timeout_s=samples.size / sample_rate_hz + 5.0)
