"""Run the speech emotion recognition service: `python -m emoloop.services.ser --help`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from emoloop.models.ser import BACKENDS, DEFAULT_CHECKPOINT
from emoloop.models.vad import DEFAULT_CONFIG as DEFAULT_VAD_CONFIG
from emoloop.services.ser.servicer import SerServicer
from emoloop.services.server import add_server_arguments, serve, settings_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.services.ser",
        description="emoloop SER service: emotion of streamed or whole audio "
        "(gRPC emoloop.v1.EmotionRecognitionService).",
    )
    add_server_arguments(parser, "ser")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=Path(os.environ.get("EMOLOOP_SER_CHECKPOINT", DEFAULT_CHECKPOINT)),
        help="SER checkpoint: the .pt, with its .onnx and .json beside it (env EMOLOOP_SER_CHECKPOINT); "
        "default: the shipped model",
    )
    parser.add_argument(
        "--backend",
        choices=sorted(BACKENDS),
        default=os.environ.get("EMOLOOP_SER_BACKEND", "onnx"),
        help="inference backend: onnx (default, CPU), torch (picks cuda/mps/cpu), coreml (macOS only)",
    )
    parser.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda", "mps"],
        default=os.environ.get("EMOLOOP_SER_DEVICE", "auto"),
        help="torch backend's device; auto picks cuda, then mps, then cpu",
    )
    parser.add_argument("--vad-config", type=Path, default=DEFAULT_VAD_CONFIG, help="endpointing thresholds (TOML)")
    parser.add_argument(
        "--max-stream-s", type=float, default=3600.0, help="longest audio one stream may send (default 3600 s)"
    )
    args = parser.parse_args(argv)
    servicer = SerServicer(args.checkpoint, args.backend, args.vad_config, args.device, args.max_stream_s)
    return serve(settings_from_args("ser", args), [servicer])


if __name__ == "__main__":
    sys.exit(main())
