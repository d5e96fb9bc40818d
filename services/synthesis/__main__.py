"""Run the synthesis service (TTS + vocoder): `python -m emoloop.services.synthesis --help`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from emoloop.models.tts import ENGINES
from emoloop.services.server import add_server_arguments, serve, settings_from_args
from emoloop.services.synthesis.servicer import SynthesisServicer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.services.synthesis",
        description="emoloop synthesis service: speaks text with an emotion (gRPC emoloop.v1.SynthesisService).",
    )
    add_server_arguments(parser, "synthesis")
    parser.add_argument(
        "--engines",
        default=os.environ.get("EMOLOOP_SYNTHESIS_ENGINES", "piper,espeak"),
        help=f"comma-separated engines to load, from {', '.join(ENGINES)} (default piper,espeak; "
        "env EMOLOOP_SYNTHESIS_ENGINES); kokoro needs `make kokoro` first, flite the flite"
        " program, festival festival's text2wave",
    )
    parser.add_argument(
        "--default-engine",
        default=os.environ.get("EMOLOOP_SYNTHESIS_DEFAULT_ENGINE", "piper"),
        help="engine used when a request names none (default piper; falls back to the first that loads)",
    )
    parser.add_argument(
        "--piper-voice",
        type=Path,
        action="append",
        default=[],
        metavar="FILE.onnx",
        help="load another Piper voice (its .onnx.json beside it); repeatable",
    )
    parser.add_argument(
        "--max-engine-runs",
        type=int,
        default=int(os.environ.get("EMOLOOP_SYNTHESIS_MAX_ENGINE_RUNS", os.cpu_count() or 1)),
        help="engine runs computing at once; more calls wait their turn (default: the CPU count; "
        "env EMOLOOP_SYNTHESIS_MAX_ENGINE_RUNS). Bounds CPU contention and memory under load",
    )
    args = parser.parse_args(argv)
    if args.max_engine_runs < 1:
        parser.error("--max-engine-runs: must be at least 1")
    engines = [name.strip() for name in args.engines.split(",") if name.strip()]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        parser.error(f"--engines: unknown engine(s) {', '.join(unknown)}; known: {', '.join(ENGINES)}")
    options = {"piper": {"voice_files": args.piper_voice}}
    servicer = SynthesisServicer(engines, args.default_engine, options, args.max_engine_runs)
    return serve(settings_from_args("synthesis", args), [servicer])


if __name__ == "__main__":
    sys.exit(main())
