"""Run the policy service: `python -m emoloop.services.policy --help`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from emoloop.models.policy import DEFAULT_OVERRIDES, DEFAULT_RULES, DEFAULT_WEIGHTS
from emoloop.services.policy.servicer import PolicyServicer
from emoloop.services.server import add_server_arguments, serve, settings_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.services.policy",
        description="emoloop policy service: chooses the emotion of each answer (gRPC emoloop.v1.PolicyService).",
    )
    add_server_arguments(parser, "policy")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS, help="trained MLP (.npz)")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="persona rule table (TOML)")
    parser.add_argument(
        "--overrides", type=Path, default=DEFAULT_OVERRIDES, help="override rules (TOML), validated at start"
    )
    args = parser.parse_args(argv)
    return serve(settings_from_args("policy", args), [PolicyServicer(args.weights, args.rules, args.overrides)])


if __name__ == "__main__":
    sys.exit(main())
