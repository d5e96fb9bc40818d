"""SynthesisService over real gRPC with the real engines: streaming, formats, cancel, and bad input."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest

from emoloop.services.synthesis.servicer import MAX_TEXT_CHARS, EngineSlots, SynthesisServicer
from emoloop.v1 import common_pb2, synthesis_pb2, synthesis_pb2_grpc
from tests.conftest import serving

LINEAR16 = common_pb2.AUDIO_ENCODING_LINEAR16


@pytest.fixture(scope="module")
def stub() -> Iterator[synthesis_pb2_grpc.SynthesisServiceStub]:
    with serving(SynthesisServicer()) as channel:
        yield synthesis_pb2_grpc.SynthesisServiceStub(channel)


def config(**fields: object) -> synthesis_pb2.SynthesisConfig:
    defaults = {"emotion": common_pb2.EMOTION_CALM, "turn_id": "turn-7"}
    return synthesis_pb2.SynthesisConfig(**{**defaults, **fields})


def stream(cfg: synthesis_pb2.SynthesisConfig, *pieces: str) -> Iterator[synthesis_pb2.StreamingSynthesizeRequest]:
    yield synthesis_pb2.StreamingSynthesizeRequest(config=cfg)
    for piece in pieces:
        yield synthesis_pb2.StreamingSynthesizeRequest(text=piece)


def pcm(chunks: list[synthesis_pb2.StreamingSynthesizeResponse]) -> np.ndarray:
    return np.concatenate([np.frombuffer(r.chunk.audio, dtype="<i2") for r in chunks]).astype(np.float32) / 32768


def test_text_streamed_word_by_word_comes_back_as_ordered_chunks(stub: synthesis_pb2_grpc.SynthesisServiceStub) -> None:
    words = ["I", "understand,", "let", "me", "help", "you", "with", "that", "right", "away."]
    responses = list(stub.StreamingSynthesize(stream(config(), *(w + " " for w in words)), timeout=60))
    assert [r.chunk.chunk_index for r in responses] == list(range(len(responses)))
    assert [r.is_final for r in responses] == [False] * (len(responses) - 1) + [True]
    assert all(r.turn_id == "turn-7" for r in responses)
    assert {r.audio_format.sample_rate_hz for r in responses} == {22050}  # the joe voice's own rate
    for before, after in itertools.pairwise(responses):  # contiguous timing
        assert after.chunk.start_ms == pytest.approx(before.chunk.start_ms + before.chunk.duration_ms)
    assert responses[0].chunk.text == "I understand,"  # the first phrase is cut short for early audio
    audio = pcm(responses)
    assert 1.5 < audio.size / 22050 < 6 and np.sqrt(np.mean(audio**2)) > 0.01


def test_audio_is_resampled_to_the_requested_rate_and_encoding(stub: synthesis_pb2_grpc.SynthesisServiceStub) -> None:
    fmt = common_pb2.AudioFormat(sample_rate_hz=16000, encoding=common_pb2.AUDIO_ENCODING_FLOAT32, channels=1)
    responses = list(stub.StreamingSynthesize(stream(config(audio_format=fmt), "Hello there."), timeout=60))
    audio = np.concatenate([np.frombuffer(r.chunk.audio, dtype="<f4") for r in responses])
    total_ms = sum(r.chunk.duration_ms for r in responses)
    assert audio.size == pytest.approx(total_ms * 16, abs=1)
    assert np.all(np.isfinite(audio)) and np.abs(audio).max() <= 1.0


def test_unary_synthesize_returns_the_whole_clip(stub: synthesis_pb2_grpc.SynthesisServiceStub) -> None:
    reply = stub.Synthesize(
        synthesis_pb2.SynthesizeRequest(config=config(engine="espeak"), text="Good morning."), timeout=60
    )
    assert reply.audio_format.sample_rate_hz == 22050 and reply.audio_format.encoding == LINEAR16
    assert len(reply.audio) / 2 == pytest.approx(reply.duration_ms * 22.05, abs=1)
    assert reply.turn_id == "turn-7"


def test_list_voices_names_engines_emotions_and_licences(stub: synthesis_pb2_grpc.SynthesisServiceStub) -> None:
    reply = stub.ListVoices(synthesis_pb2.ListVoicesRequest(), timeout=10)
    assert reply.default_engine == "piper"
    by_name = {(v.engine, v.name): v for v in reply.voices}
    joe = by_name[("piper", "en_US-joe-medium")]
    assert list(joe.emotions) == list(range(1, 7)) and joe.license
    assert ("espeak", "en-us") in by_name


def test_a_cancelled_stream_stops_the_work_on_the_server(
    stub: synthesis_pb2_grpc.SynthesisServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    long_text = " ".join(["This sentence keeps the synthesiser busy for a good while."] * 20)
    call = stub.StreamingSynthesize(stream(config(turn_id="barge-in"), long_text), timeout=60)
    with caplog.at_level(logging.INFO, logger="emoloop.synthesis"):
        first = next(call)
        assert first.chunk.chunk_index == 0
        call.cancel()
        deadline = time.monotonic() + 10
        while "event=cancelled turn_id='barge-in'" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
    assert "event=cancelled turn_id='barge-in'" in caplog.text
    with pytest.raises(grpc.RpcError) as caught:
        next(call)
    assert caught.value.code() == grpc.StatusCode.CANCELLED


BAD_STREAMS = [
    ("not-config-first", [synthesis_pb2.StreamingSynthesizeRequest(text="hi")], "config"),
    ("empty-stream", [], "config"),
    (
        "second-config",
        [*list(stream(config(), "Hi.")), synthesis_pb2.StreamingSynthesizeRequest(config=config())],
        "text",
    ),
    ("unknown-emotion", list(stream(config(emotion=42), "Hi.")), "config.emotion"),
    ("unknown-engine", list(stream(config(engine="festival"), "Hi.")), "config.engine"),
    ("unknown-voice", list(stream(config(voice="nobody"), "Hi.")), "config.voice"),
    (
        "rate-not-offered",
        list(stream(config(audio_format=common_pb2.AudioFormat(sample_rate_hz=12345)), "Hi.")),
        "config.audio_format.sample_rate_hz",
    ),
    (
        "stereo",
        list(stream(config(audio_format=common_pb2.AudioFormat(channels=2)), "Hi.")),
        "config.audio_format.channels",
    ),
    (
        "bad-encoding",
        list(stream(config(audio_format=common_pb2.AudioFormat(encoding=9)), "Hi.")),
        "config.audio_format.encoding",
    ),
    ("no-text", list(stream(config())), "text"),
    ("only-punctuation", list(stream(config(), "... !")), "text"),
    ("control-character", list(stream(config(), "Hi \x07 there.")), "text"),
    ("ssml", list(stream(config(), '<speak><prosody rate="fast">Hi</prosody></speak>')), "text"),
    ("over-the-limit", list(stream(config(), "a " * (MAX_TEXT_CHARS // 2), "b " * 10)), "text"),
    ("long-turn-id", list(stream(config(turn_id="x" * 500), "Hi.")), "config.turn_id"),
]


@pytest.mark.parametrize(("requests", "field"), [b[1:] for b in BAD_STREAMS], ids=[b[0] for b in BAD_STREAMS])
def test_bad_streams_get_invalid_argument_naming_the_field(
    stub: synthesis_pb2_grpc.SynthesisServiceStub, requests: list, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamingSynthesize(iter(requests), timeout=60))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:"), caught.value.details()
    # ... and the service lives on.
    assert list(stub.StreamingSynthesize(stream(config(engine="espeak"), "Still here."), timeout=60))


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (synthesis_pb2.SynthesizeRequest(config=config(), text=""), "text"),
        (synthesis_pb2.SynthesizeRequest(config=config(), text="x" * (MAX_TEXT_CHARS + 1)), "text"),
        (synthesis_pb2.SynthesizeRequest(config=config(emotion=-1), text="Hi."), "config.emotion"),
        (synthesis_pb2.SynthesizeRequest(config=config(), text="<break time='1s'/>"), "text"),
    ],
)
def test_bad_unary_requests_get_invalid_argument_naming_the_field(
    stub: synthesis_pb2_grpc.SynthesisServiceStub, request_: synthesis_pb2.SynthesizeRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Synthesize(request_, timeout=60)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:"), caught.value.details()


def test_angle_brackets_in_plain_text_are_spoken_not_refused(stub: synthesis_pb2_grpc.SynthesisServiceStub) -> None:
    request = synthesis_pb2.SynthesizeRequest(config=config(engine="espeak"), text="Two < three, and five > four.")
    assert stub.Synthesize(request, timeout=60).duration_ms > 500


def test_engine_slots_let_only_n_runs_compute_at_once() -> None:
    slots, running, most = EngineSlots(2), [0], [0]
    lock = threading.Lock()

    def engine() -> Iterator[int]:
        for i in range(5):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.01)
            with lock:
                running[0] -= 1
            yield i

    threads = [threading.Thread(target=lambda: list(slots.computed(engine()))) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert most[0] == 2


def test_a_call_waiting_for_its_text_or_its_reader_holds_no_engine_slot() -> None:
    """With one slot, a stream whose client has not sent its text yet, and one whose client stopped reading, do
    not keep a third call from being spoken."""
    with serving(SynthesisServicer(engines=["espeak"], default_engine="espeak", max_engine_runs=1)) as channel:
        stub = synthesis_pb2_grpc.SynthesisServiceStub(channel)
        text_sent = threading.Event()

        def late_text() -> Iterator[synthesis_pb2.StreamingSynthesizeRequest]:
            yield synthesis_pb2.StreamingSynthesizeRequest(config=config())
            text_sent.wait(30)
            yield synthesis_pb2.StreamingSynthesizeRequest(text="Now I have something to say.")

        waiting_for_text = stub.StreamingSynthesize(late_text(), timeout=60)
        stalled_reader = stub.StreamingSynthesize(stream(config(), "Long answer. " * 300), timeout=60)
        next(stalled_reader)  # then never read again
        time.sleep(0.3)

        reply = stub.Synthesize(synthesis_pb2.SynthesizeRequest(config=config(), text="Good morning."), timeout=10)

        assert reply.duration_ms > 300
        text_sent.set()
        assert pcm(list(waiting_for_text)).size > 0
        stalled_reader.cancel()


def test_engine_slots_need_at_least_one() -> None:
    with pytest.raises(ValueError, match="max_engine_runs"):
        EngineSlots(0)
