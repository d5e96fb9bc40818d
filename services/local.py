"""Start a service inside the calling process, for `emoloop ... --local`.

The CLI still talks gRPC to it over loopback, so the local path and the remote path are the same code and
give the same results; only the process that runs the model differs.
"""

from __future__ import annotations

import importlib
import logging

from emoloop.services.server import RunningServer, ServerSettings, configure_logging, start_server

_SERVICERS = {
    "ser": "emoloop.services.ser.servicer:SerServicer",
    "synthesis": "emoloop.services.synthesis.servicer:SynthesisServicer",
    "policy": "emoloop.services.policy.servicer:default_servicer",
}


def start_local(name: str, log_level: str = "WARNING") -> RunningServer:
    """Start service `name` with its defaults on a free loopback port; the caller stops it."""
    module, factory = _SERVICERS[name].split(":")
    servicer = getattr(importlib.import_module(module), factory)()
    if not logging.getLogger().handlers:
        configure_logging(log_level)
    return start_server(ServerSettings(name=name, port=0, log_level=log_level), [servicer])
