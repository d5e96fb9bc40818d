"""SER benchmark: per-block compute, endpoint-to-result time, memory, size and held-out accuracy.

Run from the repository root: `python -m bench.ser [--quick]`. The test stream is speech from voices the
shipped model never trained on (the shipped samples and espeak-ng voices outside the training set), with
pauses between utterances. Two measurements:
- in-process, block by block, what the service does per 512-sample block (features, VAD, model window) and
  at each endpoint (the utterance run), so the parts can be told apart;
- through the service as `honcho start` runs it (a separate process), streamed in real time by the client
  library: from the moment the audio that let the server decide an utterance ended was sent, to the
  utterance result at the client; and the service process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import (
    REPO,
    RESULTS,
    append_results,
    free_port,
    history_path,
    load_average,
    machine_header,
    percentile,
    record_history,
    vm_hwm_mb,
)
from emoloop.client.connect import connect
from emoloop.client.ser import SerStream, Utterance
from emoloop.client.wavio import read_wav
from emoloop.models.audio import resample
from emoloop.models.features import FeatureExtractor
from emoloop.models.ser import DEFAULT_CHECKPOINT, SerRecognizer, sidecar_path
from emoloop.models.tts import espeak_lib
from emoloop.models.vad import Endpointer, SileroVad, UtteranceEnd, VadConfig
from emoloop.v1 import ser_pb2_grpc

RATE = 16000
BLOCK = 512
# espeak-ng voices that are not among the generated training voices (training/generate_data.py)
UNSEEN_VOICES = ("en-029+m6", "en-gb-scotland+f4")
SENTENCES = (
    "I asked for the report on Monday and it is still not here.",
    "The train leaves at seven, so we should pack tonight.",
    "Could you tell me where the library is, please?",
)


def test_stream(quick: bool) -> np.ndarray:
    """Speech from unseen voices with 1 s pauses: the shipped samples, then espeak sentences."""
    pieces = [read_wav(path, RATE)[0] for path in sorted((REPO / "samples").glob("*.wav"))]
    engine = espeak_lib.espeak()
    for voice in UNSEEN_VOICES[: 1 if quick else None]:
        for text in SENTENCES[: 1 if quick else None]:
            pieces.append(resample(engine.synthesize(text, voice, {}), engine.sample_rate_hz, RATE))
    silence = np.zeros(RATE, np.float32)
    return np.concatenate([silence, *(part for piece in pieces for part in (piece, silence))])


def in_process(recognizer: SerRecognizer, audio: np.ndarray) -> dict[str, np.ndarray]:
    """Per-block times (µs) of each part, and the utterance runs at endpoints (ms)."""
    features, endpointer = (
        FeatureExtractor(recognizer.checkpoint.feature_config),
        Endpointer(SileroVad(), VadConfig.load()),
    )
    stream = recognizer.stream()
    times: dict[str, list[float]] = {"features": [], "vad": [], "model": [], "block": [], "endpoint": []}
    for start in range(0, audio.size - BLOCK + 1, BLOCK):
        block = audio[start : start + BLOCK]
        t0 = time.perf_counter()
        rows = features.push(block)
        t1 = time.perf_counter()
        events = endpointer.push(block)
        t2 = time.perf_counter()
        stream.push(rows)
        t3 = time.perf_counter()
        for event in events:
            if isinstance(event, UtteranceEnd):
                stream.finish(int(event.start_ms // 10), int(np.ceil(event.end_ms / 10)))
                times["endpoint"].append((time.perf_counter() - t3) * 1e3)
        times["features"].append((t1 - t0) * 1e6)
        times["vad"].append((t2 - t1) * 1e6)
        times["model"].append((t3 - t2) * 1e6)
        times["block"].append((t3 - t0) * 1e6)
    return {name: np.array(values) for name, values in times.items()}


def through_the_service(checkpoint: Path, audio: np.ndarray) -> tuple[list[float], float, float]:
    """Endpoint-to-result times (ms) at the client over a real-time stream, the service's idle and peak RSS."""
    port = free_port()
    command = [sys.executable, "-m", "emoloop.services.ser", "--port", str(port), "--checkpoint", str(checkpoint)]
    service = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        channel = connect("ser", f"127.0.0.1:{port}", timeout_s=120)
        idle_mb = vm_hwm_mb(service.pid)
        stream = SerStream(ser_pb2_grpc.EmotionRecognitionServiceStub(channel), interim=True)
        started = time.perf_counter()
        for index, start in enumerate(range(0, audio.size, BLOCK)):
            time.sleep(max(0.0, started + index * BLOCK / RATE - time.perf_counter()))
            stream.send(audio[start : start + BLOCK])
        stream.close()
        delays = []
        while (event := stream.events.get(timeout=60)) is not None:
            if isinstance(event, Exception):
                raise event
            if isinstance(event, Utterance):
                delays.append((event.received_at - stream.sent_at(event.decided_ms)) * 1e3)
        peak_mb = vm_hwm_mb(service.pid)
        channel.close()
        return delays, idle_mb, peak_mb
    finally:
        service.terminate()
        service.wait(30)


def stats(values: np.ndarray) -> str:
    return f"{np.median(values):.0f} | {percentile(values, 95):.0f} | {values.max():.0f}"


def figures(metrics: dict[str, object]) -> str:
    """The float metrics of a report, as `name 0.123, ...`."""
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ser", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a shorter stream (smoke run)")
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    command = shlex.join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]])
    lines = machine_header("SER benchmark", command)
    recognizer = SerRecognizer.load(args.checkpoint)
    audio = test_stream(args.quick)
    parts = in_process(recognizer, audio)
    delays, idle_mb, peak_mb = through_the_service(args.checkpoint, audio)
    sidecar = json.loads(sidecar_path(args.checkpoint).read_text())
    metrics = sidecar.get("metrics", {})
    held_out = figures(metrics)
    if "cold_start" in metrics:
        sessions = sidecar["training"].get("session_clips")
        held_out += f" (each clip after {sessions} others of its speaker); alone: {figures(metrics['cold_start'])}"
    lines += [
        f"- test stream: {audio.size / RATE:.0f} s, {len(parts['endpoint'])} utterances from voices the model never "
        "trained on (the shipped samples; espeak-ng " + ", ".join(UNSEEN_VOICES) + ")",
        f"- load average at end: {load_average()}",
        "",
        "### Per 512-sample block (32 ms of audio), in-process, ONNX Runtime, one thread",
        "",
        "| part | median (µs) | p95 (µs) | max (µs) |",
        "|---|---|---|---|",
        *(f"| {name} | {stats(parts[name])} |" for name in ("features", "vad", "model", "block")),
        "",
        "The model runs its 1 s window every 6 frames (60 ms), so about every second block carries a model run.",
        "",
        "### At each endpoint",
        "",
        "| measure | median (ms) | p95 (ms) | max (ms) |",
        "|---|---|---|---|",
        f"| utterance run, in-process | {stats(parts['endpoint'])} |",
        f"| endpoint to utterance result at the client, through the service | {stats(np.array(delays))} |",
        "",
        "### The service process and the model",
        "",
        f"- SER service RSS: {idle_mb:.0f} MB after loading, peak {peak_mb:.0f} MB after the stream (VmHWM)",
        f"- parameters: {recognizer.checkpoint.sidecar['parameters']:,}",
        f"- held-out voices (from the checkpoint's sidecar, written by `make train-ser`): {held_out}",
    ]
    headline = {
        "block_p50_us": float(np.median(parts["block"])),
        "endpoint_result_p50_ms": float(np.median(delays)),
        "endpoint_result_p95_ms": percentile(delays, 95),
        "service_peak_rss_mb": peak_mb,
    }
    lines += ["", *record_history("ser", "quick" if args.quick else "full", headline, history_path(args.results))]
    text = "\n".join(lines) + "\n"
    print(text)
    append_results(text, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
