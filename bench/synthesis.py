"""Synthesis benchmark: latency through the service, emotion rendering and intelligibility, per engine.

Run from the repository root: `python -m bench.synthesis [--quick]`. Each engine is measured in its own
subprocess (`--worker ENGINE`), which starts the synthesis service in-process with that engine alone and
calls it over loopback gRPC exactly as the audio client does, so the latency is what a user sees and the
peak RSS belongs to one engine. The parent then scores the recorded audio: prosody against
models/prosody.toml, and word error rate with an offline Whisper (bench/asr.py). Results are printed,
appended to bench/results.md and the first-chunk latencies plotted to bench/synthesis-latency.png.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.asr import AsrUnavailable, Recognizer, WerTally
from bench.common import (
    REPO,
    RESULTS,
    append_results,
    current_rss_mb,
    free_port,
    history_path,
    load_average,
    machine_header,
    peak_rss_mb,
    percentile,
    record_history,
    vm_hwm_mb,
)
from bench.sentences import LONG, SHORT, VARIED
from emoloop.models.emotions import EMOTIONS
from emoloop.models.pitch import F0_CEIL_HZ, estimate_f0
from emoloop.models.prosody import prosody_for
from emoloop.v1 import synthesis_pb2_grpc

PLOT = REPO / "bench" / "synthesis-latency.png"
TARGET_FIRST_CHUNK_MS = 80.0
WER_MARGIN = 0.10  # an emotion may cost at most this much WER over neutral
ENGINES = ("piper", "espeak", "kokoro")
SLOW_ENGINES = {"kokoro"}  # whole-phrase decoding at RTF ~0.7: fewer runs and sentences

# Speech-activity framing for duration and RMS: 10 ms frames, active above -35 dB of the clip's loudest.
ACTIVITY_FRAME_S = 0.010
ACTIVITY_FLOOR_DB = -35.0
# When the table asks for no change, a measure within these bounds counts as unchanged.
UNCHANGED_SEMITONES = 0.5
UNCHANGED_RATIO = 0.10
# YIN falls back to its shortest lag when a frame has no clear trough, which pins the frame at the search ceiling
# (400 Hz). On Kokoro's ~200 Hz voice that is 20-30 % of voiced frames and swamps range and level; such frames
# are no pitch estimate, so frames this close to the ceiling are left out.
CEILING_GUARD = 0.97
# F0 range as the interquartile span: YIN's octave errors reach 5-10 % of a sentence's frames and made a 5-95 %
# span swing from 0.3x to 3x neutral between runs of the same sentence; the 25-75 % span tracks the table.
F0_RANGE_PERCENTILES = (25, 75)


@dataclass(frozen=True)
class Plan:
    """How much to measure for one engine."""

    warmups: int
    runs: int
    sentences: int


def plan_for(engine: str, quick: bool, runs: int | None, sentences: int | None) -> Plan:
    """Default effort per mode; the slow engine gets fewer runs so a full run stays within minutes."""
    slow = engine in SLOW_ENGINES
    if quick:
        default = Plan(1, 2, 1) if slow else Plan(1, 5, 3)
    else:
        default = Plan(2, 10, 10) if slow else Plan(2, 20, len(VARIED))
    return Plan(default.warmups, runs or default.runs, min(sentences or default.sentences, len(VARIED)))


# --------------------------------------------------------------------------------------------------------------
# Worker: one engine, one process, the service in-process, called through gRPC.


@dataclass(frozen=True)
class CallTiming:
    first_chunk_ms: float
    total_ms: float
    audio_s: float


def speak(stub: synthesis_pb2_grpc.SynthesisServiceStub, text: str, emotion: str) -> tuple[CallTiming, np.ndarray, int]:
    """One StreamingSynthesize call with the whole text, timed at the client as the audio client would see it."""
    from emoloop.client.synthesis import SynthesisCall

    started = time.perf_counter()
    first = None
    pieces = []
    rate = 0
    for chunk in SynthesisCall(stub, [text], emotion, timeout_s=300):
        if chunk.samples.size and first is None:
            first = chunk.received_at
        pieces.append(chunk.samples)
        rate = chunk.sample_rate_hz
    ended = time.perf_counter()
    audio = np.concatenate(pieces)
    timing = CallTiming((first - started) * 1e3, (ended - started) * 1e3, audio.size / rate)
    return timing, audio, rate


def run_worker(engine: str, plan: Plan, out_dir: Path) -> None:
    """Measure one engine; write timings.json and audio.npz (native-rate clips per emotion) to out_dir."""
    import grpc

    from emoloop.services.server import ServerSettings, configure_logging, start_server
    from emoloop.services.synthesis.servicer import SynthesisServicer

    configure_logging("WARNING")
    baseline_mb = current_rss_mb()
    load_started = time.perf_counter()
    running = start_server(
        ServerSettings(name="synthesis", port=0, log_level="WARNING"), [SynthesisServicer([engine], engine)]
    )
    load_s = time.perf_counter() - load_started
    try:
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = synthesis_pb2_grpc.SynthesisServiceStub(channel)
            latency: dict[str, list[dict[str, float]]] = {}
            for label, text in (("6 words", SHORT), ("25 words", LONG)):
                for _ in range(plan.warmups):
                    speak(stub, text, "neutral")
                latency[label] = [asdict(speak(stub, text, "neutral")[0]) for _ in range(plan.runs)]
                log(f"{engine}: {label} done")
            # Read before the emotion clips pile up in this process, so the figure is the engine serving.
            serving_peak_mb = peak_rss_mb()
            clips: dict[str, np.ndarray] = {}
            rate = 0
            for emotion in EMOTIONS:
                for index, sentence in enumerate(VARIED[: plan.sentences]):
                    _, clips[f"{emotion}/{index}"], rate = speak(stub, sentence, emotion)
                log(f"{engine}: {emotion} rendered")
    finally:
        running.stop(0)
    np.savez(out_dir / "audio.npz", rate=rate, **clips)
    report = {
        "engine": engine,
        "plan": asdict(plan),
        "load_s": load_s,
        "baseline_rss_mb": baseline_mb,
        "peak_rss_mb": serving_peak_mb,
        "latency": latency,
    }
    (out_dir / "timings.json").write_text(json.dumps(report))


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# Scoring: prosody measures per clip, compared with the same sentence in neutral.


@dataclass(frozen=True)
class ClipMeasures:
    f0_mean_st: float  # mean F0 of voiced frames, semitones re 100 Hz
    f0_span_st: float  # interquartile F0 span of voiced frames, semitones
    duration_s: float  # first to last active frame
    rms: float  # RMS over active frames


def measure_clip(samples: np.ndarray, rate: int) -> ClipMeasures:
    """Prosody of one clip; leading and trailing silence are excluded so padding does not count as speech."""
    f0 = estimate_f0(samples, rate)
    semitones = 12.0 * np.log2(f0[(f0 > 0) & (f0 < CEILING_GUARD * F0_CEIL_HZ)] / 100.0)
    frame = int(ACTIVITY_FRAME_S * rate)
    frames = samples[: samples.size // frame * frame].reshape(-1, frame).astype(np.float64)
    frame_rms = np.sqrt(np.mean(frames**2, axis=1))
    active = frame_rms > frame_rms.max() * 10 ** (ACTIVITY_FLOOR_DB / 20)
    first, last = np.flatnonzero(active)[[0, -1]]
    return ClipMeasures(
        f0_mean_st=float(semitones.mean()) if semitones.size else float("nan"),
        f0_span_st=float(np.ptp(np.percentile(semitones, F0_RANGE_PERCENTILES))) if semitones.size else float("nan"),
        duration_s=(last - first + 1) * ACTIVITY_FRAME_S,
        rms=float(np.sqrt(np.mean(frame_rms[active] ** 2))),
    )


@dataclass(frozen=True)
class Measure:
    """One prosody dimension: how to compare a clip with its neutral twin and what the table asks."""

    title: str
    compare: Callable[[ClipMeasures, ClipMeasures], float]  # (emotion, neutral) -> shift or ratio
    target: Callable[[str], float]  # emotion -> the table's value on the same scale
    is_ratio: bool


MEASURES = (
    Measure(
        "F0 shift (st)",
        lambda e, n: e.f0_mean_st - n.f0_mean_st,
        lambda emotion: prosody_for(emotion).pitch_shift_semitones,
        False,
    ),
    Measure(
        "F0 range ratio",
        lambda e, n: e.f0_span_st / n.f0_span_st,
        lambda emotion: prosody_for(emotion).pitch_range_ratio,
        True,
    ),
    Measure(
        "duration ratio",
        lambda e, n: e.duration_s / n.duration_s,
        lambda emotion: prosody_for(emotion).duration_ratio,
        True,
    ),
    Measure("RMS ratio", lambda e, n: e.rms / n.rms, lambda emotion: prosody_for(emotion).volume_ratio, True),
)


def direction_ok(value: float, target: float, is_ratio: bool) -> bool:
    """Whether a measured change goes the way the table asks (or stays put when the table asks for none)."""
    change, wanted = (np.log(value), np.log(target)) if is_ratio else (value, target)
    if abs(wanted) < 1e-9:
        return abs(change) < (np.log1p(UNCHANGED_RATIO) if is_ratio else UNCHANGED_SEMITONES)
    return bool(np.sign(change) == np.sign(wanted))


def prosody_rows(clips: dict[str, np.ndarray], rate: int, sentences: int) -> dict[str, list[float]]:
    """Per emotion, the median over sentences of each measure against the same sentence in neutral."""
    measured = {key: measure_clip(samples, rate) for key, samples in clips.items()}
    rows = {}
    for emotion in EMOTIONS[1:]:
        rows[emotion] = [
            float(
                np.nanmedian(
                    [m.compare(measured[f"{emotion}/{i}"], measured[f"neutral/{i}"]) for i in range(sentences)]
                )
            )
            for m in MEASURES
        ]
    return rows


def wer_rows(clips: dict[str, np.ndarray], rate: int, sentences: int, recognizer: Recognizer) -> dict[str, float]:
    """Corpus WER per emotion over the benchmark sentences."""
    rows = {}
    for emotion in EMOTIONS:
        tally = WerTally()
        for index in range(sentences):
            tally.add(VARIED[index], recognizer.transcribe(clips[f"{emotion}/{index}"], rate))
        rows[emotion] = tally.wer
    return rows


# --------------------------------------------------------------------------------------------------------------
# Report.


def latency_table(reports: list[dict]) -> list[str]:
    """First chunk at the client (p50/p95), whole-call RTF and peak RSS per engine and sentence."""
    lines = [
        "| engine | sentence | runs | first chunk p50 (ms) | p95 (ms) | ≤ 80 ms | RTF p50 | RTF p95 | audio (s) | "
        "peak RSS (MB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for report in reports:
        for label, runs in report["latency"].items():
            first = [run["first_chunk_ms"] for run in runs]
            rtf = [run["total_ms"] / 1e3 / run["audio_s"] for run in runs]
            p50 = percentile(first, 50)
            lines.append(
                f"| {report['engine']} | {label} | {len(runs)} | {p50:.0f} | {percentile(first, 95):.0f} | "
                f"{'✓' if p50 <= TARGET_FIRST_CHUNK_MS else '✗'} | {percentile(rtf, 50):.3f} | "
                f"{percentile(rtf, 95):.3f} | {runs[0]['audio_s']:.2f} | {report['peak_rss_mb']:.0f} |"
            )
    lines += [
        "",
        "Peak RSS is the VmHWM of the engine's own process (service + client + one engine) after the latency "
        "runs; its baseline before the engine loaded: "
        + ", ".join(f"{r['engine']} {r['baseline_rss_mb']:.0f} MB (load {r['load_s']:.1f} s)" for r in reports)
        + ".",
        "",
        "The synthesis service alone, as `honcho start` runs it (its own process, one answer per emotion): peak RSS "
        + ", ".join(f"{r['engine']} {r['service_rss_mb']:.0f} MB" for r in reports)
        + ".",
    ]
    return lines


def headline_metrics(reports: list[dict]) -> dict[str, float]:
    """Per engine: first chunk of the short sentence (p50, p95), RTF of the long one, the service's peak RSS."""
    metrics = {}
    for report in reports:
        engine, latency = report["engine"], report["latency"]
        first = [run["first_chunk_ms"] for run in latency["6 words"]]
        rtf = [run["total_ms"] / 1e3 / run["audio_s"] for run in latency["25 words"]]
        metrics |= {
            f"{engine}_first_chunk_p50_ms": percentile(first, 50),
            f"{engine}_first_chunk_p95_ms": percentile(first, 95),
            f"{engine}_rtf_p50": percentile(rtf, 50),
            f"{engine}_service_rss_mb": report["service_rss_mb"],
        }
    return metrics


def emotion_table(
    engine: str, prosody: dict[str, list[float]], wers: dict[str, float] | None, sentences: int
) -> list[str]:
    """Each emotion against neutral: measured (table's value), and whether it moves the way the table asks."""
    lines = [
        f"**{engine}**: {sentences} sentences; each figure is the median over sentences of the emotion against the "
        "same sentence in neutral, with the table's value in brackets.",
        "",
        "| emotion | " + " | ".join(f"{m.title} | ✓" for m in MEASURES) + " | WER | ΔWER | ≤ +0.10 |",
        "|---" * (1 + 2 * len(MEASURES) + 3) + "|",
    ]
    for emotion in EMOTIONS:
        cells = []
        for m, value in zip(MEASURES, prosody.get(emotion, [None] * len(MEASURES)), strict=True):
            if value is None:
                cells += ["–", "–"]
                continue
            target = m.target(emotion)
            shown = f"{value:.2f} ({target:.2f})" if m.is_ratio else f"{value:+.1f} ({target:+.1f})"
            cells += [shown, "✓" if direction_ok(value, target, m.is_ratio) else "✗"]
        if wers is None:
            cells += ["n/a", "n/a", "n/a"]
        else:
            delta = wers[emotion] - wers["neutral"]
            cells += [f"{wers[emotion]:.3f}", f"{delta:+.3f}", "✓" if delta <= WER_MARGIN else "✗"]
        lines.append(f"| {emotion} | " + " | ".join(cells) + " |")
    return lines


def plot_latency(reports: list[dict], path: Path, load: str) -> None:
    """First-chunk latency per engine and sentence (log scale: engines differ by orders of magnitude)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, data = [], []
    for report in reports:
        for label, runs in report["latency"].items():
            labels.append(f"{report['engine']}\n{label}")
            data.append([run["first_chunk_ms"] for run in runs])
    figure, axes = plt.subplots(figsize=(1.6 * max(len(labels), 3) + 1, 4.5))
    axes.boxplot(data, whis=(5, 95), showfliers=False)
    for position, values in enumerate(data, start=1):
        jitter = np.random.default_rng(position).uniform(-0.12, 0.12, len(values))
        axes.scatter(position + jitter, values, s=10, alpha=0.6, color="tab:blue")
    axes.set_xticks(range(1, len(labels) + 1), labels)
    axes.axhline(TARGET_FIRST_CHUNK_MS, color="tab:red", linestyle="--", label=f"target {TARGET_FIRST_CHUNK_MS:.0f} ms")
    axes.set_yscale("log")
    axes.set_ylabel("first audio chunk at the client (ms)")
    axes.set_title(f"Synthesis first-chunk latency (whiskers 5-95 %; load at start {load})", fontsize=10)
    axes.legend(loc="upper left")
    axes.grid(axis="y", which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------------------------------------------
# Driver.


def kokoro_installed() -> bool:
    """Kokoro is optional (`make kokoro`); without it the run says so instead of failing."""
    from emoloop.models.tts.kokoro import MANIFEST_FILE, install_dir

    return (install_dir() / MANIFEST_FILE).is_file()


def measure_engine(engine: str, plan: Plan, work: Path) -> tuple[dict, dict[str, np.ndarray], int] | str:
    """Run one engine's worker; its report and clips, or why it could not be measured."""
    out_dir = work / engine
    out_dir.mkdir()
    command = [sys.executable, "-m", "bench.synthesis", "--worker", engine, "--out", str(out_dir)]
    command += ["--runs", str(plan.runs), "--sentences", str(plan.sentences), "--warmups", str(plan.warmups)]
    finished = subprocess.run(command, cwd=REPO)  # its progress and errors go straight to our stderr
    if finished.returncode != 0:
        return f"worker failed with exit code {finished.returncode} (its error is in the log above)"
    report = json.loads((out_dir / "timings.json").read_text())
    with np.load(out_dir / "audio.npz") as archive:
        rate = int(archive["rate"])
        clips = {key: archive[key] for key in archive.files if key != "rate"}
    return report, clips, rate


def load_recognizer() -> Recognizer | str:
    """The Whisper recogniser, or why it is not available (the WER columns then read n/a)."""
    try:
        return Recognizer(threads=os.cpu_count() or 2)
    except AsrUnavailable as error:
        return str(error)


def service_peak_rss_mb(engine: str) -> float:
    """Peak RSS of the synthesis service alone, as `honcho start` runs it, after one answer per emotion."""
    from emoloop.client.connect import connect
    from emoloop.client.synthesis import SynthesisCall

    port = free_port()
    command = [sys.executable, "-m", "emoloop.services.synthesis", "--port", str(port), "--engines", engine]
    service = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    try:
        with connect("synthesis", f"127.0.0.1:{port}", timeout_s=120) as channel:
            stub = synthesis_pb2_grpc.SynthesisServiceStub(channel)
            for emotion in EMOTIONS:
                list(SynthesisCall(stub, [LONG], emotion))
        return vm_hwm_mb(service.pid)
    finally:
        service.terminate()
        service.wait(30)


def run_benchmark(args: argparse.Namespace) -> int:
    """Measure every requested engine, score, print and append the results, and draw the plot."""
    command = shlex.join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]])
    load_at_start = load_average()
    lines = machine_header("Synthesis benchmark", command)
    lines.append(f"- mode: {'quick' if args.quick else 'full'}")
    reports, scored, notes = [], [], []
    recognizer: Recognizer | str | None = None
    with tempfile.TemporaryDirectory(prefix="emoloop-bench-") as temporary:
        for engine in args.engines.split(","):
            engine = engine.strip()
            if engine == "kokoro" and not kokoro_installed():
                notes.append("- kokoro: not installed here (`make kokoro`); skipped.")
                continue
            plan = plan_for(engine, args.quick, args.runs, args.sentences)
            log(f"{engine}: measuring ({plan})")
            result = measure_engine(engine, plan, Path(temporary))
            if isinstance(result, str):
                notes.append(f"- {engine}: {result}; skipped.")
                continue
            report, clips, rate = result
            report["service_rss_mb"] = service_peak_rss_mb(engine)
            reports.append(report)
            notes.append(
                f"- {engine}: {plan.warmups} warm-up(s) + {plan.runs} runs per latency sentence, "
                f"{plan.sentences} sentences x {len(EMOTIONS)} emotions"
                + (" (fewer: whole-phrase decoding is slow)" if engine in SLOW_ENGINES else "")
            )
            if recognizer is None:
                log("loading the recogniser")
                recognizer = load_recognizer()
            wers = None if isinstance(recognizer, str) else wer_rows(clips, rate, plan.sentences, recognizer)
            scored.append((engine, prosody_rows(clips, rate, plan.sentences), wers, plan.sentences))
            log(f"{engine}: scored")
    if isinstance(recognizer, str):
        notes.append(f"- WER not measured: {recognizer}")
    lines += [*notes, f"- load average at end: {load_average()}", "", "### Latency through the service", ""]
    lines += latency_table(reports) if reports else ["No engine could be measured."]
    lines += ["", "### Emotion rendering and intelligibility", ""]
    for engine, prosody, wers, sentences in scored:
        lines += [*emotion_table(engine, prosody, wers, sentences), ""]
    lines.append(
        "RTF is the call's wall time (request sent to last chunk received) over the audio's duration. Prosody: F0 "
        "by YIN (emoloop.models.pitch.estimate_f0) on voiced frames below 97 % of its 400 Hz search ceiling, range "
        "is the 25-75 percentile span in semitones, duration and RMS over the active span (frames above -35 dB of "
        "the clip's peak). A table value of no change counts as ✓ within ±0.5 st or ±10 %. WER: Whisper base int8, "
        "greedy, after lower-casing and dropping punctuation."
    )
    mode = "quick" if args.quick else "full"
    lines += ["", *record_history("synthesis", mode, headline_metrics(reports), history_path(args.results))]
    text = "\n".join(lines) + "\n"
    print(text)
    append_results(text, args.results)
    if reports:
        plot_latency(reports, args.plot, load_at_start)
        log(f"wrote {args.results} and {args.plot}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The benchmark, or (with the hidden --worker) one engine's measurement inside its own process."""
    parser = argparse.ArgumentParser(prog="python -m bench.synthesis", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a few runs and sentences (< 2 min)")
    parser.add_argument(
        "--engines", default=",".join(ENGINES), help="comma-separated (default: all; kokoro if installed)"
    )
    parser.add_argument("--runs", type=int, help="timed runs per latency sentence (default 20; kokoro 10)")
    parser.add_argument("--sentences", type=int, help=f"sentences per emotion (default {len(VARIED)}; kokoro 10)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="Markdown file the results are appended to")
    parser.add_argument("--plot", type=Path, default=PLOT, help="PNG of the first-chunk latencies")
    parser.add_argument("--worker", metavar="ENGINE", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmups", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args.worker, Plan(args.warmups, args.runs, args.sentences), args.out)
        return 0
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
