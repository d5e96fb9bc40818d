"""The `emoloop` command: one console script, a subcommand per task (`emoloop COMMAND --help`)."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from emoloop.client.connect import SERVICES, ServiceDown, connect, health, open_channel, service_address
from emoloop.client.synthesis import SynthesisCall, list_voices
from emoloop.client.wavio import write_wav
from emoloop.v1 import common_pb2, synthesis_pb2_grpc

EMOTION_NAMES = [n.removeprefix("EMOTION_").lower() for n in common_pb2.Emotion.keys()[1:]]


@contextlib.contextmanager
def channel_to(name: str, local: bool) -> Iterator[grpc.Channel]:
    """A channel to the running service, or with --local to one started inside this process.

    --local runs the same server code on a private loopback port, so both paths give the same answers.
    """
    if not local:
        channel = connect(name)
        try:
            yield channel
        finally:
            channel.close()
        return
    from emoloop.services.local import start_local  # only --local loads models into this process

    running = start_local(name)
    channel = open_channel(f"127.0.0.1:{running.port}")
    try:
        yield channel
    finally:
        channel.close()
        running.stop(0)


def status(args: argparse.Namespace) -> int:
    """Print each service's health; exit 1 if any is not SERVING."""
    healthy = True
    for name in SERVICES:
        address = service_address(name)
        with open_channel(address) as channel:
            state = health(channel, name, args.timeout)
        healthy &= state == "SERVING"
        print(f"{name:<10} {address:<22} {state}")
    return 0 if healthy else 1


def say(args: argparse.Namespace) -> int:
    """Speak text with an emotion; write a WAV and/or play it, and report the time to first audio."""
    if not args.output and not args.play:
        raise SystemExit("say: give -o FILE.wav, --play, or both")
    with channel_to("synthesis", args.local) as channel:
        started = time.perf_counter()
        call = SynthesisCall(
            synthesis_pb2_grpc.SynthesisServiceStub(channel),
            [args.text],
            args.emotion,
            engine=args.engine,
            voice=args.voice,
            sample_rate_hz=args.rate,
            timeout_s=120,
        )
        chunks = list(call)
    samples = np.concatenate([c.samples for c in chunks])
    rate = chunks[0].sample_rate_hz
    first_ms = (chunks[0].received_at - started) * 1000
    print(
        f"{args.emotion}: {samples.size / rate:.2f} s of audio at {rate} Hz in {len(chunks)} chunks, "
        f"first chunk after {first_ms:.0f} ms",
        file=sys.stderr,
    )
    if args.output:
        write_wav(args.output, samples, rate)
        print(f"wrote {args.output}", file=sys.stderr)
    if args.play:
        from emoloop.client.audio import play  # PortAudio only when asked to play

        play(samples, rate, device=args.output_device)
    return 0


def voices(args: argparse.Namespace) -> int:
    """List the installed voices, their engines, rates and licences."""
    with channel_to("synthesis", args.local) as channel:
        reply = list_voices(channel)
    print(f"{'engine':<8} {'voice':<24} {'language':<10} {'rate':>6}  licence")
    for voice in sorted(reply.voices, key=lambda v: (v.engine != reply.default_engine, v.engine, v.name)):
        default = " (default engine)" if voice.engine == reply.default_engine else ""
        print(
            f"{voice.engine:<8} {voice.name:<24} {voice.language:<10} {voice.native_sample_rate_hz:>6}  "
            f"{voice.license}{default}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emoloop",
        description="emoloop: an emotion-aware speech loop. Start the services with `honcho start`, then use "
        "these commands. Service addresses: EMOLOOP_<SERVICE>_ADDRESS or EMOLOOP_<SERVICE>_PORT.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    check = commands.add_parser("status", help="health of the SER, policy and synthesis services")
    check.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each service")
    check.set_defaults(run=status)

    speak = commands.add_parser(
        "say",
        help="speak text with an emotion",
        description="Speak TEXT with an emotion through the synthesis service (or in-process with --local).",
    )
    speak.add_argument("text", help="what to say")
    speak.add_argument("--emotion", default="neutral", choices=EMOTION_NAMES, help="default: neutral")
    speak.add_argument("-o", "--output", type=Path, help="write the audio to this WAV file")
    speak.add_argument("--play", action="store_true", help="play the audio on the output device")
    speak.add_argument("--output-device", default=None, help="output device name or index (see `emoloop devices`)")
    speak.add_argument("--engine", default="", help="TTS engine (piper, espeak, ...); default: the service's")
    speak.add_argument("--voice", default="", help="voice name (see `emoloop voices`); default: the engine's")
    speak.add_argument("--rate", type=int, default=0, help="output sample rate in Hz; 0 = the voice's own")
    speak.add_argument("--local", action="store_true", help="synthesise in this process, without the service")
    speak.set_defaults(run=say)

    listing = commands.add_parser("voices", help="list installed voices")
    listing.add_argument("--local", action="store_true", help="ask an in-process synthesis service")
    listing.set_defaults(run=voices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ServiceDown as error:
        print(f"emoloop: {error}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"emoloop: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"emoloop: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
