"""Shared fixtures: services started in-process on ephemeral ports, called through real gRPC channels."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import pytest

from emoloop.services.policy.servicer import default_servicer
from emoloop.services.server import RunningServer, ServerSettings, Servicer, start_server


@contextlib.contextmanager
def started(*servicers: Servicer, **settings: object) -> Iterator[RunningServer]:
    """Start the servicers on 127.0.0.1 with a free port; stop them on exit."""
    running = start_server(ServerSettings(name="test", port=0, **settings), list(servicers))
    try:
        yield running
    finally:
        running.stop(0)


@contextlib.contextmanager
def serving(*servicers: Servicer, **settings: object) -> Iterator[grpc.Channel]:
    """Start the servicers (see started) and yield a channel to them."""
    with started(*servicers, **settings) as running, grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def policy_channel() -> Iterator[grpc.Channel]:
    with serving(default_servicer()) as channel:
        yield channel
