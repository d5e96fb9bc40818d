"""Run the speech emotion recognition service: `python -m emoloop.services.ser --help`."""

from __future__ import annotations

import argparse
import sys

from emoloop.services.ser.servicer import SerServicer
from emoloop.services.server import add_server_arguments, serve, settings_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.services.ser",
        description="emoloop SER service: emotion of streamed or whole audio "
        "(gRPC emoloop.v1.EmotionRecognitionService).",
    )
    add_server_arguments(parser, "ser")
    args = parser.parse_args(argv)
    return serve(settings_from_args("ser", args), [SerServicer()])


if __name__ == "__main__":
    sys.exit(main())
