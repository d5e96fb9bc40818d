"""The `emoloop` command: one console script, a subcommand per task (`emoloop --help`)."""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVICES = {
    "ser": ("emoloop.v1.EmotionRecognitionService", 50051),
    "policy": ("emoloop.v1.PolicyService", 50052),
    "synthesis": ("emoloop.v1.SynthesisService", 50053),
}


def service_address(name: str) -> str:
    """Where a service listens: EMOLOOP_<NAME>_ADDRESS, else 127.0.0.1 and its documented port."""
    port = os.environ.get(f"EMOLOOP_{name.upper()}_PORT", str(SERVICES[name][1]))
    return os.environ.get(f"EMOLOOP_{name.upper()}_ADDRESS", f"127.0.0.1:{port}")


def status(args: argparse.Namespace) -> int:
    """Print each service's health; exit 1 if any is not SERVING."""
    healthy = True
    for name, (service, _port) in SERVICES.items():
        address = service_address(name)
        with grpc.insecure_channel(address) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=args.timeout
                )
                state = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
            except grpc.RpcError as error:
                state = f"DOWN ({error.code().name})"
        healthy &= state == "SERVING"
        print(f"{name:<10} {address:<22} {state}")
    return 0 if healthy else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="emoloop",
        description="emoloop: an emotion-aware speech loop. Start the services with `honcho start`, then use "
        "these commands. Service addresses: EMOLOOP_<SERVICE>_ADDRESS or EMOLOOP_<SERVICE>_PORT.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("status", help="health of the SER, policy and synthesis services")
    check.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each service")
    check.set_defaults(run=status)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
