"""The shared server bootstrap: health, reflection, binding rules, tokens, and the placeholder services."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from emoloop.models.policy import DEFAULT_OVERRIDES, DEFAULT_RULES, DEFAULT_WEIGHTS
from emoloop.services.policy.servicer import PolicyServicer, default_servicer
from emoloop.services.server import ServerSettings, start_server
from emoloop.v1 import policy_pb2, policy_pb2_grpc
from tests.conftest import serving

Status = health_pb2.HealthCheckResponse


def health_of(channel: grpc.Channel, service: str = "") -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


class SlowLoadingServicer(PolicyServicer):
    """A servicer whose model 'loads' until the test lets it finish."""

    def __init__(self) -> None:
        super().__init__(DEFAULT_WEIGHTS, DEFAULT_RULES, DEFAULT_OVERRIDES)
        self.release = threading.Event()

    def load(self) -> None:
        self.release.wait(10)


def test_health_says_not_serving_until_the_model_is_loaded() -> None:
    servicer = SlowLoadingServicer()
    running = start_server(ServerSettings(name="test", port=0), [servicer], load=False)
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        loader = threading.Thread(target=running.load)
        loader.start()
        assert health_of(channel) == Status.NOT_SERVING
        assert health_of(channel, servicer.service_name) == Status.NOT_SERVING
        servicer.release.set()
        loader.join(5)
        assert health_of(channel) == Status.SERVING
        assert health_of(channel, servicer.service_name) == Status.SERVING
    finally:
        channel.close()
        running.stop(0)


def test_reflection_lets_any_tool_discover_the_services(policy_channel: grpc.Channel) -> None:
    database = ProtoReflectionDescriptorDatabase(policy_channel)
    services = set(database.get_services())
    assert {"emoloop.v1.PolicyService", "grpc.health.v1.Health"} <= services
    method = database.FindFileContainingSymbol("emoloop.v1.PolicyService")
    assert method.name == "emoloop/v1/policy.proto"


def test_a_non_loopback_address_is_refused_without_tls_and_a_token() -> None:
    with pytest.raises(ValueError, match="needs --tls-cert, --tls-key and --token"):
        start_server(ServerSettings(name="test", host="0.0.0.0", port=0), [default_servicer()])


def test_with_a_token_calls_must_carry_it_but_health_needs_none() -> None:
    with serving(default_servicer(), token="s3cret") as channel:
        assert health_of(channel) == Status.SERVING
        stub = policy_pb2_grpc.PolicyServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ListPersonas(policy_pb2.ListPersonasRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = stub.ListPersonas(
            policy_pb2.ListPersonasRequest(), timeout=5, metadata=[("authorization", "Bearer s3cret")]
        )
        assert reply.default_persona == "support"


def test_an_unknown_service_is_not_found_by_health(policy_channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        health_of(policy_channel, "emoloop.v1.NoSuchService")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("service", ["ser", "policy", "synthesis"])
def test_every_service_explains_itself_with_help(service: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", f"emoloop.services.{service}", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "--port" in result.stdout and "--host" in result.stdout and "127.0.0.1" in result.stdout


def test_a_bad_overrides_file_stops_the_policy_service_at_start_naming_the_key(tmp_path) -> None:
    bad = tmp_path / "overrides.toml"
    bad.write_text('[[rule]]\nname = "x"\nrespond = "furious"\n')
    result = subprocess.run(
        [sys.executable, "-m", "emoloop.services.policy", "--port", "0", "--overrides", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "rule[0].respond" in result.stderr and "Traceback" not in result.stderr


def test_on_shutdown_a_live_stream_gets_its_grace_period_and_new_calls_are_refused() -> None:
    from tests.services.test_policy_service import stats

    running = start_server(ServerSettings(name="test", port=0), [default_servicer()])
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    requests: queue.Queue = queue.Queue()
    observation = policy_pb2.StreamingDecideRequest(
        observation=policy_pb2.TurnObservation(statistics=stats("sad", 0.9))
    )
    requests.put(policy_pb2.StreamingDecideRequest(config=policy_pb2.PolicySessionConfig()))
    requests.put(observation)
    responses = policy_pb2_grpc.PolicyServiceStub(channel).StreamingDecide(iter(requests.get, None), timeout=10)
    assert next(responses).turn_index == 0
    stopper = threading.Thread(target=running.stop, args=(3.0,))
    stopper.start()
    time.sleep(0.3)
    requests.put(observation)  # the stream that was live before shutdown is still answered ...
    assert next(responses).turn_index == 1
    requests.put(None)
    assert list(responses) == []
    stopper.join(5)
    with pytest.raises(grpc.RpcError):  # ... while the stopped server takes no new call
        health_of(channel)
    channel.close()
