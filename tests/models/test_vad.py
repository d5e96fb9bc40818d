"""Endpointing: Silero VAD speech probabilities become one start and one end event per spoken utterance.

Speech is synthesised offline with the espeak-ng library shipped by the `espeakng-loader` wheel (through the
project's own binding), so the model hears real phonetic structure, not tones.
"""

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from emoloop.models.audio import resample
from emoloop.models.tts import espeak_lib
from emoloop.models.vad import (
    BLOCK_SAMPLES,
    SAMPLE_RATE,
    Endpointer,
    SileroVad,
    SpeechStart,
    UtteranceEnd,
    VadConfig,
    packaged_model_path,
)

BOUND_TOLERANCE_MS = 150
SPEECH_LEVEL = 0.01  # |sample| above this (-40 dBFS) counts as the true extent of the synthesised speech


def silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * SAMPLE_RATE), np.float32)


@pytest.fixture(scope="module")
def espeak():
    """The project's espeak-ng binding: the library has global state, so there must be only one."""
    return espeak_lib.espeak()


def synthesise(engine, text: str) -> np.ndarray:
    """Speak `text` with espeak-ng, resample to 16 kHz and trim to the samples above SPEECH_LEVEL."""
    speech = resample(engine.synthesize(text, "en-us", {}), engine.sample_rate_hz, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(speech) > SPEECH_LEVEL)
    return speech[loud[0] : loud[-1] + 1]


@pytest.fixture(scope="module")
def sentence(espeak) -> np.ndarray:
    return synthesise(espeak, "I have been waiting here for almost an hour, and nobody told me anything.")


@pytest.fixture(scope="module")
def model() -> SileroVad:
    return SileroVad()


@pytest.fixture(scope="module")
def config() -> VadConfig:
    return VadConfig.load()


def run(endpointer: Endpointer, audio: np.ndarray, chunk: int = BLOCK_SAMPLES) -> list:
    events = []
    for start in range(0, audio.size, chunk):
        events += endpointer.push(audio[start : start + chunk])
    return events + endpointer.flush()


def ms(samples: int) -> float:
    return samples * 1000 / SAMPLE_RATE


def test_silence_gives_no_speech(model, config):
    endpointer = Endpointer(model, config)
    assert run(endpointer, silence(3.0)) == []
    assert endpointer.speech_probability < config.end_threshold


def test_speech_in_silence_is_one_utterance_with_accurate_bounds(model, config, sentence):
    lead = silence(1.0)
    events = run(Endpointer(model, config), np.concatenate([lead, sentence, silence(1.5)]))

    assert [type(e) for e in events] == [SpeechStart, UtteranceEnd]
    start, end = events
    true_start, true_end = ms(lead.size), ms(lead.size + sentence.size)
    assert end.reason == "silence" and end.start_ms == start.start_ms
    assert abs(start.start_ms - true_start) <= BOUND_TOLERANCE_MS
    assert abs(end.end_ms - true_end) <= BOUND_TOLERANCE_MS
    # SpeechStart waits for min_speech_ms of speech; the end waits for min_silence_ms of silence, plus at most
    # a few blocks for the model's probability to fall.
    assert start.decided_ms - start.start_ms >= config.min_speech_ms
    assert config.min_silence_ms <= end.decided_ms - true_end <= config.min_silence_ms + BOUND_TOLERANCE_MS


def test_two_utterances_one_second_apart_are_two(model, config, sentence):
    audio = np.concatenate([silence(0.5), sentence, silence(1.0), sentence, silence(1.0)])
    events = run(Endpointer(model, config), audio)
    ends = [e for e in events if isinstance(e, UtteranceEnd)]
    assert [type(e) for e in events] == [SpeechStart, UtteranceEnd] * 2
    assert ends[0].end_ms < ends[1].start_ms
    assert abs(ends[1].start_ms - ms(silence(1.5).size + sentence.size)) <= BOUND_TOLERANCE_MS


def test_blip_shorter_than_min_speech_gives_nothing(model, config, sentence):
    blip = sentence[SAMPLE_RATE // 2 : SAMPLE_RATE // 2 + round(0.12 * SAMPLE_RATE)] * np.hanning(
        round(0.12 * SAMPLE_RATE)
    ).astype(np.float32)
    endpointer = Endpointer(model, config)
    audio = np.concatenate([silence(1.0), blip, silence(1.0)])
    peak, events = 0.0, []
    for start in range(0, audio.size, BLOCK_SAMPLES):
        events += endpointer.push(audio[start : start + BLOCK_SAMPLES])
        peak = max(peak, endpointer.speech_probability)
    assert peak >= config.start_threshold, "the blip must look like speech, or this test proves nothing"
    assert events + endpointer.flush() == []


def test_white_noise_at_moderate_level_gives_no_utterance(model, config):
    noise = (0.05 * np.random.default_rng(7).standard_normal(4 * SAMPLE_RATE)).astype(np.float32)  # -26 dBFS
    assert run(Endpointer(model, config), noise) == []


@pytest.mark.parametrize(
    "audio, message",
    [
        (np.array([0.0, np.nan] * 256, np.float32), "NaN"),
        (np.zeros(512, np.int16), "float32"),
        (np.zeros(512, np.float64), "float32"),
        (np.zeros((2, 512), np.float32), "1-D"),
        ([0.0] * 512, "numpy array"),
    ],
    ids=["nan", "int16", "float64", "2-D", "list"],
)
def test_bad_input_is_refused_clearly(model, config, audio, message):
    with pytest.raises(ValueError, match=message):
        Endpointer(model, config).push(audio)


def test_streams_sharing_one_model_do_not_disturb_each_other(model, config, sentence):
    """Interleaved pushes in odd chunk sizes give the same events as each stream run alone in whole blocks."""
    first = np.concatenate([silence(0.7), sentence, silence(1.0)])
    second = np.concatenate([silence(1.6), sentence[: sentence.size // 2], silence(0.8), sentence, silence(0.6)])
    alone = [run(Endpointer(model, config), audio) for audio in (first, second)]

    endpointers = [Endpointer(model, config), Endpointer(model, config)]
    interleaved: list[list] = [[], []]
    for start in range(0, max(first.size, second.size), 320):
        for index, audio in enumerate((first, second)):
            interleaved[index] += endpointers[index].push(audio[start : start + 320])
    interleaved = [events + endpointer.flush() for events, endpointer in zip(interleaved, endpointers, strict=True)]

    assert alone[0] != alone[1]
    assert interleaved == alone


def test_flush_ends_an_open_utterance(model, config, sentence):
    endpointer = Endpointer(model, config)
    events = endpointer.push(np.concatenate([silence(0.5), sentence]))
    assert [type(e) for e in events] == [SpeechStart] and endpointer.in_speech
    (end,) = endpointer.flush()
    assert end.reason == "flush" and end.end_ms <= end.decided_ms
    assert not endpointer.in_speech


def test_long_speech_is_cut_at_max_utterance(model, config, sentence):
    short = dataclasses.replace(config, max_utterance_s=1.0)
    events = run(Endpointer(model, short), np.concatenate([silence(0.5), sentence, silence(1.0)]))
    ends = [e for e in events if isinstance(e, UtteranceEnd)]
    assert ends[0].reason == "max_length"
    assert ends[0].end_ms - ends[0].start_ms <= 1000 + config.speech_pad_ms + ms(BLOCK_SAMPLES)
    assert [type(e) for e in events] == [SpeechStart, UtteranceEnd] * len(ends)
    assert all(before.end_ms <= after.start_ms for before, after in itertools.pairwise(ends))


def test_model_loads_from_an_explicit_path_and_refuses_other_models():
    path = packaged_model_path()
    assert SileroVad(Path(path)).path == path
    with pytest.raises(ValueError, match="not a Silero VAD v5/v6 model"):
        SileroVad(packaged_model_path("silero_vad_half.onnx"))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"end_threshold": 0.6}, "end_threshold <= start_threshold"),
        ({"speech_pad_ms": 500}, "must not exceed min_silence_ms"),
        ({"min_silence_ms": 0}, "min_silence_ms > 0"),
    ],
)
def test_inconsistent_thresholds_are_refused(config, change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(config, **change)


def test_config_file_must_name_every_threshold(tmp_path):
    path = tmp_path / "vad.toml"
    path.write_text("[endpointing]\nstart_threshold = 0.5\nspeed = 2\n")
    with pytest.raises(ValueError, match=r"missing \['end_threshold'.*unknown \['speed'\]"):
        VadConfig.load(path)
