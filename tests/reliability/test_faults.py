"""Faults: clients that vanish, stall or run out of time, and a service killed outright and restarted.

In every case the server must free what the call held, keep serving the next call, and never buffer
without bound.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator

import grpc
import pytest

from bench.common import free_port
from emoloop.client.connect import connect
from emoloop.v1 import (
    common_pb2,
    policy_pb2,
    policy_pb2_grpc,
    ser_pb2,
    ser_pb2_grpc,
    synthesis_pb2,
    synthesis_pb2_grpc,
)
from tests.reliability.conftest import (
    CALL_TIMEOUT_S,
    RssSampler,
    ServiceProcess,
    Stubs,
    assert_all_serving,
    check_synthesis_stream,
    live_streams,
    observation,
    silence_bytes,
    synthesis_stream,
    wait_until,
)
from tests.services.test_ser_service import config as ser_config

LONG_TEXT = " ".join(["This sentence keeps the synthesiser busy for a good while, and then some more."] * 60)
"""About 4,900 characters: just under the servicer's text limit, minutes of audio."""


def policy_config() -> policy_pb2.StreamingDecideRequest:
    return policy_pb2.StreamingDecideRequest(config=policy_pb2.PolicySessionConfig())


def fed(first: object) -> tuple[queue.Queue, Iterator]:
    """A request iterator the test feeds by hand (None ends it), starting with `first`."""
    feed: queue.Queue = queue.Queue()
    feed.put(first)
    return feed, iter(feed.get, None)


def vanish(how: str, call: grpc.Future, channel: grpc.Channel) -> None:
    """The client goes away: it cancels the call, or closes its whole channel."""
    if how == "cancel":
        call.cancel()
    else:
        channel.close()


@pytest.fixture
def own_channel(stubs: Stubs) -> Iterator[grpc.Channel]:
    """A channel of the test's own, so that closing it does not disturb the shared one."""
    with grpc.insecure_channel(stubs.address) as channel:
        yield channel


@pytest.mark.parametrize("how", ["cancel", "close-channel"])
def test_a_ser_client_that_vanishes_mid_stream_frees_the_stream(
    stubs: Stubs, own_channel: grpc.Channel, how: str
) -> None:
    feed, requests = fed(ser_config(interim=True))
    call = ser_pb2_grpc.EmotionRecognitionServiceStub(own_channel).StreamingRecognize(requests, timeout=CALL_TIMEOUT_S)
    for _ in range(10):
        feed.put(ser_pb2.StreamingRecognizeRequest(audio=silence_bytes(0.032)))
    assert next(call).WhichOneof("result") == "interim"  # the stream is live on the server
    assert live_streams("ser") >= 1
    vanish(how, call, own_channel)
    assert wait_until(lambda: live_streams("ser") == 0), "the SER handler still runs after its client went"
    after = list(stubs.ser.StreamingRecognize(iter([ser_config()]), timeout=CALL_TIMEOUT_S))
    assert after == []  # an empty stream: no utterance, and no error
    assert_all_serving(stubs.channel)


@pytest.mark.parametrize("how", ["cancel", "close-channel"])
def test_a_synthesis_client_that_vanishes_mid_stream_stops_the_work(
    stubs: Stubs, own_channel: grpc.Channel, how: str
) -> None:
    cfg = synthesis_pb2.SynthesisConfig(turn_id=f"vanish-{how}")
    stub = synthesis_pb2_grpc.SynthesisServiceStub(own_channel)
    call = stub.StreamingSynthesize(synthesis_stream(cfg, LONG_TEXT), timeout=CALL_TIMEOUT_S)
    assert next(call).chunk.chunk_index == 0
    vanish(how, call, own_channel)
    assert wait_until(lambda: live_streams("synthesis") == 0), "the synthesis stream outlived its client"
    responses = list(stubs.synthesis.StreamingSynthesize(synthesis_stream(cfg, "Still here."), timeout=CALL_TIMEOUT_S))
    assert check_synthesis_stream(responses) > 0
    assert_all_serving(stubs.channel)


def test_a_synthesis_cancel_is_logged_even_while_the_server_waits_to_send(
    stubs: Stubs, caplog: pytest.LogCaptureFixture
) -> None:
    fmt = common_pb2.AudioFormat(sample_rate_hz=48000, encoding=common_pb2.AUDIO_ENCODING_FLOAT32)
    cfg = synthesis_pb2.SynthesisConfig(audio_format=fmt, turn_id="stalled-then-gone")
    with caplog.at_level(logging.INFO, logger="emoloop.synthesis"):
        call = stubs.synthesis.StreamingSynthesize(synthesis_stream(cfg, LONG_TEXT), timeout=CALL_TIMEOUT_S)
        assert next(call).chunk.chunk_index == 0
        time.sleep(1.0)  # reads nothing more: flow control holds the server at its next send
        call.cancel()
        assert wait_until(lambda: live_streams("synthesis") == 0)
        assert wait_until(lambda: "event=cancelled turn_id='stalled-then-gone'" in caplog.text, timeout_s=3)


@pytest.mark.parametrize("how", ["cancel", "close-channel"])
def test_a_policy_client_that_vanishes_mid_conversation_frees_the_stream(
    stubs: Stubs, own_channel: grpc.Channel, how: str
) -> None:
    feed, requests = fed(policy_config())
    call = policy_pb2_grpc.PolicyServiceStub(own_channel).StreamingDecide(requests, timeout=CALL_TIMEOUT_S)
    feed.put(observation("sad", "t0"))
    assert next(call).turn_index == 0
    assert live_streams("policy") == 1  # waiting for the next turn
    vanish(how, call, own_channel)
    assert wait_until(lambda: live_streams("policy") == 0)
    after = list(
        stubs.policy.StreamingDecide(iter([policy_config(), observation("sad", "t0")]), timeout=CALL_TIMEOUT_S)
    )
    assert [r.turn_index for r in after] == [0]


def endless_audio() -> Iterator[ser_pb2.StreamingRecognizeRequest]:
    """A client that keeps a SER stream open, sending silence in real time."""
    yield ser_config()
    while True:
        time.sleep(0.032)
        yield ser_pb2.StreamingRecognizeRequest(audio=silence_bytes(0.032))


def text_then_nothing() -> Iterator[synthesis_pb2.StreamingSynthesizeRequest]:
    """A text generator that sends a phrase and then stalls without ending its input."""
    feed, requests = fed(synthesis_pb2.StreamingSynthesizeRequest(config=synthesis_pb2.SynthesisConfig()))
    feed.put(synthesis_pb2.StreamingSynthesizeRequest(text="Let me think about that, "))
    return requests


DEADLINE_CALLS: dict[str, Callable[[Stubs], object]] = {
    "ser-stream": lambda s: list(s.ser.StreamingRecognize(endless_audio(), timeout=0.5)),
    "synthesis-stream": lambda s: list(s.synthesis.StreamingSynthesize(text_then_nothing(), timeout=0.5)),
    "synthesize": lambda s: s.synthesis.Synthesize(synthesis_pb2.SynthesizeRequest(text=LONG_TEXT), timeout=0.05),
    "decision-stream": lambda s: list(s.policy.StreamingDecide(fed(policy_config())[1], timeout=0.3)),
}


@pytest.mark.parametrize("name", list(DEADLINE_CALLS))
def test_a_deadline_hit_gives_deadline_exceeded_and_the_service_goes_on(stubs: Stubs, name: str) -> None:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        DEADLINE_CALLS[name](stubs)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 5
    for module in ("ser", "policy", "synthesis"):
        assert wait_until(lambda m=module: live_streams(m) == 0), f"{module} handler outlived its deadline"
    assert_all_serving(stubs.channel)
    assert stubs.policy.ListPersonas(policy_pb2.ListPersonasRequest(), timeout=5).default_persona


STALL_S = 3.0
RSS_GROWTH_BOUND_MB = 25.0
"""Bound on the server's memory growth while its client reads nothing.

The answer below is about 45 MB of FLOAT32 audio at 48 kHz, which espeak renders in well under the stall,
so a server that synthesised ahead of its reader into memory would exceed the bound; a server held back by
HTTP/2 flow control holds a few chunks (measured growth: about 4 MB).
"""


def test_a_client_that_stalls_holds_the_server_back_instead_of_filling_its_memory(synthesis_process: tuple) -> None:
    service, channel = synthesis_process
    stub = synthesis_pb2_grpc.SynthesisServiceStub(channel)
    fmt = common_pb2.AudioFormat(sample_rate_hz=48000, encoding=common_pb2.AUDIO_ENCODING_FLOAT32)
    cfg = synthesis_pb2.SynthesisConfig(audio_format=fmt, turn_id="stall")
    list(stub.StreamingSynthesize(synthesis_stream(cfg, "Warm up the engine."), timeout=CALL_TIMEOUT_S))
    before = service.rss_mb()
    call = stub.StreamingSynthesize(synthesis_stream(cfg, LONG_TEXT), timeout=120)
    with RssSampler(service) as sampler:
        time.sleep(STALL_S)  # the client reads nothing
        responses = list(call)
    samples = check_synthesis_stream(responses)
    total_mb = samples * 4 / 2**20
    print(f"stall: RSS {before:.0f} MB before, peak {sampler.peak_mb:.0f} MB, answer {total_mb:.0f} MB of audio")
    assert total_mb > RSS_GROWTH_BOUND_MB  # else the test could not tell buffering from flow control
    assert sampler.peak_mb - before < RSS_GROWTH_BOUND_MB


def decide(channel: grpc.Channel, timeout: float = 5.0, wait: bool = False) -> policy_pb2.DecideResponse:
    request = policy_pb2.DecideRequest(statistics=observation("angry", "t").observation.statistics)
    return policy_pb2_grpc.PolicyServiceStub(channel).Decide(request, timeout=timeout, wait_for_ready=wait)


def test_a_killed_service_gives_unavailable_then_serves_again_after_restart() -> None:
    service = ServiceProcess("policy", free_port(), [])
    channel = service.start()
    try:
        decide(channel)
        feed, requests = fed(policy_config())
        live = policy_pb2_grpc.PolicyServiceStub(channel).StreamingDecide(requests, timeout=CALL_TIMEOUT_S)
        feed.put(observation("sad", "t0"))
        assert next(live).turn_index == 0

        service.kill()
        with pytest.raises(grpc.RpcError) as in_flight:
            next(live)
        assert in_flight.value.code() == grpc.StatusCode.UNAVAILABLE
        with pytest.raises(grpc.RpcError) as new_call:
            decide(channel)
        assert new_call.value.code() == grpc.StatusCode.UNAVAILABLE
        feed.put(None)

        service.start().close()  # the same port again; connect() waits for SERVING
        with connect("policy", service.address, timeout_s=30) as fresh:
            assert decide(fresh).decision.emotion != common_pb2.EMOTION_UNSPECIFIED
        assert decide(channel, timeout=30, wait=True).decision.persona  # the old channel reconnects
    finally:
        channel.close()
        service.stop()
