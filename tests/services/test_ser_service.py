"""EmotionRecognitionService over real gRPC: utterances from a stream, whole clips, and bad input.

The service runs a small untrained checkpoint that the tests make: these tests specify the protocol, the
endpointing and the error handling; the shipped model's accuracy is measured by training and the benchmark.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from emoloop.models.audio import resample
from emoloop.models.features import FeatureConfig
from emoloop.models.tts import espeak_lib
from emoloop.models.vad import DEFAULT_CONFIG as DEFAULT_VAD_CONFIG
from emoloop.services.ser.servicer import SerServicer
from emoloop.v1 import common_pb2, ser_pb2, ser_pb2_grpc
from tests.conftest import serving
from tests.models.test_ser import save_tiny_checkpoint

RATE = 16000
EMOTION_FIELDS = ("neutral", "calm", "happy", "sad", "angry", "fearful")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("ser"))


@pytest.fixture(scope="module")
def stub(checkpoint: Path) -> Iterator[ser_pb2_grpc.EmotionRecognitionServiceStub]:
    with serving(SerServicer(checkpoint, max_stream_s=30)) as channel:
        yield ser_pb2_grpc.EmotionRecognitionServiceStub(channel)


def speech(text: str) -> np.ndarray:
    engine = espeak_lib.espeak()
    return resample(engine.synthesize(text, "en-us", {}), engine.sample_rate_hz, RATE)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.float32)


def linear16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def config(interim: bool = False, rate: int = RATE, **fields: object) -> ser_pb2.StreamingRecognizeRequest:
    audio_format = common_pb2.AudioFormat(sample_rate_hz=rate, encoding=common_pb2.AUDIO_ENCODING_LINEAR16, channels=1)
    return ser_pb2.StreamingRecognizeRequest(
        config=ser_pb2.RecognitionConfig(audio_format=audio_format, interim_results=interim, **fields)
    )


def blocks(audio: np.ndarray, size: int = 512) -> Iterator[ser_pb2.StreamingRecognizeRequest]:
    for start in range(0, audio.size, size):
        yield ser_pb2.StreamingRecognizeRequest(audio=linear16(audio[start : start + size]))


@pytest.fixture(scope="module")
def two_sentences() -> tuple[np.ndarray, list[tuple[float, float]]]:
    first, second = speech("I have been waiting here for an hour."), speech("Nobody told me anything at all.")
    parts = [silence(0.5), first, silence(1.2), second, silence(0.8)]
    audio = np.concatenate(parts)
    t0 = 0.5
    bounds = [(t0, t0 + first.size / RATE), (t0 + (first.size + 1.2 * RATE) / RATE, (audio.size - 0.8 * RATE) / RATE)]
    return audio, [(a * 1000, b * 1000) for a, b in bounds]


def test_a_stream_gets_one_result_per_utterance_with_bounds_scores_and_statistics(
    stub: ser_pb2_grpc.EmotionRecognitionServiceStub, two_sentences: tuple[np.ndarray, list]
) -> None:
    audio, bounds = two_sentences
    requests = [config(session_id="s-1"), *blocks(audio)]
    responses = list(stub.StreamingRecognize(iter(requests), timeout=60))
    utterances = [r.utterance for r in responses if r.WhichOneof("result") == "utterance"]
    assert [u.utterance_index for u in utterances] == [0, 1]
    for utterance, (start_ms, end_ms) in zip(utterances, bounds, strict=True):
        assert abs(utterance.start_ms - start_ms) < 150 and abs(utterance.end_ms - end_ms) < 200
        scores = [getattr(utterance.scores, name) for name in EMOTION_FIELDS]
        assert sum(scores) == pytest.approx(1, abs=1e-4)
        assert utterance.emotion == int(np.argmax(scores)) + 1
        assert utterance.confidence == pytest.approx(max(scores), abs=1e-6)
        assert utterance.statistics.frame_count == pytest.approx((utterance.end_ms - utterance.start_ms) / 10, abs=2)
    assert all(r.session_id == "s-1" for r in responses)
    assert all(r.WhichOneof("result") != "interim" for r in responses)  # not asked for


def test_interim_results_follow_the_stream_and_flag_speech(
    stub: ser_pb2_grpc.EmotionRecognitionServiceStub, two_sentences: tuple[np.ndarray, list]
) -> None:
    audio, _ = two_sentences
    responses = list(stub.StreamingRecognize(iter([config(interim=True), *blocks(audio)]), timeout=60))
    interims = [r for r in responses if r.WhichOneof("result") == "interim"]
    assert len(interims) > audio.size / RATE * 10  # about one every 60 ms of audio
    processed = [r.audio_processed_ms for r in responses]
    assert processed == sorted(processed) and audio.size / 16 - 100 < processed[-1] <= audio.size / 16
    assert any(r.interim.is_speech for r in interims) and not interims[0].interim.is_speech


def test_a_stream_that_ends_inside_speech_still_gets_its_utterance(
    stub: ser_pb2_grpc.EmotionRecognitionServiceStub,
) -> None:
    audio = np.concatenate([silence(0.3), speech("This stream is cut off in the middle of a sentence")])
    responses = list(stub.StreamingRecognize(iter([config(), *blocks(audio, 1000)]), timeout=60))
    assert [r.utterance.utterance_index for r in responses if r.WhichOneof("result") == "utterance"] == [0]


def test_an_utterance_ended_before_its_last_features_exist_waits_for_them(
    tmp_path: Path, two_sentences: tuple[np.ndarray, list]
) -> None:
    """A max-length cut ends an utterance at the newest audio, while swift-f0's features trail it by ~160 ms:
    the result comes once those rows are in and counts every frame of the utterance."""
    vad = tmp_path / "vad.toml"
    vad.write_text(DEFAULT_VAD_CONFIG.read_text().replace("max_utterance_s = 20.0", "max_utterance_s = 1.0"))
    checkpoint = save_tiny_checkpoint(tmp_path, feature_config=FeatureConfig(f0_tracker="swift-f0"))
    audio, _ = two_sentences
    with serving(SerServicer(checkpoint, vad_config=vad)) as channel:
        stub = ser_pb2_grpc.EmotionRecognitionServiceStub(channel)
        responses = list(stub.StreamingRecognize(iter([config(), *blocks(audio)]), timeout=60))
    utterances = [r.utterance for r in responses if r.WhichOneof("result") == "utterance"]
    assert len(utterances) >= 4  # each sentence is cut at least once
    taken = 0  # frames are 10 ms; an utterance has every frame it touches that the one before did not take
    for utterance in utterances:
        end = math.ceil(utterance.end_ms / 10)
        assert utterance.statistics.frame_count == end - max(taken, math.floor(utterance.start_ms / 10))
        taken = end


def test_recognize_classifies_a_whole_clip(stub: ser_pb2_grpc.EmotionRecognitionServiceStub) -> None:
    clip = speech("What a wonderful surprise.")
    request = ser_pb2.RecognizeRequest(config=config().config, audio=linear16(clip))
    result = stub.Recognize(request, timeout=60).result
    assert result.end_ms == pytest.approx(clip.size / 16) and result.start_ms == 0
    assert sum(getattr(result.scores, n) for n in EMOTION_FIELDS) == pytest.approx(1, abs=1e-4)


def float32(samples: np.ndarray) -> bytes:
    return samples.astype("<f4").tobytes()


FLOAT_CONFIG = ser_pb2.StreamingRecognizeRequest(
    config=ser_pb2.RecognitionConfig(
        audio_format=common_pb2.AudioFormat(sample_rate_hz=RATE, encoding=common_pb2.AUDIO_ENCODING_FLOAT32)
    )
)
BAD_STREAMS = [
    ("audio-before-config", [ser_pb2.StreamingRecognizeRequest(audio=b"\x00\x00")], "config"),
    ("no-messages", [], "config"),
    ("wrong-sample-rate", [config(rate=8000)], "config.audio_format.sample_rate_hz"),
    ("absurd-sample-rate", [config(rate=-5)], "config.audio_format.sample_rate_hz"),
    (
        "stereo",
        [
            ser_pb2.StreamingRecognizeRequest(
                config=ser_pb2.RecognitionConfig(audio_format=common_pb2.AudioFormat(sample_rate_hz=RATE, channels=2))
            )
        ],
        "config.audio_format.channels",
    ),
    ("odd-bytes", [config(), ser_pb2.StreamingRecognizeRequest(audio=b"\x00\x01\x02")], "audio"),
    ("nan-float32", [FLOAT_CONFIG, ser_pb2.StreamingRecognizeRequest(audio=float32(np.array([0.1, np.nan])))], "audio"),
    ("empty-audio", [config(), ser_pb2.StreamingRecognizeRequest(audio=b"")], "audio"),
    ("chunk-too-big", [config(), ser_pb2.StreamingRecognizeRequest(audio=linear16(silence(1.5)))], "audio"),
    ("second-config", [config(), *blocks(silence(0.1)), config()], "audio"),
    ("over-max-duration", [config(), *blocks(silence(31), 16000)], "audio"),
    ("long-session-id", [config(session_id="x" * 500)], "config.session_id"),
]


@pytest.mark.parametrize(("requests", "field"), [b[1:] for b in BAD_STREAMS], ids=[b[0] for b in BAD_STREAMS])
def test_bad_streams_get_invalid_argument_naming_the_field(
    stub: ser_pb2_grpc.EmotionRecognitionServiceStub, requests: list, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamingRecognize(iter(requests), timeout=60))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:"), caught.value.details()


@pytest.mark.parametrize(
    ("audio", "field"),
    [(b"", "audio"), (linear16(silence(0.01)), "audio"), (linear16(silence(61)), "audio"), (b"\x01", "audio")],
    ids=["empty", "too-short", "too-long", "odd-bytes"],
)
def test_bad_clips_get_invalid_argument(
    stub: ser_pb2_grpc.EmotionRecognitionServiceStub, audio: bytes, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Recognize(ser_pb2.RecognizeRequest(config=config().config, audio=audio), timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:")


def test_a_bad_stream_does_not_disturb_a_good_one_running_beside_it(
    stub: ser_pb2_grpc.EmotionRecognitionServiceStub, two_sentences: tuple[np.ndarray, list]
) -> None:
    audio, _ = two_sentences
    feed: queue.Queue = queue.Queue()
    feed.put(config())
    good = stub.StreamingRecognize(iter(feed.get, None), timeout=60)
    results: list = []
    reader = threading.Thread(target=lambda: results.extend(good))
    reader.start()
    chunks = list(blocks(audio))
    for chunk in chunks[: len(chunks) // 2]:
        feed.put(chunk)
    with pytest.raises(grpc.RpcError):
        list(stub.StreamingRecognize(iter([config(rate=44100)]), timeout=60))
    for chunk in chunks[len(chunks) // 2 :]:
        feed.put(chunk)
    feed.put(None)
    reader.join(60)
    assert [r.utterance.utterance_index for r in results if r.WhichOneof("result") == "utterance"] == [0, 1]


def test_a_missing_checkpoint_stops_the_service_at_start_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="make train-ser"):
        SerServicer(tmp_path / "none.pt").load()
