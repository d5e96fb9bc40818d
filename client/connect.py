"""Channels to the emoloop services: where they are, readiness, and an error that names who is down."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


@dataclass(frozen=True)
class ServiceInfo:
    """A service's gRPC name and documented default port."""

    grpc_name: str
    default_port: int


SERVICES = {
    "ser": ServiceInfo("emoloop.v1.EmotionRecognitionService", 50051),
    "policy": ServiceInfo("emoloop.v1.PolicyService", 50052),
    "synthesis": ServiceInfo("emoloop.v1.SynthesisService", 50053),
}


class ServiceDown(Exception):
    """A service did not answer, or is not SERVING; the message says which and what to do."""


class ServiceFailed(Exception):
    """A call to a service broke off (the service stopped, restarted or refused); names the service."""

    def __init__(self, service: str, error: grpc.RpcError) -> None:
        super().__init__(f"the {service} service failed ({error.code().name}: {error.details()})")
        self.service = service
        self.code = error.code()


def service_address(name: str) -> str:
    """Where a service listens: EMOLOOP_<NAME>_ADDRESS, else 127.0.0.1 and EMOLOOP_<NAME>_PORT or its default."""
    port = os.environ.get(f"EMOLOOP_{name.upper()}_PORT", str(SERVICES[name].default_port))
    return os.environ.get(f"EMOLOOP_{name.upper()}_ADDRESS", f"127.0.0.1:{port}")


def open_channel(address: str) -> grpc.Channel:
    """A channel to `address`; TLS when EMOLOOP_TLS_CA names a CA file, with EMOLOOP_TOKEN sent as a bearer token."""
    ca_file, token = os.environ.get("EMOLOOP_TLS_CA"), os.environ.get("EMOLOOP_TOKEN")
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    if not ca_file:
        return grpc.insecure_channel(address, options=options)
    with open(ca_file, "rb") as file:
        credentials = grpc.ssl_channel_credentials(root_certificates=file.read())
    if token:
        credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(address, credentials, options=options)


def health(channel: grpc.Channel, name: str, timeout_s: float, wait: bool = False) -> str:
    """The service's health status name, or DOWN(<code>) when it does not answer."""
    try:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICES[name].grpc_name), timeout=timeout_s, wait_for_ready=wait
        )
    except grpc.RpcError as error:
        return f"DOWN({error.code().name})"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def connect(name: str, address: str | None = None, timeout_s: float = 10.0) -> grpc.Channel:
    """A channel to a service that is SERVING, waiting up to timeout_s for it to come up and load its model."""
    address = address or service_address(name)
    channel = open_channel(address)
    deadline = time.monotonic() + timeout_s
    while (status := health(channel, name, max(0.1, deadline - time.monotonic()), wait=True)) == "NOT_SERVING":
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)  # up, still loading its model
    if status != "SERVING":
        channel.close()
        hint = "it is still loading its model" if status == "NOT_SERVING" else "start it with `honcho start`"
        raise ServiceDown(f"the {name} service at {address} is not serving ({status}): {hint}")
    return channel
