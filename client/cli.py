"""The `emoloop` command: one console script, a subcommand per task (`emoloop COMMAND --help`)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np

from emoloop.client.connect import (
    SERVICES,
    ServiceDown,
    ServiceFailed,
    connect,
    health,
    open_channel,
    service_address,
)
from emoloop.client.csvlog import TurnLog
from emoloop.client.emotions import EMOTIONS, emotion_of, scores_dict
from emoloop.client.ser import SAMPLE_RATE_HZ, SerStream
from emoloop.client.session import (
    Conversation,
    FileSink,
    SpeakerSink,
    Stubs,
    Voice,
    converse,
    keep_conversing,
    replies_from,
)
from emoloop.client.synthesis import SynthesisCall, list_voices
from emoloop.client.wavio import read_wav, to_linear16, write_wav
from emoloop.v1 import common_pb2, ser_pb2, ser_pb2_grpc, synthesis_pb2_grpc


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
    print(f"{'engine':<10} {'voice':<24} {'language':<10} {'rate':>6}  licence")
    for voice in sorted(reply.voices, key=lambda v: (v.engine != reply.default_engine, v.engine, v.name)):
        default = " (default engine)" if voice.engine == reply.default_engine else ""
        print(
            f"{voice.engine:<10} {voice.name:<24} {voice.language:<10} {voice.native_sample_rate_hz:>6}  "
            f"{voice.license}{default}"
        )
    return 0


def ser(args: argparse.Namespace) -> int:
    """Classify whole WAV files: a table, or one JSON object per file with --json."""
    audio_format = common_pb2.AudioFormat(
        sample_rate_hz=SAMPLE_RATE_HZ, encoding=common_pb2.AUDIO_ENCODING_LINEAR16, channels=1
    )
    with channel_to("ser", args.local) as channel:
        stub = ser_pb2_grpc.EmotionRecognitionServiceStub(channel)
        if not args.json:
            print(f"{'file':<32} {'emotion':<8} {'conf':>5}  " + " ".join(f"{n:>7}" for n in EMOTIONS))
        for path in args.files:
            samples, _ = read_wav(path, SAMPLE_RATE_HZ)
            request = ser_pb2.RecognizeRequest(
                config=ser_pb2.RecognitionConfig(audio_format=audio_format), audio=to_linear16(samples)
            )
            result = stub.Recognize(request, timeout=60).result
            scores = scores_dict(result.scores)
            if args.json:
                print(json.dumps({"path": str(path), "emotion": emotion_of(result.emotion), "scores": scores}))
            else:
                print(
                    f"{path!s:<32} {emotion_of(result.emotion):<8} {result.confidence:>5.2f}  "
                    + " ".join(f"{scores[n]:>7.3f}" for n in EMOTIONS)
                )
    return 0


def _reply_texts(args: argparse.Namespace) -> list[str]:
    """The answer texts from --text or --replies FILE (one per turn)."""
    if args.replies:
        texts = [line.strip() for line in args.replies.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        texts = [args.text] if args.text else []
    if not texts:
        raise SystemExit(f"{args.command}: give --text or --replies FILE")
    return texts


def file_blocks(samples: np.ndarray, realtime: bool, trailing_silence_s: float = 0.6) -> Iterator[np.ndarray]:
    """512-sample blocks of a clip (plus the silence that follows a spoken turn), paced like a microphone."""
    audio = np.concatenate([samples, np.zeros(int(trailing_silence_s * SAMPLE_RATE_HZ), np.float32)])
    started = time.perf_counter()
    for index, start in enumerate(range(0, audio.size, 512)):
        if realtime:
            time.sleep(max(0.0, started + index * 512 / SAMPLE_RATE_HZ - time.perf_counter()))
        yield audio[start : start + 512]


def _voice(args: argparse.Namespace, sample_rate_hz: int = 0) -> Voice:
    return Voice(persona=args.persona, engine=args.engine, voice=args.voice, sample_rate_hz=sample_rate_hz)


class Services:
    """Channels to the three services, reopened after a failure."""

    def __init__(self) -> None:
        self.channels: list[grpc.Channel] = []

    def connect(self) -> Stubs:
        """(Re)connect to all three, waiting for each to be SERVING; raises ServiceDown naming the first missing."""
        self.close()
        for name in ("ser", "policy", "synthesis"):
            self.channels.append(connect(name))
        return Stubs.of(*self.channels)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        self.channels = []


def run(args: argparse.Namespace) -> int:
    """The loop on files: an input WAV in, the answers to an output WAV, one CSV line per turn."""
    samples, _ = read_wav(args.input, SAMPLE_RATE_HZ)
    services = Services()
    try:
        stubs = services.connect()
        sink = FileSink()
        log = TurnLog(args.log) if args.log else None
        conversation = Conversation(stubs, replies_from(_reply_texts(args)), sink, _voice(args, args.rate), log)
        stream = SerStream(stubs.ser, interim=False, session_id=str(args.input))
        converse(conversation, stream, file_blocks(samples, realtime=not args.fast))
    finally:
        services.close()
    turns = len(conversation.records)
    if not turns:
        print(f"run: no utterance was detected in {args.input}", file=sys.stderr)
        return 1
    write_wav(args.output, sink.audio(), sink.sample_rate_hz)
    print(f"wrote {args.output} ({turns} turn{'s' * (turns != 1)})" + (f", logged to {args.log}" if log else ""))
    return 0


MIC_SILENT_S = 5.0  # a running input stream delivers a block every 32 ms; this long without one is a dead device


def live(args: argparse.Namespace) -> int:
    """The live loop: microphone -> SER -> policy -> synthesis -> speaker, with barge-in, until Ctrl-C."""
    from emoloop.client.audio import Microphone, Speaker

    services = Services()
    stubs = services.connect()
    log = TurnLog(args.log) if args.log else None
    with Speaker(args.output_device, args.host_api) as speaker, Microphone(args.input_device, args.host_api) as mic:
        conversation = Conversation(stubs, replies_from(_reply_texts(args)), SpeakerSink(speaker), _voice(args), log)
        speaker.start()  # opened streams stay silent until started: without this live heard nothing and returned
        mic.start()
        print(
            f"listening on {mic.device.name} ({mic.device_rate_hz} Hz), answering on {speaker.device.name}; "
            "Ctrl-C stops"
        )
        try:
            keep_conversing(
                conversation, services.connect, mic.blocks(timeout_s=MIC_SILENT_S), barge_in=not args.no_barge_in
            )
        except KeyboardInterrupt:
            conversation.interrupt()
            print("stopped", file=sys.stderr)
            return 0
        finally:
            services.close()
    # The loop only ends by itself when the microphone stopped delivering audio (device gone, server died).
    print(f"error: no audio from {mic.device.name} for {MIC_SILENT_S:g} s; stopping", file=sys.stderr)
    return 1


def _all_serving() -> bool:
    for name in SERVICES:
        with open_channel(service_address(name)) as channel:
            if health(channel, name, timeout_s=0.5) != "SERVING":
                return False
    return True


def demo(args: argparse.Namespace) -> int:
    """Start the services (unless they run already), run the loop on a sample, stop what it started."""
    args.output.parent.mkdir(parents=True, exist_ok=True)
    services = None
    if not _all_serving():
        services_log = args.output.parent / "services.log"
        print(f"starting the services with honcho (their log: {services_log}) ...")
        with open(services_log, "w") as log_file:
            services = subprocess.Popen(
                [sys.executable, "-m", "honcho", "start"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    try:
        for name in SERVICES:  # wait (up to 3 min on a first, cold start) for each model to load
            connect(name, timeout_s=180).close()
        started = time.perf_counter()
        code = run(args)
        print(f"demo loop took {time.perf_counter() - started:.1f} s")
        return code
    finally:
        if services is not None:
            os.killpg(services.pid, signal.SIGINT)  # what Ctrl-C does: every service shuts down gracefully
            try:
                services.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(services.pid, signal.SIGKILL)
            print("services stopped")


def devices(args: argparse.Namespace) -> int:
    """List the audio devices PortAudio sees."""
    from emoloop.client.audio import list_devices

    print(f"{'index':>5}  {'in':>3} {'out':>3} {'rate':>6}  {'host API':<12} name")
    for device in list_devices():
        marks = ("*in " if device.is_default_input else "") + ("*out" if device.is_default_output else "")
        print(
            f"{device.index:>5}  {device.max_input_channels:>3} {device.max_output_channels:>3} "
            f"{device.default_sample_rate_hz:>6}  {device.host_api:<12} {device.name} {marks}".rstrip()
        )
    return 0


def _add_loop_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--text", default="", help="what emoloop answers, every turn")
    parser.add_argument("--replies", type=Path, help="a file of answers, one line per turn (the last repeats)")
    parser.add_argument("--log", type=Path, default=Path("out/turns.csv"), help="CSV turn log (default out/turns.csv)")
    parser.add_argument(
        "--persona", default="", help="policy persona (support, mirror, cheerful); default: the service's"
    )
    parser.add_argument("--engine", default="", help="TTS engine; default: the service's")
    parser.add_argument("--voice", default="", help="voice name; default: the engine's")


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
    speak.add_argument("--emotion", default="neutral", choices=EMOTIONS, help="default: neutral")
    speak.add_argument("-o", "--output", type=Path, help="write the audio to this WAV file")
    speak.add_argument("--play", action="store_true", help="play the audio on the output device")
    speak.add_argument("--output-device", default=None, help="output device name or index (see `emoloop devices`)")
    speak.add_argument("--engine", default="", help="TTS engine (piper, espeak, ...); default: the service's")
    speak.add_argument("--voice", default="", help="voice name (see `emoloop voices`); default: the engine's")
    speak.add_argument("--rate", type=int, default=0, help="output sample rate in Hz; 0 = the voice's own")
    speak.add_argument("--local", action="store_true", help="synthesise in this process, without the service")
    speak.set_defaults(run=say)

    classify = commands.add_parser(
        "ser",
        help="emotion of WAV files",
        description="Classify each WAV file (any rate; resampled to 16 kHz) with the SER service.",
    )
    classify.add_argument("files", nargs="+", type=Path, metavar="FILE.wav")
    classify.add_argument("--json", action="store_true", help='one JSON object per file: {"path", "emotion", "scores"}')
    classify.add_argument("--local", action="store_true", help="load the model in this process, without the service")
    classify.set_defaults(run=ser)

    loop = commands.add_parser(
        "run",
        help="the loop on files",
        description="Stream a WAV to SER (paced like a microphone), answer each utterance through the policy and "
        "synthesis, write the answers to a WAV and log each turn.",
    )
    loop.add_argument("--input", type=Path, required=True, help="the user's speech (WAV)")
    loop.add_argument("--output", type=Path, required=True, help="where to write the answers (WAV)")
    loop.add_argument("--rate", type=int, default=0, help="answer sample rate in Hz; 0 = the voice's own")
    loop.add_argument(
        "--fast", action="store_true", help="send the audio as fast as possible (latency then means little)"
    )
    _add_loop_arguments(loop)
    loop.set_defaults(run=run)

    talk = commands.add_parser(
        "live",
        help="the live loop: microphone to speaker",
        description="Listen on the microphone, answer each utterance on the speaker; speaking over an answer stops "
        "it (barge-in). Use headphones: the microphone must not hear the answers.",
    )
    talk.add_argument("--input-device", default=None, help="microphone name or index (see `emoloop devices`)")
    talk.add_argument("--output-device", default=None, help="speaker name or index")
    talk.add_argument("--host-api", default=None, help="PortAudio host API (e.g. ALSA, JACK, Core Audio)")
    talk.add_argument("--no-barge-in", action="store_true", help="never interrupt an answer")
    _add_loop_arguments(talk)
    talk.set_defaults(run=live)

    show = commands.add_parser(
        "demo",
        help="the whole loop on a shipped sample, services included",
        description="Start the three services (unless already running), run the file loop on a sample utterance, "
        "print each stage and the latency, log the turn, and stop the services again.",
    )
    show.add_argument("--input", type=Path, default=Path("samples/angry.wav"), help="default samples/angry.wav")
    show.add_argument("--output", type=Path, default=Path("out/demo-answer.wav"), help="default out/demo-answer.wav")
    show.add_argument("--rate", type=int, default=0, help="answer sample rate in Hz; 0 = the voice's own")
    _add_loop_arguments(show)
    show.set_defaults(run=demo, fast=False)

    listing_devices = commands.add_parser("devices", help="list audio devices")
    listing_devices.set_defaults(run=devices)

    listing = commands.add_parser("voices", help="list installed voices")
    listing.add_argument("--local", action="store_true", help="ask an in-process synthesis service")
    listing.set_defaults(run=voices)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ServiceDown, ServiceFailed) as error:
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
