"""The one bootstrap every emoloop server uses.

It owns everything that is not a service's own logic: flags and environment variables, binding (127.0.0.1
unless told otherwise, and then only with TLS and a token), worker threads, message limits, health
(NOT_SERVING until the model is loaded), server reflection, structured logging, the mapping of validation
errors to gRPC status codes, and a clean shutdown on SIGINT/SIGTERM with a grace period for live streams.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import hmac
import inspect
import ipaddress
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

log = logging.getLogger("emoloop")

DEFAULT_PORTS = {"ser": 50051, "policy": 50052, "synthesis": 50053}
"""Documented default ports; each can be overridden by a flag or EMOLOOP_<SERVICE>_PORT."""


class InvalidArgument(Exception):
    """Bad input from the caller; becomes INVALID_ARGUMENT with the field named first."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class ResourceExhausted(Exception):
    """The caller asked for more than a configured limit allows; becomes RESOURCE_EXHAUSTED."""


class Unavailable(Exception):
    """The service cannot answer yet (for example its model is still loading); becomes UNAVAILABLE."""


_STATUS = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
}


def rpc_errors(method: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the exceptions above into status codes, for unary and streaming handlers alike.

    The servicer stays plain Python that raises; the caller gets a precise code and message, and the
    server goes on serving. Anything else is a bug: it is logged with its traceback and becomes INTERNAL.
    """

    def abort(context: grpc.ServicerContext, error: Exception) -> None:
        code = next((c for kind, c in _STATUS.items() if isinstance(error, kind)), None)
        if code is None:
            log.exception("rpc=%s event=internal_error", method.__name__)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}")
        log.info("rpc=%s event=rejected code=%s detail=%r", method.__name__, code.name, str(error))
        context.abort(code, str(error))

    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except grpc.RpcError:
                raise
            except Exception as error:  # every error must become a status, never a crash
                abort(context, error)

        return stream

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except grpc.RpcError:
            raise
        except Exception as error:
            abort(context, error)

    return unary


@dataclass(frozen=True)
class ServerSettings:
    """Everything the bootstrap needs; built from flags whose defaults come from the environment."""

    name: str
    host: str = "127.0.0.1"
    port: int = 0
    max_workers: int = 16
    max_message_bytes: int = 4 * 1024 * 1024
    grace_s: float = 3.0
    log_level: str = "INFO"
    tls_cert: str | None = None
    tls_key: str | None = None
    token: str | None = None

    def is_loopback(self) -> bool:
        """Whether the bind address is reachable only from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def add_server_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    """Add the flags every server shares; each default reads EMOLOOP_<NAME>_<FLAG> or EMOLOOP_<FLAG>."""

    def env(flag: str, default: str) -> str:
        return os.environ.get(f"EMOLOOP_{name.upper()}_{flag}", os.environ.get(f"EMOLOOP_{flag}", default))

    group = parser.add_argument_group("server")
    group.add_argument(
        "--host",
        default=env("HOST", "127.0.0.1"),
        help="bind address (default 127.0.0.1; env EMOLOOP_HOST). Any other address needs --tls-cert, "
        "--tls-key and --token.",
    )
    group.add_argument(
        "--port",
        type=int,
        default=int(env("PORT", str(DEFAULT_PORTS[name]))),
        help=f"port; 0 picks a free one (default {DEFAULT_PORTS[name]}; env EMOLOOP_{name.upper()}_PORT)",
    )
    group.add_argument("--max-workers", type=int, default=int(env("MAX_WORKERS", "16")), help="RPC worker threads")
    group.add_argument(
        "--max-message-bytes",
        type=int,
        default=int(env("MAX_MESSAGE_BYTES", str(4 * 1024 * 1024))),
        help="largest message accepted or sent (default 4 MiB)",
    )
    group.add_argument(
        "--grace",
        type=float,
        default=float(env("GRACE_S", "3")),
        help="seconds live streams get to finish on shutdown",
    )
    group.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"), help="DEBUG, INFO, WARNING, ERROR")
    group.add_argument("--tls-cert", default=env("TLS_CERT", "") or None, help="PEM certificate for TLS")
    group.add_argument("--tls-key", default=env("TLS_KEY", "") or None, help="PEM private key for TLS")
    group.add_argument(
        "--token",
        default=env("TOKEN", "") or None,
        help="shared secret clients must send as 'authorization: Bearer <token>' (env EMOLOOP_TOKEN)",
    )


def settings_from_args(name: str, args: argparse.Namespace) -> ServerSettings:
    """The settings the shared flags describe."""
    return ServerSettings(
        name=name,
        host=args.host,
        port=args.port,
        max_workers=args.max_workers,
        max_message_bytes=args.max_message_bytes,
        grace_s=args.grace,
        log_level=args.log_level,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        token=args.token,
    )


class Servicer(Protocol):
    """What a service hands the bootstrap: its gRPC registration and a model loader."""

    service_name: str

    def register(self, server: grpc.Server) -> None:
        """Add the servicer to the server (the generated add_..._to_server)."""

    def load(self) -> None:
        """Load the model; the service answers health SERVING only after this returns."""


class _TokenInterceptor(grpc.ServerInterceptor):
    """Rejects calls without the shared token, except health checks, so probes work unauthenticated."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(self, continuation: Any, details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith("/grpc.health.v1.Health/"):
            return continuation(details)
        sent = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(str(sent).encode(), self._expected):
            return continuation(details)

        def deny(_request: Any, context: grpc.ServicerContext) -> None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "authorization: missing or wrong token")

        return grpc.unary_unary_rpc_method_handler(deny)


@dataclass
class RunningServer:
    """A started server, its bound port, its health servicer and the servicers it hosts."""

    server: grpc.Server
    port: int
    health: health.HealthServicer
    settings: ServerSettings
    servicers: list[Servicer]

    def set_serving(self, serving: bool) -> None:
        """Publish the health of the overall server ("") and of each hosted service."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ["", *(s.service_name for s in self.servicers)]:
            self.health.set(name, status)

    def load(self) -> None:
        """Load every servicer's model, then report SERVING; on failure stop the server and re-raise."""
        started = time.perf_counter()
        try:
            for servicer in self.servicers:
                servicer.load()
        except BaseException:
            self.server.stop(0)
            raise
        self.set_serving(True)
        log.info(
            "service=%s event=serving load_ms=%.0f",
            self.settings.name,
            (time.perf_counter() - started) * 1000,
        )

    def stop(self, grace_s: float | None = None) -> None:
        """Stop accepting calls, give live ones the grace period, then cancel them."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.settings.grace_s if grace_s is None else grace_s).wait()


def start_server(settings: ServerSettings, servicers: list[Servicer], load: bool = True) -> RunningServer:
    """Build, bind and start a server, then (unless load is False) load every model and report SERVING.

    Health answers NOT_SERVING while the models load, so a caller can tell "starting" from "down".
    """
    if not settings.is_loopback() and not (settings.tls_cert and settings.tls_key and settings.token):
        raise ValueError(
            f"refusing to bind {settings.host}: a non-loopback address needs --tls-cert, --tls-key and --token"
        )
    options = [
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    interceptors = [_TokenInterceptor(settings.token)] if settings.token else []
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=settings.max_workers, thread_name_prefix=settings.name),
        options=options,
        interceptors=interceptors,
    )
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [s.service_name for s in servicers]
    for servicer in servicers:
        servicer.register(server)
    reflection.enable_server_reflection(
        [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
    )
    address = f"{settings.host}:{settings.port}"
    if settings.tls_cert and settings.tls_key:
        with open(settings.tls_key, "rb") as key, open(settings.tls_cert, "rb") as cert:
            credentials = grpc.ssl_server_credentials([(key.read(), cert.read())])
        port = server.add_secure_port(address, credentials)
    else:
        port = server.add_insecure_port(address)
    running = RunningServer(server, port, health_servicer, settings, servicers)
    running.set_serving(False)
    server.start()
    log.info("service=%s event=listening address=%s:%d", settings.name, settings.host, port)
    if load:
        running.load()
    return running


def limit_malloc_arenas(count: int = 2) -> None:
    """Cap glibc's malloc arenas before the RPC threads start.

    glibc gives threads that allocate concurrently arenas of their own (up to 8 per core) and keeps freed memory in
    each; with model work on many RPC threads that cost the synthesis service ~50 MB of resident memory (363 MB
    peak against 309 MB with two arenas, measured). A no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(-8, count)  # M_ARENA_MAX


def configure_logging(level: str) -> None:
    """One line per event, key=value, so honcho's merged output stays readable and greppable."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s level=%(levelname)s %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )


def serve(settings: ServerSettings, servicers: list[Servicer]) -> int:
    """Run a server until SIGINT or SIGTERM, then shut it down gracefully; returns the exit code."""
    limit_malloc_arenas()
    configure_logging(settings.log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("service=%s event=signal signal=%s", settings.name, signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        running = start_server(settings, servicers)
    except (OSError, ValueError, RuntimeError) as error:
        log.error("service=%s event=start_failed error=%r", settings.name, str(error))
        return 1
    while not stop.wait(timeout=1.0):
        pass
    running.stop()
    log.info("service=%s event=stopped", settings.name)
    return 0
