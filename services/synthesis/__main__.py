"""Run the synthesis service (TTS + vocoder): `python -m emoloop.services.synthesis --help`."""

from __future__ import annotations

import argparse
import sys

from emoloop.services.server import add_server_arguments, serve, settings_from_args
from emoloop.services.synthesis.servicer import SynthesisServicer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.services.synthesis",
        description="emoloop synthesis service: speaks text with an emotion (gRPC emoloop.v1.SynthesisService).",
    )
    add_server_arguments(parser, "synthesis")
    args = parser.parse_args(argv)
    return serve(settings_from_args("synthesis", args), [SynthesisServicer()])


if __name__ == "__main__":
    sys.exit(main())
