"""The audio device layer, specified through a real PortAudio path: JACK's dummy driver with output looped to input."""

from __future__ import annotations

import itertools
import sys
import time

import numpy as np
import pytest
from scipy.signal import resample_poly

from emoloop.client import audio
from emoloop.client.audio import BLOCK_SAMPLES, SAMPLE_RATE_HZ, Microphone, Resampler, Speaker

from .conftest import JackServer

SILENCE = 1e-4


def tone(frequency_hz: float, seconds: float, sample_rate_hz: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate_hz)) / sample_rate_hz
    return (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def peak_frequency(samples: np.ndarray, sample_rate_hz: int) -> float:
    """The strongest frequency, refined between FFT bins by a parabola through the log magnitudes."""
    size = 8 * samples.size
    spectrum = np.log(np.abs(np.fft.rfft(samples * np.hanning(samples.size), size)) + 1e-12)
    k = int(np.argmax(spectrum[1:-1])) + 1
    a, b, c = spectrum[k - 1 : k + 2]
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * sample_rate_hz / size


def sine_residual(samples: np.ndarray, frequency_hz: float, sample_rate_hz: int) -> float:
    """RMS of what a least-squares sinusoid at this frequency does not explain: clicks at seams show up here."""
    t = np.arange(samples.size) / sample_rate_hz
    basis = np.stack([np.sin(2 * np.pi * frequency_hz * t), np.cos(2 * np.pi * frequency_hz * t)], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, samples, rcond=None)
    return float(np.sqrt(np.mean((samples - basis @ coefficients) ** 2)))


def capture(mic: Microphone, seconds: float) -> tuple[np.ndarray, list[float]]:
    """Read blocks for a while; return them joined and the perf_counter time each block was returned."""
    blocks, times = [], []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        block = mic.read(timeout_s=1.0)
        assert block is not None, "the microphone stopped delivering blocks"
        assert block.shape == (BLOCK_SAMPLES,) and block.dtype == np.float32
        blocks.append(block)
        times.append(time.perf_counter())
    return np.concatenate(blocks), times


def test_device_listing_includes_the_jack_devices(jack: JackServer) -> None:
    devices = audio.list_devices()
    jack_devices = [d for d in devices if d.host_api.startswith("JACK")]
    assert jack_devices, devices
    device = jack_devices[0]
    assert device.max_input_channels >= 1 and device.max_output_channels >= 1
    assert device.default_sample_rate_hz == 16_000
    assert any(d.is_default_input for d in devices) and any(d.is_default_output for d in devices)


def test_an_unknown_device_name_raises_value_error_naming_the_devices(jack: JackServer) -> None:
    with pytest.raises(ValueError, match="no-such-microphone") as raised:
        Microphone("no-such-microphone")
    assert "system" in str(raised.value) and "JACK" in str(raised.value)
    with pytest.raises(ValueError, match="host API 'no-such-api'"):
        Speaker(host_api="no-such-api")


def test_a_tone_played_comes_back_through_the_microphone_in_512_sample_blocks(jack: JackServer) -> None:
    with Microphone(host_api="JACK") as mic, Speaker(host_api="JACK") as speaker:
        assert mic.device_rate_hz == speaker.sample_rate_hz == SAMPLE_RATE_HZ
        mic.start()
        speaker.start()
        jack.loopback()
        capture(mic, 0.2)  # let the streams settle; the loopback carries only silence so far
        pushed_at = time.perf_counter()
        speaker.push(tone(440, 0.6, 22_050), 22_050, turn_id="t1", last=True)  # resampled to the device's 16 kHz
        captured, times = capture(mic, 1.0)
    onset = int(np.argmax(np.abs(captured) > 0.01))
    assert onset > 0, "no tone came back"
    heard = captured[onset : onset + round(0.6 * SAMPLE_RATE_HZ)]
    assert peak_frequency(heard[800:-800], SAMPLE_RATE_HZ) == pytest.approx(440, abs=1.0)
    # When the block holding the onset was read, the onset had happened (block end - onset) samples earlier.
    block = onset // BLOCK_SAMPLES
    heard_at = times[block] - (BLOCK_SAMPLES * (block + 1) - onset) / SAMPLE_RATE_HZ
    turn = speaker.turn("t1")
    assert turn is not None and turn.first_sample_at is not None and not turn.interrupted
    print(
        f"loopback latency: push -> onset captured {1000 * (heard_at - pushed_at):.0f} ms; "
        f"push -> first sample at the DAC (reported) {1000 * (turn.first_sample_at - pushed_at):.0f} ms"
    )
    # The reported time includes the playback latency of JACK's (dummy) hardware port, which the loopback
    # bypasses, so it can come after the loopback's capture; both must be well inside the loop's budget.
    assert pushed_at < turn.first_sample_at < pushed_at + 0.1
    assert pushed_at < heard_at < pushed_at + 0.1


def test_the_microphone_resamples_a_48_khz_device_to_16_khz_keeping_the_frequency(jack48: JackServer) -> None:
    with Microphone(host_api="JACK") as mic, Speaker(host_api="JACK", block_ms=20) as speaker:
        assert mic.device_rate_hz == speaker.sample_rate_hz == 48_000
        mic.start()
        speaker.start()
        jack48.loopback()
        speaker.push(tone(1000, 0.8, 48_000), 48_000, last=True)
        captured, _ = capture(mic, 1.0)
    loud = np.flatnonzero(np.abs(captured) > 0.01)
    assert loud.size, "no tone came back"
    steady = captured[loud[0] + 400 : loud[-1] - 400]  # away from the tone's own start and end
    assert steady.size > 0.6 * SAMPLE_RATE_HZ
    assert peak_frequency(steady, SAMPLE_RATE_HZ) == pytest.approx(1000, abs=1.0)
    assert sine_residual(steady, 1000, SAMPLE_RATE_HZ) < 0.005  # no clicks at block seams (amplitude 0.5)


def test_clear_during_playback_silences_the_loopback_within_two_output_blocks(jack: JackServer) -> None:
    with Microphone(host_api="JACK") as mic, Speaker(host_api="JACK", block_ms=20) as speaker:
        mic.start()
        speaker.start()
        jack.loopback()
        speaker.push(tone(440, 3.0, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ, turn_id="answer", last=True)
        before, _ = capture(mic, 0.4)
        turn = speaker.turn("answer")
        assert turn is not None
        played_at_clear = turn.played_samples
        dropped_s = speaker.clear()
        assert speaker.wait_drained(timeout_s=0.2)
        after, _ = capture(mic, 0.4)
    assert 2.0 < dropped_s < 2.7
    assert turn.interrupted and turn.played_samples - played_at_clear <= 2 * speaker.block_samples
    heard = np.flatnonzero(np.abs(np.concatenate([before, after])) > SILENCE)
    assert heard.size and before.size < heard[-1] + 1  # the tone was still playing when clear() was called
    assert heard[-1] - heard[0] + 1 <= played_at_clear + 2 * speaker.block_samples
    assert np.abs(after[-round(0.2 * SAMPLE_RATE_HZ) :]).max() < SILENCE


def test_a_cancelled_turn_drops_its_late_audio_and_the_next_turn_plays(jack: JackServer) -> None:
    with Speaker(host_api="JACK") as speaker:
        speaker.start()
        speaker.push(tone(440, 1.0, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ, turn_id="old")
        assert speaker.clear(turn_id="old") > 0.9
        speaker.push(tone(440, 0.5, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ, turn_id="old", last=True)  # late audio
        speaker.push(tone(440, 0.1, SAMPLE_RATE_HZ), SAMPLE_RATE_HZ, turn_id="new", last=True)
        assert speaker.wait_drained(timeout_s=2.0)
    old, new = speaker.turn("old"), speaker.turn("new")
    assert old is not None and new is not None
    assert old.played_samples < 2 * speaker.block_samples and old.dropped_samples >= 1.4 * SAMPLE_RATE_HZ
    assert new.played_samples == new.queued_samples == round(0.1 * SAMPLE_RATE_HZ) and not new.interrupted


def test_a_slow_consumer_gets_counted_overruns_not_a_stuck_callback(jack: JackServer) -> None:
    with Microphone(host_api="JACK", buffer_s=0.1) as mic:
        mic.start()
        time.sleep(0.5)  # a consumer that does not read: the ring (0.1 s) fills after 0.1 s
        assert mic.overruns > 0 and mic.dropped_samples >= 0.3 * SAMPLE_RATE_HZ
        started = time.perf_counter()
        assert mic.read(timeout_s=1.0) is not None  # the stream goes on and reading catches up at once
        assert time.perf_counter() - started < 0.1


def test_play_returns_when_the_clip_has_been_heard(jack: JackServer) -> None:
    started = time.perf_counter()
    audio.play(tone(440, 0.3, 24_000), 24_000, device="system")
    assert 0.3 <= time.perf_counter() - started < 1.5


def test_output_blocks_longer_than_40_ms_are_refused(jack: JackServer) -> None:
    with pytest.raises(ValueError, match="block_ms"):
        Speaker(host_api="JACK", block_ms=60)


@pytest.mark.parametrize(("from_hz", "to_hz"), [(48_000, 16_000), (22_050, 16_000), (24_000, 48_000)])
def test_streamed_resampling_equals_resampling_the_whole_signal(from_hz: int, to_hz: int) -> None:
    signal = np.random.default_rng(0).standard_normal(from_hz // 2).astype(np.float32)
    resampler = Resampler(from_hz, to_hz)
    edges = [0, 1, 7, 480, 481, 2000, 5000, signal.size]
    pieces = [resampler.push(signal[a:b], last=b == signal.size) for a, b in itertools.pairwise(edges)]
    whole = resample_poly(signal, resampler.up, resampler.down).astype(np.float32)
    np.testing.assert_allclose(np.concatenate(pieces), whole, atol=1e-5)


def test_missing_portaudio_is_a_runtime_error_saying_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # importing it now fails as without PortAudio
    with pytest.raises(RuntimeError, match="apt-get install libportaudio2"):
        audio.list_devices()
