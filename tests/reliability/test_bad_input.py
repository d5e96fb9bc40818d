"""Bad input against every RPC: fuzzed and hand-picked, at the message level and as raw bytes on the wire.

Whatever arrives, the caller gets a clear status — OK when the input happens to be valid, INVALID_ARGUMENT
naming the field, or RESOURCE_EXHAUSTED — within its deadline, and the service answers SERVING afterwards.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emoloop.v1 import common_pb2, policy_pb2, ser_pb2, synthesis_pb2
from tests.reliability.conftest import (
    BAD_INPUTS,
    MAX_STREAM_S,
    Stubs,
    assert_all_serving,
    observation,
    silence_bytes,
    synthesis_stream,
)

TIMEOUT_S = 20.0
FUZZ = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,  # the same inputs on every run, so that a failure reproduces
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
INT32 = st.integers(-(2**31), 2**31 - 1)
SAMPLE_RATES = st.sampled_from([0, -1, 1, 8000, 16000, 22050, 44100, 2**31 - 1, -(2**31)]) | INT32
ENCODINGS = st.sampled_from([0, 1, 2, 3, -1, 2**31 - 1]) | INT32
EMOTIONS = st.sampled_from([0, 1, 6, 7, -1, 2**31 - 1]) | INT32
SSML = [
    "<speak>Hello</speak>",
    'Hello <break time="3s"/> there',
    "<prosody rate='x-slow'>slow</prosody>",
    "&lt;speak&gt;escaped&lt;/speak&gt;",
    "<?xml version='1.0'?><speak/>",
    "<!-- comment --> text",
    "5 < 6 and 7 > 3",
]
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=120) | st.sampled_from(SSML)
"""Any Unicode protobuf can carry (no lone surrogates), control characters included, and markup."""
FLOATS = st.floats(width=32, allow_nan=True, allow_infinity=True)
SCORES = st.builds(common_pb2.EmotionScores, **{name: FLOATS for name in ("neutral", "calm", "happy", "sad")})
STATISTICS = st.builds(
    common_pb2.EmotionStatistics, mean=SCORES, max=SCORES, std=SCORES, confidence=FLOATS, frame_count=INT32
)
SER_FIELDS = ("config", "config.audio_format.sample_rate_hz", "config.audio_format.encoding",
              "config.audio_format.channels", "config.session_id", "audio")  # fmt: skip
POLICY_FIELDS = ("config", "observation", "turn_id", "statistics", "context")
SYNTHESIS_FIELDS = ("config", "text")


def tried(call: Callable[[], object], fields: tuple[str, ...]) -> grpc.StatusCode:
    """Make one bad call; its outcome must be OK, INVALID_ARGUMENT naming one of `fields`, or RESOURCE_EXHAUSTED."""
    BAD_INPUTS["count"] += 1
    try:
        call()
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
        assert code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), (code, details)
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            assert details.startswith(fields) and ": " in details, details
        return code
    return grpc.StatusCode.OK


def audio_format(rate: int, encoding: int, channels: int = 1) -> common_pb2.AudioFormat:
    return common_pb2.AudioFormat(sample_rate_hz=rate, encoding=encoding, channels=channels)


def ser_config(rate: int = 16000, encoding: int = common_pb2.AUDIO_ENCODING_LINEAR16, **fields: object):
    return ser_pb2.RecognitionConfig(audio_format=audio_format(rate, encoding), **fields)


def ser_stream(config: ser_pb2.RecognitionConfig, chunks: list[bytes]) -> Iterator[ser_pb2.StreamingRecognizeRequest]:
    yield ser_pb2.StreamingRecognizeRequest(config=config)
    for chunk in chunks:
        yield ser_pb2.StreamingRecognizeRequest(audio=chunk)


# --- SER --------------------------------------------------------------------------------------------------------


@FUZZ
@given(chunks=st.lists(st.binary(min_size=1, max_size=3000), min_size=1, max_size=3))
def test_ser_stream_of_random_bytes_as_linear16(stubs: Stubs, chunks: list[bytes]) -> None:
    odd = any(len(c) % 2 for c in chunks)
    code = tried(lambda: list(stubs.ser.StreamingRecognize(ser_stream(ser_config(), chunks), timeout=TIMEOUT_S)),
                 SER_FIELDS)  # fmt: skip
    assert code == (grpc.StatusCode.INVALID_ARGUMENT if odd else grpc.StatusCode.OK)


@FUZZ
@given(samples=st.lists(FLOATS, min_size=1, max_size=1500))
def test_ser_stream_of_random_float32(stubs: Stubs, samples: list[float]) -> None:
    data = np.array(samples, "<f4")
    config = ser_config(encoding=common_pb2.AUDIO_ENCODING_FLOAT32)
    code = tried(lambda: list(stubs.ser.StreamingRecognize(ser_stream(config, [data.tobytes()]), timeout=TIMEOUT_S)),
                 SER_FIELDS)  # fmt: skip
    assert code == (grpc.StatusCode.OK if np.all(np.isfinite(data)) else grpc.StatusCode.INVALID_ARGUMENT)


@FUZZ
@given(rate=SAMPLE_RATES, encoding=ENCODINGS, channels=INT32, session_id=TEXT, audio=st.binary(max_size=4000))
def test_ser_recognize_with_random_formats_and_bytes(
    stubs: Stubs, rate: int, encoding: int, channels: int, session_id: str, audio: bytes
) -> None:
    config = ser_pb2.RecognitionConfig(audio_format=audio_format(rate, encoding, channels), session_id=session_id)
    tried(lambda: stubs.ser.Recognize(ser_pb2.RecognizeRequest(config=config, audio=audio), timeout=TIMEOUT_S),
          SER_FIELDS)  # fmt: skip


@pytest.mark.parametrize("rate", [0, -1, 1, 8000, 2**31 - 1, -(2**31)])
def test_ser_refuses_every_sample_rate_but_16k_naming_it(stubs: Stubs, rate: int) -> None:
    def call() -> object:
        return list(stubs.ser.StreamingRecognize(ser_stream(ser_config(rate=rate), []), timeout=TIMEOUT_S))

    assert tried(call, ("config.audio_format.sample_rate_hz",)) == grpc.StatusCode.INVALID_ARGUMENT


def test_an_endless_ser_stream_is_cut_off_at_the_limit_naming_audio(stubs: Stubs) -> None:
    endless = ser_stream(ser_config(), [])
    requests = itertools.chain(endless, iter(lambda: ser_pb2.StreamingRecognizeRequest(audio=silence_bytes(1)), None))
    with pytest.raises(grpc.RpcError) as caught:
        list(stubs.ser.StreamingRecognize(requests, timeout=TIMEOUT_S))
    BAD_INPUTS["count"] += 1
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("audio:") and f"{MAX_STREAM_S:g} s" in caught.value.details()
    assert_all_serving(stubs.channel)


# --- policy -----------------------------------------------------------------------------------------------------


@FUZZ
@given(stats=STATISTICS, previous=EMOTIONS, turn_index=INT32, persona=TEXT, turn_id=TEXT)
def test_policy_decide_with_random_statistics_and_context(
    stubs: Stubs, stats: common_pb2.EmotionStatistics, previous: int, turn_index: int, persona: str, turn_id: str
) -> None:
    context = policy_pb2.PolicyContext(previous_response_emotion=previous, turn_index=turn_index, persona=persona)
    request = policy_pb2.DecideRequest(statistics=stats, context=context, turn_id=turn_id)
    tried(lambda: stubs.policy.Decide(request, timeout=TIMEOUT_S), POLICY_FIELDS)


@FUZZ
@given(persona=TEXT, turns=st.lists(st.tuples(STATISTICS, TEXT), max_size=4), config_again=st.booleans())
def test_policy_stream_with_random_persona_and_observations(
    stubs: Stubs, persona: str, turns: list, config_again: bool
) -> None:
    config = policy_pb2.StreamingDecideRequest(config=policy_pb2.PolicySessionConfig(persona=persona))
    requests = [config, observation("sad", "ok-turn")]
    for stats, turn_id in turns:
        obs = policy_pb2.TurnObservation(statistics=stats, turn_id=turn_id)
        requests.append(policy_pb2.StreamingDecideRequest(observation=obs))
    if config_again:
        requests.append(config)
    tried(lambda: list(stubs.policy.StreamingDecide(iter(requests), timeout=TIMEOUT_S)), POLICY_FIELDS)


@pytest.mark.parametrize("previous", [7, 8, 2**31 - 1, -1, -(2**31)])
def test_policy_refuses_unknown_emotion_values_naming_the_field(stubs: Stubs, previous: int) -> None:
    request = policy_pb2.DecideRequest(
        statistics=observation("calm", "t").observation.statistics,
        context=policy_pb2.PolicyContext(previous_response_emotion=previous),
    )
    field = ("context.previous_response_emotion",)
    assert tried(lambda: stubs.policy.Decide(request, timeout=TIMEOUT_S), field) == grpc.StatusCode.INVALID_ARGUMENT


# --- synthesis --------------------------------------------------------------------------------------------------

SYNTHESIS_CONFIGS = st.builds(
    synthesis_pb2.SynthesisConfig,
    engine=st.sampled_from(["", "espeak", "piper", "kokoro"]) | TEXT,
    voice=st.sampled_from(["", "en-us", "en-us+f2"]) | TEXT,
    emotion=EMOTIONS,
    audio_format=st.builds(audio_format, SAMPLE_RATES, ENCODINGS, st.sampled_from([0, 1, 2, -1]) | INT32),
    turn_id=TEXT,
)


@FUZZ
@given(config=SYNTHESIS_CONFIGS, pieces=st.lists(TEXT, max_size=3))
def test_synthesis_stream_with_random_config_and_text(
    stubs: Stubs, config: synthesis_pb2.SynthesisConfig, pieces: list[str]
) -> None:
    def call() -> object:
        return list(stubs.synthesis.StreamingSynthesize(synthesis_stream(config, *pieces), timeout=TIMEOUT_S))

    tried(call, SYNTHESIS_FIELDS)


@FUZZ
@given(config=SYNTHESIS_CONFIGS, text=TEXT)
def test_synthesize_with_random_config_and_text(stubs: Stubs, config: synthesis_pb2.SynthesisConfig, text: str) -> None:
    request = synthesis_pb2.SynthesizeRequest(config=config, text=text)
    tried(lambda: stubs.synthesis.Synthesize(request, timeout=TIMEOUT_S), SYNTHESIS_FIELDS)


@pytest.mark.parametrize(
    "text",
    [
        *SSML[:3],
        "<!-- comment --> text",
        "<?xml version='1.0'?> text",
        "<![CDATA[ text ]]>",
    ],
)
def test_synthesis_refuses_markup_naming_text(stubs: Stubs, text: str) -> None:
    request = synthesis_pb2.SynthesizeRequest(text=text)
    assert tried(lambda: stubs.synthesis.Synthesize(request, timeout=TIMEOUT_S), ("text",)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (synthesis_pb2.SynthesisConfig(emotion=7), "config.emotion"),
        (synthesis_pb2.SynthesisConfig(emotion=2**31 - 1), "config.emotion"),
        (synthesis_pb2.SynthesisConfig(emotion=-1), "config.emotion"),
        (synthesis_pb2.SynthesisConfig(audio_format=audio_format(0, 3)), "config.audio_format.encoding"),
        (synthesis_pb2.SynthesisConfig(audio_format=audio_format(-1, 1)), "config.audio_format.sample_rate_hz"),
        (synthesis_pb2.SynthesisConfig(audio_format=audio_format(1, 1)), "config.audio_format.sample_rate_hz"),
        (synthesis_pb2.SynthesisConfig(audio_format=audio_format(2**31 - 1, 1)), "config.audio_format.sample_rate_hz"),
    ],
)
def test_synthesis_refuses_unknown_enum_and_rate_values_naming_the_field(
    stubs: Stubs, config: synthesis_pb2.SynthesisConfig, field: str
) -> None:
    request = synthesis_pb2.SynthesizeRequest(config=config, text="Hello.")
    assert tried(lambda: stubs.synthesis.Synthesize(request, timeout=TIMEOUT_S), (field,)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


# --- every RPC: huge messages and raw bytes on the wire ---------------------------------------------------------

HUGE = 5 * 1024 * 1024
HUGE_CALLS: dict[str, Callable[[Stubs], object]] = {
    "Recognize": lambda s: s.ser.Recognize(
        ser_pb2.RecognizeRequest(config=ser_config(), audio=bytes(HUGE)), timeout=TIMEOUT_S
    ),
    "StreamingRecognize": lambda s: list(
        s.ser.StreamingRecognize(ser_stream(ser_config(), [bytes(HUGE)]), timeout=TIMEOUT_S)
    ),
    "Decide": lambda s: s.policy.Decide(policy_pb2.DecideRequest(turn_id="x" * HUGE), timeout=TIMEOUT_S),
    "StreamingDecide": lambda s: list(
        s.policy.StreamingDecide(iter([observation("sad", "x" * HUGE)]), timeout=TIMEOUT_S)
    ),
    "Synthesize": lambda s: s.synthesis.Synthesize(synthesis_pb2.SynthesizeRequest(text="a" * HUGE), timeout=TIMEOUT_S),
    "StreamingSynthesize": lambda s: list(
        s.synthesis.StreamingSynthesize(
            synthesis_stream(synthesis_pb2.SynthesisConfig(), "a" * HUGE), timeout=TIMEOUT_S
        )
    ),
}


@pytest.mark.parametrize("rpc", list(HUGE_CALLS))
def test_a_huge_message_gets_resource_exhausted(stubs: Stubs, rpc: str) -> None:
    assert tried(lambda: HUGE_CALLS[rpc](stubs), ()) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_all_serving(stubs.channel)


METHODS = {
    "/emoloop.v1.EmotionRecognitionService/StreamingRecognize": "stream",
    "/emoloop.v1.EmotionRecognitionService/Recognize": "unary",
    "/emoloop.v1.PolicyService/Decide": "unary",
    "/emoloop.v1.PolicyService/StreamingDecide": "stream",
    "/emoloop.v1.PolicyService/ListPersonas": "unary",
    "/emoloop.v1.SynthesisService/StreamingSynthesize": "stream",
    "/emoloop.v1.SynthesisService/Synthesize": "unary",
    "/emoloop.v1.SynthesisService/ListVoices": "unary",
}


def raw_call(channel: grpc.Channel, method: str, messages: list[bytes]) -> None:
    """Send bytes as they are, without a serializer: what a broken or hostile client puts on the wire."""
    if METHODS[method] == "unary":
        channel.unary_unary(method, request_serializer=None, response_deserializer=None)(messages[0], timeout=TIMEOUT_S)
    else:
        list(channel.stream_stream(method, request_serializer=None, response_deserializer=None)(
            iter(messages), timeout=TIMEOUT_S
        ))  # fmt: skip


@pytest.mark.parametrize("method", list(METHODS))
@FUZZ
@given(messages=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=3))
def test_raw_garbage_on_the_wire_gets_a_status_not_a_crash(stubs: Stubs, method: str, messages: list[bytes]) -> None:
    """Bytes that do not parse become grpc's own INTERNAL ("Exception deserializing request"); bytes that parse
    by chance are ordinary (bad) requests."""
    BAD_INPUTS["count"] += 1
    try:
        raw_call(stubs.channel, method, messages)
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
        if code == grpc.StatusCode.INTERNAL:
            assert "deserializ" in details.lower(), details
        else:
            assert code == grpc.StatusCode.INVALID_ARGUMENT and ": " in details, (code, details)


def test_every_service_still_serves_after_the_bad_input(stubs: Stubs) -> None:
    assert_all_serving(stubs.channel)
    assert stubs.synthesis.ListVoices(synthesis_pb2.ListVoicesRequest(), timeout=5).voices
    assert stubs.policy.ListPersonas(policy_pb2.ListPersonasRequest(), timeout=5).personas
    print(f"bad input: {BAD_INPUTS['count']} bad inputs tried")


LEAK_CALLS = 300
RSS_LEAK_BOUND_MB = 8.0
"""Growth allowed over a round of LEAK_CALLS bad calls after a warm-up round (measured: about 0-1 MB)."""
BAD_SYNTHESIS: list[Callable[[grpc.Channel], object]] = [
    lambda c: raw_call(c, "/emoloop.v1.SynthesisService/Synthesize", [b"\xff\x00garbage"]),
    lambda c: raw_call(c, "/emoloop.v1.SynthesisService/StreamingSynthesize", [b"\x12\x05\xc3(", b"\x0a"]),
    lambda c: raw_call(c, "/emoloop.v1.SynthesisService/Synthesize", [synthesis_pb2.SynthesizeRequest(
        config=synthesis_pb2.SynthesisConfig(emotion=2**31 - 1), text="Hi.").SerializeToString()]),
    lambda c: raw_call(c, "/emoloop.v1.SynthesisService/Synthesize", [synthesis_pb2.SynthesizeRequest(
        text="<speak>Hi</speak>").SerializeToString()]),
    lambda c: raw_call(c, "/emoloop.v1.SynthesisService/StreamingSynthesize", [
        synthesis_pb2.StreamingSynthesizeRequest(config=synthesis_pb2.SynthesisConfig()).SerializeToString(),
        synthesis_pb2.StreamingSynthesizeRequest(text="Hi \x07 there").SerializeToString()]),
    lambda c: raw_call(c, "/emoloop.v1.SynthesisService/StreamingSynthesize", [
        synthesis_pb2.StreamingSynthesizeRequest(text="no config").SerializeToString()]),
]  # fmt: skip


def bad_round(channel: grpc.Channel, calls: int) -> None:
    """`calls` bad calls, cycling through BAD_SYNTHESIS; each must be refused."""
    for _, call in zip(range(calls), itertools.cycle(BAD_SYNTHESIS), strict=False):
        BAD_INPUTS["count"] += 1
        with pytest.raises(grpc.RpcError) as caught:
            call(channel)
        assert caught.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL)


def test_a_round_of_bad_calls_leaves_no_memory_behind(synthesis_process: tuple) -> None:
    service, channel = synthesis_process
    bad_round(channel, 100)  # warm-up: caches, allocator arenas, grpc's per-method state
    before = service.rss_mb()
    bad_round(channel, LEAK_CALLS)
    after = service.rss_mb()
    print(f"leak: RSS {before:.1f} MB before {LEAK_CALLS} bad calls, {after:.1f} MB after")
    assert after <= before + RSS_LEAK_BOUND_MB
    assert_all_serving(channel, ("synthesis",))
