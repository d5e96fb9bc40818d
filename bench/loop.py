"""End-to-end loop benchmark: latency per stage, memory per process, and how both grow with sessions and length.

Run from the repository root: `python -m bench.loop [--quick]`. The three services run as separate processes,
started from the Procfile's own commands (as `honcho start` runs them) on free ports, so a user's services on
50051-50053 are left alone. Each conversation runs in a client process of its own through the code of
`emoloop run` (SerStream -> converse -> Conversation: policy Decide, then a SynthesisCall into a FileSink), fed
with the shipped sample utterances in real time. Per turn it records the time from the endpoint (the moment the
audio that let SER decide the utterance had ended was sent) to the first answer sample at the client, split into
SER final, hand-off in the client, policy, first synthesis chunk and transport; per process the resident memory
at idle and under load; then the latency with 1, 2, 4 and 8 concurrent sessions and with utterance length. Results are
printed, appended to bench/results.md (with the previous run's headline figures from bench/history.csv) and
plotted to bench/loop-latency.png.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from bench.common import (
    REPO,
    RESULTS,
    append_results,
    cpu_seconds,
    current_rss_mb,
    free_ports,
    history_path,
    load_average,
    machine_cpu_times,
    machine_header,
    peak_rss_mb,
    percentile,
    record_history,
    vm_hwm_mb,
    vm_rss_mb,
)
from bench.sentences import LONG, SHORT, VARIED

RATE = 16000
BLOCK_MS = 512 * 1000 / RATE
PLOT = REPO / "bench" / "loop-latency.png"
PROCFILE = REPO / "Procfile"
TURNS_CSV = REPO / "out" / "bench-loop-turns.csv"
SERVICE_NAMES = ("ser", "policy", "synthesis")
BUDGET_MS = 120.0
MEMORY_BUDGET_MB = 1024.0
SAMPLE_SETS = ("samples", "samples/kokoro-af_heart")  # espeak-ng en-029+m6 (2.1-2.8 s) and Kokoro (3.1-3.7 s)
# Utterance length classes: how many trimmed sample utterances are joined (0 = the first second of one).
LENGTHS = {"short": 0, "medium": 1, "long": 2, "very-long": 4}
JOIN_GAP_S = 0.06  # between joined utterances: far below the endpointer's 250 ms, so they stay one utterance
SHORT_S = 1.0
GROWTH_FLOOR_MS = 5.0  # a stage's median must grow by more than this (and 10 %) with sessions to be named
STAGES = ("ser", "handoff", "policy", "synthesis", "transport")
STAGE_TITLES = {
    "ser": "SER final",
    "handoff": "hand-off",
    "policy": "policy",
    "synthesis": "first synthesis chunk",
    "transport": "transport",
    "end_to_end": "end to end",
}
_FIRST_CHUNK = re.compile(r"event=first_chunk turn_id='([^']+)' ms=([0-9.]+)")


# --------------------------------------------------------------------------------------------------------------
# Turns and their stages.


@dataclass(frozen=True)
class Turn:
    """One answered utterance as the client saw it; the stage times (ms) add up to end_to_end_ms."""

    session: int
    turn_id: str
    clip: str  # which utterance (sample name or length class) it answered
    utterance_ms: float  # as the endpointer cut it
    end_to_end_ms: float  # endpoint -> first answer sample at the client (the turn log's latency_ms)
    ser_result_ms: float  # endpoint -> utterance result at the client
    handoff_ms: float  # result at the client -> answering starts (waits while the previous answer is synthesised)
    policy_ms: float  # Decide round trip (+ picking the reply and opening the synthesis call)
    synthesis_client_ms: float  # synthesis call opened -> first chunk at the client
    synthesis_server_ms: float  # the service's own time to its first chunk (its DEBUG log); NaN if unknown
    playback_ms: float  # first chunk -> first sample out (a file sink: 0)
    whole_turn_ms: float = math.nan  # answering starts -> the whole answer synthesised and the turn logged
    answer_audio_ms: float = math.nan  # length of the answer
    in_emotion: str = ""
    out_emotion: str = ""
    text: str = ""

    @property
    def synthesis_ms(self) -> float:
        """The engine's time to the first chunk, where the service reported it; else the whole call's."""
        return self.synthesis_server_ms if math.isfinite(self.synthesis_server_ms) else self.synthesis_client_ms

    @property
    def transport_ms(self) -> float:
        """The synthesis call's gRPC time (the client's first-chunk time less the service's) and the sink's."""
        return (self.synthesis_client_ms - self.synthesis_ms) + self.playback_ms

    def stage(self, name: str) -> float:
        """A stage's time by name (STAGES, or end_to_end)."""
        return {
            "ser": self.ser_result_ms,
            "handoff": self.handoff_ms,
            "policy": self.policy_ms,
            "synthesis": self.synthesis_ms,
            "transport": self.transport_ms,
            "end_to_end": self.end_to_end_ms,
        }[name]


@dataclass(frozen=True)
class Summary:
    """Median, 95th percentile and maximum of a set of times."""

    n: int
    p50: float
    p95: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        finite = [v for v in values if math.isfinite(v)]
        if not finite:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(finite), percentile(finite, 50), percentile(finite, 95), max(finite))


def stage_summaries(turns: Sequence[Turn]) -> dict[str, Summary]:
    """p50/p95/max per stage and end to end."""
    return {name: Summary.of([t.stage(name) for t in turns]) for name in (*STAGES, "end_to_end")}


def stage_table(turns: Sequence[Turn]) -> list[str]:
    """The per-stage Markdown table."""
    summaries = stage_summaries(turns)
    what = {
        "ser": "endpoint sent -> utterance result at the client (VAD, one whole-utterance model run, two hops)",
        "policy": "Decide round trip (+ picking the reply, opening the synthesis call)",
        "synthesis": "the synthesis service's own time to its first chunk (its log)",
        "handoff": "result at the client -> answering starts (waits while the previous answer is synthesised)",
        "transport": "the synthesis call's gRPC time (client's first chunk less the service's) + the sink (a file: 0)",
        "end_to_end": "endpoint sent -> first answer sample at the client",
    }
    lines = ["| stage | covers | p50 (ms) | p95 (ms) | max (ms) |", "|---|---|---|---|---|"]
    for name in (*STAGES, "end_to_end"):
        s = summaries[name]
        title = f"**{STAGE_TITLES[name]}**" if name == "end_to_end" else STAGE_TITLES[name]
        lines.append(f"| {title} | {what[name]} | {s.p50:.1f} | {s.p95:.1f} | {s.max:.1f} |")
    whole = Summary.of([t.whole_turn_ms for t in turns])
    lines.append(
        f"| (whole turn) | answering starts -> whole answer synthesised, turn logged | {whole.p50:.0f} | "
        f"{whole.p95:.0f} | {whole.max:.0f} |"
    )
    return lines


def within_budget(turns: Sequence[Turn], budget_ms: float = BUDGET_MS) -> float:
    """Share of turns whose first answer sample came within the budget."""
    return sum(t.end_to_end_ms <= budget_ms for t in turns) / len(turns) if turns else math.nan


# --------------------------------------------------------------------------------------------------------------
# Utterances: the shipped samples, trimmed and joined for the length classes.


@dataclass(frozen=True)
class Clip:
    """One utterance to speak: a name and 16 kHz float32 samples."""

    name: str
    samples: np.ndarray

    @property
    def seconds(self) -> float:
        return self.samples.size / RATE


@dataclass(frozen=True)
class Placed:
    """Where a clip sits in a session's audio (stream time, ms)."""

    name: str
    start_ms: float
    end_ms: float


def shipped_clips() -> list[Clip]:
    """The shipped sample utterances: six emotions in two voices, as recorded (their own silences included)."""
    from emoloop.client.wavio import read_wav

    clips = []
    for folder in SAMPLE_SETS:
        for path in sorted((REPO / folder).glob("*.wav")):
            prefix = "" if folder == "samples" else Path(folder).name.split("-")[0] + "/"
            clips.append(Clip(prefix + path.stem, read_wav(path, RATE)[0]))
    return clips


def trim(samples: np.ndarray, floor_db: float = -35.0, frame: int = 160) -> np.ndarray:
    """The active span of a clip: first to last 10 ms frame above floor_db of its loudest frame."""
    frames = samples[: samples.size // frame * frame].reshape(-1, frame)
    rms = np.sqrt((frames.astype(np.float64) ** 2).mean(axis=1)) + 1e-12
    active = np.flatnonzero(20 * np.log10(rms / rms.max()) > floor_db)
    return samples[active[0] * frame : (active[-1] + 1) * frame] if active.size else samples


def length_clips(clips: Sequence[Clip], name: str, count: int) -> list[Clip]:
    """`count` utterances of a length class, each from different samples (joined without an endpoint between)."""
    joined = LENGTHS[name]
    speech = [trim(c.samples) for c in clips]
    out = []
    for i in range(count):
        if joined == 0:
            piece = speech[i % len(speech)][: int(SHORT_S * RATE)].copy()
            fade = int(0.02 * RATE)
            piece[-fade:] *= np.linspace(1, 0, fade, dtype=np.float32)
        else:
            gap = np.zeros(int(JOIN_GAP_S * RATE), np.float32)
            parts = [speech[(i * joined + j) % len(speech)] for j in range(joined)]
            piece = np.concatenate([p for part in parts for p in (part, gap)][:-1])
        out.append(Clip(name, piece.astype(np.float32)))
    return out


def session_audio(clips: Sequence[Clip], lead_s: float, gap_s: float) -> tuple[np.ndarray, list[Placed]]:
    """The clips one after another, `gap_s` of silence after each and `lead_s` before the first."""
    pieces = [np.zeros(int(lead_s * RATE), np.float32)]
    placed, position = [], pieces[0].size
    for clip in clips:
        placed.append(Placed(clip.name, position * 1000 / RATE, (position + clip.samples.size) * 1000 / RATE))
        pieces += [clip.samples, np.zeros(int(gap_s * RATE), np.float32)]
        position += clip.samples.size + int(gap_s * RATE)
    return np.concatenate(pieces), placed


def clip_at(placed: Sequence[Placed], start_ms: float, end_ms: float) -> str:
    """The clip an utterance (as the endpointer cut it) overlaps most."""
    best, overlap = "?", 0.0
    for p in placed:
        shared = min(end_ms, p.end_ms) - max(start_ms, p.start_ms)
        if shared > overlap:
            best, overlap = p.name, shared
    return best


def replies_for(session: int, turns: int) -> list[str]:
    """Varied answer texts (6-25 words), a different order per session, enough for every turn."""
    texts = [SHORT, *VARIED, LONG]
    texts = texts[session % len(texts) :] + texts[: session % len(texts)]
    return (texts * (turns // len(texts) + 2))[: turns + 5]


# --------------------------------------------------------------------------------------------------------------
# The services, from the Procfile, as separate processes.


def procfile_commands(path: Path) -> dict[str, list[str]]:
    """The Procfile's `name: command` lines for the three services, as argument lists (run without a shell)."""
    commands = {}
    for line in path.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#") or ":" not in line:
            continue
        name, command = (part.strip() for part in line.split(":", 1))
        if name not in SERVICE_NAMES:
            continue
        if any(ch in command for ch in "$|&;<>`"):
            raise ValueError(f"{path}: {name}: shell syntax is not supported here: {command}")
        commands[name] = shlex.split(command)
    missing = sorted(set(SERVICE_NAMES) - set(commands))
    if missing:
        raise ValueError(f"{path}: no entry for {', '.join(missing)}")
    return commands


def clean_env(ports: dict[str, int]) -> dict[str, str]:
    """The caller's environment without EMOLOOP_* settings (tokens, hosts, ports, engines), plus our ports.

    The services then run with the Procfile's defaults, and the clients find them on the benchmark's ports.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOLOOP_")}
    env.update({f"EMOLOOP_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    env["PYTHONUNBUFFERED"] = "1"  # honcho sets it too: log lines reach the file as they happen
    return env


class ServiceGroup:
    """The three services started from the Procfile on free ports; stopped (SIGINT, then SIGKILL) on exit.

    Each runs in a session of its own, so a Ctrl-C in the terminal reaches only this process, whose exit
    then stops them: nothing is left running, whatever ends the benchmark.
    """

    def __init__(self, procfile: Path, work: Path) -> None:
        self.commands = procfile_commands(procfile)
        self.ports = dict(zip(SERVICE_NAMES, free_ports(len(SERVICE_NAMES)), strict=True))
        self.env = clean_env(self.ports)
        self.logs = {name: work / f"{name}.log" for name in SERVICE_NAMES}
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def pids(self) -> dict[str, int]:
        return {name: process.pid for name, process in self.processes.items()}

    def __enter__(self) -> ServiceGroup:
        try:
            for name in SERVICE_NAMES:
                env = dict(self.env)
                if name == "synthesis":  # its per-call first-chunk time is logged at DEBUG
                    env["EMOLOOP_SYNTHESIS_LOG_LEVEL"] = "DEBUG"
                with self.logs[name].open("w") as log_file:
                    self.processes[name] = subprocess.Popen(
                        self.commands[name],
                        cwd=REPO,
                        env=env,
                        stdin=subprocess.DEVNULL,
                        stdout=log_file,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
            self.wait_serving(timeout_s=180)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_serving(self, timeout_s: float) -> None:
        """Wait until every service answers health SERVING; fail with its log if one exits or never does."""
        from emoloop.client.connect import ServiceDown, connect

        deadline = time.monotonic() + timeout_s
        for name in SERVICE_NAMES:
            while True:
                if self.processes[name].poll() is not None:
                    raise RuntimeError(f"the {name} service exited at start:\n{self.log_tail(name)}")
                try:
                    connect(name, f"127.0.0.1:{self.ports[name]}", timeout_s=2).close()
                    break
                except ServiceDown:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the {name} service never became SERVING:\n{self.log_tail(name)}") from None

    def log_tail(self, name: str, lines: int = 20) -> str:
        return "\n".join(self.logs[name].read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGINT (what Ctrl-C under honcho does: a graceful stop), then SIGKILL for any that hang."""
        for process in self.processes.values():
            if process.poll() is None:
                _signal_group(process, signal.SIGINT)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(5)

    def first_chunk_times(self) -> dict[str, float]:
        """The synthesis service's own time to the first chunk, per turn id, from its log."""
        return {m[1]: float(m[2]) for m in _FIRST_CHUNK.finditer(self.logs["synthesis"].read_text(errors="replace"))}


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


# --------------------------------------------------------------------------------------------------------------
# Memory and CPU while sessions run.


class Sampler:
    """Samples every process's resident memory (VmRSS) in the background, keeping each phase's peaks.

    Clients are folded into one row, the largest single client: the budget is one user's loop.
    """

    def __init__(self, services: dict[str, int], interval_s: float = 0.05) -> None:
        self.services = services
        self.clients: list[int] = []
        self.phase = "idle"
        self.peaks: dict[str, dict[str, float]] = {}
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def sample(self) -> None:
        """One reading of every process, into the current phase's peaks."""
        peaks = self.peaks.setdefault(self.phase, {})
        readings = {name: vm_rss_mb(pid) for name, pid in self.services.items()}
        client = [vm_rss_mb(pid) for pid in list(self.clients)]
        client = [mb for mb in client if math.isfinite(mb)]
        if client:
            readings["client"] = max(client)
        for name, mb in readings.items():
            if math.isfinite(mb):
                peaks[name] = max(peaks.get(name, 0.0), mb)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()


@dataclass
class Phase:
    """One measured set of concurrent sessions: its turns, and the CPU each process used meanwhile."""

    name: str
    sessions: int
    turns: list[Turn]
    wall_s: float
    cores: dict[str, float]  # CPU cores used on average over the phase, per service and all clients
    machine_cores: float  # cores the whole machine was busy (everything, not only emoloop)
    client_idle_mb: float = math.nan
    client_peak_mb: float = math.nan

    @property
    def turns_per_s(self) -> float:
        return len(self.turns) / self.wall_s if self.wall_s else math.nan


@dataclass
class SessionPlan:
    """One client's conversation: its audio, where each clip sits in it, and its answer texts."""

    index: int
    audio: np.ndarray
    placed: list[Placed]
    replies: list[str]


def plan_sessions(clips: Sequence[Clip], sessions: int, turns: int, gap_s: float) -> list[SessionPlan]:
    """`sessions` conversations of `turns` utterances each, with endpoints spread evenly in time.

    Session k starts its first utterance k/sessions of a turn period later, as uncorrelated users would, and
    speaks the clips in its own order.
    """
    period = float(np.mean([c.seconds for c in clips])) + gap_s
    plans = []
    for k in range(sessions):
        order = [clips[(k * 5 + i) % len(clips)] for i in range(turns)]
        audio, placed = session_audio(order, 0.5 + period * k / sessions, gap_s)
        plans.append(SessionPlan(k, audio, placed, replies_for(k, turns)))
    return plans


def run_phase(
    name: str, plans: list[SessionPlan], group: ServiceGroup, sampler: Sampler, work: Path, verbose: bool
) -> Phase:
    """Run every session in its own client process at once; their turns and the CPU it all took."""
    from emoloop.client.wavio import write_wav

    workers: list[tuple[SessionPlan, subprocess.Popen, Path]] = []
    try:
        for plan in plans:
            stem = work / f"{name}-{plan.index}"
            write_wav(stem.with_suffix(".wav"), plan.audio, RATE)
            spec = {
                "audio": str(stem.with_suffix(".wav")),
                "replies": plan.replies,
                "out": str(stem.with_suffix(".json")),
                "log": str(stem.with_suffix(".csv")),
                "session": plan.index,
                "verbose": verbose,
            }
            stem.with_suffix(".spec.json").write_text(json.dumps(spec))
            process = subprocess.Popen(
                [sys.executable, "-m", "bench.loop", "--worker", str(stem.with_suffix(".spec.json"))],
                cwd=REPO,
                env=group.env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            workers.append((plan, process, stem.with_suffix(".json")))
        for plan, process, _ in workers:  # each says "ready" once connected, with its audio loaded
            if process.stdout is None or process.stdout.readline().strip() != "ready":
                raise RuntimeError(f"{name}: client {plan.index} failed to start (exit code {process.wait(30)})")
        sampler.phase, sampler.clients = name, [process.pid for _, process, _ in workers]
        cpu_before = {n: cpu_seconds(pid) for n, pid in group.pids.items()}
        busy_before, total_before = machine_cpu_times()
        started = time.perf_counter()
        for _, process, _ in workers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.close()
        longest_s = max(plan.audio.size for plan in plans) / RATE
        for plan, process, _ in workers:
            code = process.wait(timeout=longest_s + 180)
            if code != 0:
                raise RuntimeError(f"{name}: client {plan.index} failed with exit code {code} (its error is above)")
        wall_s = time.perf_counter() - started
        busy_after, total_after = machine_cpu_times()
        cores = {n: (cpu_seconds(pid) - cpu_before[n]) / wall_s for n, pid in group.pids.items()}
        reports = [json.loads(out.read_text()) for _, _, out in workers]
    finally:
        sampler.clients = []
        for _, process, _ in workers:
            if process.poll() is None:
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
    cores["clients"] = sum(r["cpu_s"] for r in reports) / wall_s
    machine = (busy_after - busy_before) / (total_after - total_before) * (os.cpu_count() or 1)
    server_first = group.first_chunk_times()
    turns = []
    for plan, report in zip(plans, reports, strict=True):
        for row in report["turns"]:
            turns.append(
                Turn(
                    session=plan.index,
                    turn_id=row["turn_id"],
                    clip=clip_at(plan.placed, row["start_ms"], row["end_ms"]),
                    utterance_ms=row["utterance_ms"],
                    end_to_end_ms=row["latency_ms"],
                    ser_result_ms=row["ser_result_ms"],
                    handoff_ms=row["ser_ms"] - row["ser_result_ms"],
                    policy_ms=row["policy_ms"],
                    synthesis_client_ms=row["synthesis_first_chunk_ms"],
                    synthesis_server_ms=server_first.get(row["turn_id"], math.nan),
                    playback_ms=row["playback_ms"],
                    whole_turn_ms=row["whole_turn_ms"],
                    answer_audio_ms=row["answer_ms"],
                    in_emotion=row["in_emotion"],
                    out_emotion=row["out_emotion"],
                    text=row["text"],
                )
            )
    return Phase(
        name,
        len(plans),
        turns,
        wall_s,
        cores,
        machine,
        client_idle_mb=max(r["idle_rss_mb"] for r in reports),
        client_peak_mb=max(r["peak_rss_mb"] for r in reports),
    )


# --------------------------------------------------------------------------------------------------------------
# Worker: one client process, one conversation through the code of `emoloop run`.


def run_worker(spec_path: Path) -> int:
    """Connect, say "ready", wait for "go", then converse over the audio in real time; write the turns as JSON."""
    from emoloop.client.cli import Services, file_blocks
    from emoloop.client.csvlog import TurnLog, TurnRecord
    from emoloop.client.ser import SAMPLE_RATE_HZ, SerStream, Utterance
    from emoloop.client.session import Conversation, FileSink, Voice, converse, replies_from
    from emoloop.client.wavio import read_wav

    arrivals: dict[str, tuple[float, float, float, float]] = {}  # turn id -> (endpoint to result, start, end, whole)

    class TimedConversation(Conversation):
        """The client's Conversation, also noting when each SER result reached the client (splits ser_ms)."""

        def answer(self, utterance: Utterance, endpoint_at: float) -> TurnRecord:
            started = time.perf_counter()
            record = super().answer(utterance, endpoint_at)
            result_ms = (utterance.received_at - endpoint_at) * 1000
            whole_ms = (time.perf_counter() - started) * 1000
            arrivals[record.turn_id] = (result_ms, utterance.start_ms, utterance.end_ms, whole_ms)
            return record

    spec = json.loads(spec_path.read_text())
    samples, _ = read_wav(Path(spec["audio"]), SAMPLE_RATE_HZ)
    session = spec["session"]

    def report(line: str) -> None:
        if spec["verbose"]:
            print(f"[session {session}] {line}", file=sys.stderr, flush=True)

    services = Services()
    try:
        stubs = services.connect()
        idle_mb = current_rss_mb()
        print("ready", flush=True)
        sys.stdout = sys.stderr  # nobody reads the pipe after "ready": anything printed later must not fill it
        if sys.stdin.readline().strip() != "go":
            return 1
        cpu_started = sum(os.times()[:2])
        conversation = TimedConversation(
            stubs, replies_from(spec["replies"]), FileSink(), Voice(), TurnLog(Path(spec["log"])), report
        )
        stream = SerStream(stubs.ser, interim=False, session_id=f"bench-loop-{session}")
        converse(conversation, stream, file_blocks(samples, realtime=True))
    finally:
        services.close()
    rows = []
    for record in conversation.records:
        result_ms, start_ms, end_ms, whole_ms = arrivals[record.turn_id]
        timing = {"ser_result_ms": result_ms, "start_ms": start_ms, "end_ms": end_ms, "whole_turn_ms": whole_ms}
        rows.append({**asdict(record), **timing})
    out = {
        "turns": rows,
        "idle_rss_mb": idle_mb,
        "peak_rss_mb": peak_rss_mb(),
        "cpu_s": sum(os.times()[:2]) - cpu_started,
    }
    Path(spec["out"]).write_text(json.dumps(out))
    return 0


# --------------------------------------------------------------------------------------------------------------
# Report.


@dataclass
class Memory:
    """Resident memory per process: at idle, each phase's sampled peak, and VmHWM over the whole run."""

    idle: dict[str, float]
    peaks: dict[str, dict[str, float]]  # phase -> process -> MB
    hwm: dict[str, float] = field(default_factory=dict)


def memory_table(memory: Memory, phases: Sequence[str]) -> list[str]:
    """Per process and summed, against the 1 GB budget: idle, the peak in each phase, and VmHWM."""
    rows = [*SERVICE_NAMES, "client"]
    header = ["process", "idle (MB)", *(f"peak, {p} (MB)" for p in phases), "VmHWM, whole run (MB)"]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    columns = [memory.idle, *(memory.peaks.get(p, {}) for p in phases), memory.hwm]
    for name in rows:
        label = "client (the largest one)" if name == "client" else name
        lines.append(f"| {label} | " + " | ".join(f"{c.get(name, math.nan):.0f}" for c in columns) + " |")
    sums = [sum(c.get(name, 0.0) for name in rows) for c in columns]
    lines.append("| **sum** | " + " | ".join(f"**{s:.0f}** ({s / MEMORY_BUDGET_MB:.0%} of 1 GB)" for s in sums) + " |")
    return lines


def scale_rows(levels: Sequence[Phase]) -> list[str]:
    """Latency against concurrent sessions, with per-stage medians and the CPU it took."""
    lines = [
        "| sessions | turns | turns/s | e2e p50 (ms) | e2e p95 (ms) | e2e max (ms) | ≤ 120 ms | "
        + " | ".join(f"{STAGE_TITLES[n]} p50" for n in STAGES)
        + " | whole turn p50 | CPU cores: ser / policy / synthesis / clients | whole machine |",
        "|---" * (10 + len(STAGES)) + "|",
    ]
    for phase in levels:
        s = stage_summaries(phase.turns)
        e = s["end_to_end"]
        cores = " / ".join(f"{phase.cores.get(n, math.nan):.2f}" for n in (*SERVICE_NAMES, "clients"))
        lines.append(
            f"| {phase.sessions} | {len(phase.turns)} | {phase.turns_per_s:.2f} | {e.p50:.0f} | {e.p95:.0f} | "
            f"{e.max:.0f} | {within_budget(phase.turns):.0%} | "
            + " | ".join(f"{s[n].p50:.1f}" for n in STAGES)
            + f" | {Summary.of([t.whole_turn_ms for t in phase.turns]).p50:.0f} | {cores} | "
            f"{phase.machine_cores:.2f} of {os.cpu_count()} |"
        )
    return lines


def write_turns(path: Path, phases: Sequence[Phase]) -> None:
    """Every measured turn, one CSV row each with its phase, for digging beyond the summaries."""
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f.name for f in fields(Turn)]
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["phase", "sessions", *names, "synthesis_ms", "transport_ms"])
        for phase in phases:
            for turn in phase.turns:
                values = [getattr(turn, name) for name in names]
                writer.writerow([phase.name, phase.sessions, *values, turn.synthesis_ms, turn.transport_ms])


def length_groups(phase: Phase) -> dict[str, list[Turn]]:
    """The length phase's turns by length class, in the classes' order."""
    groups: dict[str, list[Turn]] = {name: [] for name in LENGTHS}
    for turn in phase.turns:
        groups.setdefault(turn.clip, []).append(turn)
    return {name: turns for name, turns in groups.items() if turns}


def length_rows(groups: dict[str, list[Turn]]) -> list[str]:
    """Latency against the length of the utterance (one session)."""
    lines = [
        "| utterance | length as cut (median, s) | turns | e2e p50 (ms) | e2e p95 (ms) | SER final p50 (ms) | "
        "SER final p95 (ms) | synthesis p50 (ms) |",
        "|---" * 8 + "|",
    ]
    for name, turns in groups.items():
        s = stage_summaries(turns)
        length = float(np.median([t.utterance_ms for t in turns])) / 1000
        lines.append(
            f"| {name} | {length:.2f} | {len(turns)} | {s['end_to_end'].p50:.0f} | {s['end_to_end'].p95:.0f} | "
            f"{s['ser'].p50:.1f} | {s['ser'].p95:.1f} | {s['synthesis'].p50:.1f} |"
        )
    return lines


REMEDIES = {
    "ser": "The SER service works for every open stream on every 32 ms block (features, the VAD, and the model's 1 s "
    "window every 60 ms, which `emoloop run` never reads: it asks for no interim results) and runs the whole "
    "utterance through the model at each endpoint, all inside one process. To move it: skip the window runs for "
    "streams without interim results, batch the windows of all streams into one ONNX call per tick, bound the "
    "endpoint run (`max_utterance_frames`), or give SER a core of its own.",
    "synthesis": "Each answer's first chunk needs the engine's acoustic model over the whole first phrase and one "
    "vocoder chunk, and concurrent answers (and the rest of each answer, synthesised as fast as possible) share "
    "the same cores. To move it: a shorter first phrase (cut at the first clause or a few words), pace synthesis "
    "after the first chunk to real time so later phrases do not compete with other turns' first chunks, or the "
    "light espeak engine under load.",
    "policy": "The policy is a small MLP (about 0.1 ms); a growing Decide time is time spent waiting for a CPU or "
    "for the GIL behind the other services' work, not the model. To move it: fewer runnable threads per core "
    "(lower `--max-workers`), or run the policy inside the client.",
    "handoff": "The hand-off is an utterance result waiting in the client while the session's previous answer is "
    "still being synthesised: the file loop (like `live --no-barge-in`) takes strict turns and synthesises each whole "
    "answer before it answers the next utterance. So the limit is synthesis throughput (whole answers per second), "
    "not the first chunk. To move it: more synthesis throughput (cores; a cheaper engine or voice under load), fewer "
    "sessions per machine, or a loop that lets a new utterance cut the previous answer's synthesis short (as `live` "
    "does with barge-in).",
    "transport": "Transport is loopback gRPC and the client's threads; when it grows, the client processes are "
    "waiting for a CPU. To move it: fewer runnable threads than cores, or fewer client processes per machine.",
}


def growth_floor_ms(base: Summary) -> float:
    """How much a stage's median must grow to count as more than noise: 5 ms and 10 % of its base."""
    return max(GROWTH_FLOOR_MS, 0.1 * base.p50)


def first_bottleneck(levels: Sequence[Phase]) -> tuple[str | None, str]:
    """The stage that first grows beyond noise as sessions are added (the most, at the first level where one does).

    Returns it (None if none grew) and a paragraph with the data and what would move it.
    """
    if len(levels) < 2:
        return None, "Only one session level was measured, so no bottleneck can be named from growth."
    base = stage_summaries(levels[0].turns)
    first: tuple[Phase, str, float] | None = None
    for phase in levels[1:]:
        now = stage_summaries(phase.turns)
        growth = {name: now[name].p50 - base[name].p50 for name in STAGES}
        stage = max(growth, key=lambda name: growth[name])
        if growth[stage] > growth_floor_ms(base[stage]):
            first = (phase, stage, growth[stage])
            break
    high = levels[-1]
    top = stage_summaries(high.turns)
    ncores = os.cpu_count() or 1
    emoloop_cores = sum(high.cores.values())
    text = (
        f"From {levels[0].sessions} to {high.sessions} concurrent sessions the end-to-end median went from "
        f"{base['end_to_end'].p50:.0f} to {top['end_to_end'].p50:.0f} ms and the p95 from "
        f"{base['end_to_end'].p95:.0f} to {top['end_to_end'].p95:.0f} ms; per stage the median changed by "
        + ", ".join(f"{STAGE_TITLES[n]} {top[n].p50 - base[n].p50:+.1f}" for n in STAGES)
        + f" ms. At {high.sessions} sessions emoloop's processes used {emoloop_cores:.2f} of the {ncores} cores "
        f"(ser {high.cores['ser']:.2f}, synthesis {high.cores['synthesis']:.2f}, policy {high.cores['policy']:.2f}, "
        f"clients {high.cores['clients']:.2f}); the whole machine was busy on {high.machine_cores:.2f}. "
    )
    if emoloop_cores >= 0.85 * ncores:
        text += "emoloop itself saturated the cores: the limit is CPU time. "
    elif high.machine_cores >= 0.85 * ncores:
        text += (
            f"The cores were saturated, {high.machine_cores - emoloop_cores:.2f} of them by other work on the "
            "machine, so these timings include waiting for a core that emoloop would have had to itself on a quiet "
            "machine. "
        )
    if first is None:
        return None, text + f"No stage's median grew beyond noise (5 ms and 10 %) up to {high.sessions} sessions."
    phase, stage, grown = first
    now = stage_summaries(phase.turns)
    text += (
        f"The first bottleneck is **{STAGE_TITLES[stage]}**: it is the first stage to grow, at {phase.sessions} "
        f"sessions (median +{grown:.1f} ms, p95 {base[stage].p95:.0f} -> {now[stage].p95:.0f} ms). "
        + _whole_turns(stage, levels[0], phase)
        + REMEDIES[stage]
    )
    top_growth = {name: top[name].p50 - base[name].p50 for name in STAGES}
    worst = max(top_growth, key=lambda name: top_growth[name])
    if worst != stage and high is not phase and top_growth[worst] > growth_floor_ms(base[worst]):
        text += (
            f" At {high.sessions} sessions the largest growth is in **{STAGE_TITLES[worst]}** (median "
            f"+{top_growth[worst]:.0f} ms). " + _whole_turns(worst, levels[0], high) + REMEDIES[worst]
        )
    return stage, text


def _whole_turns(stage: str, base: Phase, phase: Phase) -> str:
    """For a growing hand-off: how long whole turns took against how often each session spoke."""
    if stage != "handoff":
        return ""
    whole = [Summary.of([t.whole_turn_ms for t in p.turns]) for p in (base, phase)]
    every_s = phase.wall_s * phase.sessions / max(1, len(phase.turns))
    return (
        f"A whole turn (policy and the whole answer's synthesis) took p50 {whole[1].p50:.0f} ms (p95 "
        f"{whole[1].p95:.0f}) there against {whole[0].p50:.0f} ms with one session, while each session spoke again "
        f"about every {every_s:.1f} s. "
    )


def headline_metrics(main: Phase, levels: Sequence[Phase], lengths: dict[str, list[Turn]], memory: Memory) -> dict:
    """The figures history.csv keeps per run (all lower-is-better)."""
    s = stage_summaries(main.turns)
    metrics = {
        "e2e_p50_ms": s["end_to_end"].p50,
        "e2e_p95_ms": s["end_to_end"].p95,
        "e2e_max_ms": s["end_to_end"].max,
        **{f"{name}_p50_ms": s[name].p50 for name in STAGES},
        "memory_idle_sum_mb": sum(memory.idle.get(n, 0.0) for n in (*SERVICE_NAMES, "client")),
        "memory_peak_sum_mb": sum(memory.hwm.get(n, 0.0) for n in (*SERVICE_NAMES, "client")),
    }
    for phase in levels[1:]:
        e = stage_summaries(phase.turns)["end_to_end"]
        metrics[f"e2e_p50_ms_{phase.sessions}_sessions"] = e.p50
        metrics[f"e2e_p95_ms_{phase.sessions}_sessions"] = e.p95
    for name, turns in lengths.items():
        metrics[f"e2e_p50_ms_{name}_utterance"] = stage_summaries(turns)["end_to_end"].p50
    return metrics


def plot(levels: Sequence[Phase], lengths: dict[str, list[Turn]], path: Path, load: str) -> None:
    """Latency against concurrent sessions and against utterance length, with the 120 ms budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if lengths else 1
    figure, axes = plt.subplots(1, panels, figsize=(6 * panels, 4.5), squeeze=False)
    left = axes[0][0]
    sessions = [p.sessions for p in levels]
    summaries = [stage_summaries(p.turns) for p in levels]
    left.plot(sessions, [s["end_to_end"].p50 for s in summaries], "o-", color="black", label="end to end p50")
    left.plot(sessions, [s["end_to_end"].p95 for s in summaries], "o--", color="black", label="end to end p95")
    for name in STAGES:
        left.plot(sessions, [s[name].p50 for s in summaries], ".-", alpha=0.8, label=f"{STAGE_TITLES[name]} p50")
    left.set_xscale("log", base=2)
    left.set_xticks(sessions, [str(n) for n in sessions])
    left.set_yscale("log")  # from milliseconds to seconds once a level saturates
    left.set_xlabel("concurrent sessions")
    left.set_title("Latency against concurrent sessions (log scale)", fontsize=10)
    if lengths:
        right = axes[0][1]
        seconds = [float(np.median([t.utterance_ms for t in turns])) / 1000 for turns in lengths.values()]
        groups = [stage_summaries(turns) for turns in lengths.values()]
        right.plot(seconds, [g["end_to_end"].p50 for g in groups], "o-", color="black", label="end to end p50")
        right.plot(seconds, [g["end_to_end"].p95 for g in groups], "o--", color="black", label="end to end p95")
        for name in STAGES:
            right.plot(seconds, [g[name].p50 for g in groups], ".-", alpha=0.8, label=f"{STAGE_TITLES[name]} p50")
        right.set_xlabel("utterance length as cut by the endpointer (s), one session")
        right.set_title("Latency against utterance length", fontsize=10)
    for ax in axes[0]:
        ax.axhline(BUDGET_MS, color="tab:red", linestyle=":", label="budget 120 ms")
        ax.set_ylabel("endpoint -> first answer sample (ms)")
        ax.set_ylim(bottom=0.5 if ax is left else 0)
        ax.grid(alpha=0.3, which="both" if ax is left else "major")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    figure.suptitle(f"emoloop loop latency (load average at start {load})", fontsize=10)
    figure.tight_layout(rect=(0, 0.1, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)


# --------------------------------------------------------------------------------------------------------------
# Driver.


@dataclass(frozen=True)
class Settings:
    """How much to measure; the defaults of a full and of a quick run."""

    turns: int
    sessions: tuple[int, ...]
    scale_turns: int
    lengths: tuple[str, ...]
    length_turns: int
    warmup: int
    gap_s: float


FULL = Settings(50, (1, 2, 4, 8), 10, tuple(LENGTHS), 5, 2, 1.0)
QUICK = Settings(8, (1, 2), 3, ("short", "long"), 2, 1, 1.0)


def settings_from(args: argparse.Namespace) -> tuple[Settings, str]:
    """The mode's defaults with any flags given applied; mode is quick, full or custom (for the history)."""
    base = QUICK if args.quick else FULL
    given = {
        "turns": args.turns,
        "sessions": tuple(int(n) for n in args.sessions.split(",") if n.strip()) if args.sessions else None,
        "scale_turns": args.scale_turns,
        "lengths": tuple(n.strip() for n in args.lengths.split(",") if n.strip() and n.strip() != "none")
        if args.lengths is not None
        else None,
        "length_turns": args.length_turns,
        "warmup": args.warmup,
        "gap_s": args.gap,
    }
    changed = {k: v for k, v in given.items() if v is not None}
    settings = Settings(**{f.name: changed.get(f.name, getattr(base, f.name)) for f in fields(Settings)})
    unknown = set(settings.lengths) - set(LENGTHS)
    if unknown:
        raise SystemExit(f"--lengths: unknown {', '.join(sorted(unknown))}; known: {', '.join(LENGTHS)}")
    if 1 not in settings.sessions:
        settings = Settings(**{**asdict(settings), "sessions": (1, *settings.sessions)})
    mode = ("quick" if args.quick else "full") if not changed else "custom"
    return settings, mode


def log(message: str) -> None:
    """Progress on stderr, so stdout carries only the results."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_benchmark(args: argparse.Namespace) -> int:
    """Start the services, run every phase, stop them; print, append and plot the results."""
    settings, mode = settings_from(args)
    command = shlex.join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]])
    load_at_start = load_average()
    lines = machine_header("End-to-end loop benchmark", command)
    began = time.perf_counter()
    clips = shipped_clips()
    levels: list[Phase] = []
    with tempfile.TemporaryDirectory(prefix="emoloop-bench-loop-") as temporary:
        work = Path(temporary)
        log(f"starting the services from {args.procfile.name} ({mode} mode: {settings})")
        with ServiceGroup(args.procfile, work) as group:
            ports = group.ports
            sampler = Sampler(group.pids)
            time.sleep(1.0)  # settle after loading
            sampler.sample()
            memory = Memory(idle=dict(sampler.peaks["idle"]), peaks={})
            sampler.start()
            try:
                if settings.warmup:
                    log(f"warm-up: {settings.warmup} turn(s), not counted")
                    run_phase(
                        "warm-up",
                        plan_sessions(clips, 1, settings.warmup, settings.gap_s),
                        group,
                        sampler,
                        work,
                        args.verbose,
                    )
                log(f"one session, {settings.turns} turns")
                main = run_phase(
                    "1 session",
                    plan_sessions(clips, 1, settings.turns, settings.gap_s),
                    group,
                    sampler,
                    work,
                    args.verbose,
                )
                memory.idle["client"] = main.client_idle_mb
                levels.append(main)
                for n in sorted(set(settings.sessions) - {1}):
                    log(f"{n} concurrent sessions, {settings.scale_turns} turns each")
                    plans = plan_sessions(clips, n, settings.scale_turns, settings.gap_s)
                    levels.append(run_phase(f"{n} sessions", plans, group, sampler, work, args.verbose))
                lengths: dict[str, list[Turn]] = {}
                length_phase: list[Phase] = []
                if settings.lengths:
                    log(f"utterance lengths {', '.join(settings.lengths)}: {settings.length_turns} turns each")
                    whole = [c for c in clips if "/" not in c.name]  # the endpointer cuts some Kokoro samples in two
                    per_class = [length_clips(whole, name, settings.length_turns) for name in settings.lengths]
                    order = [c for round_ in zip(*per_class, strict=True) for c in round_]  # interleaved
                    audio, placed = session_audio(order, 0.5, settings.gap_s)
                    plan = SessionPlan(0, audio, placed, [SHORT])  # one answer: only the utterance varies
                    length_phase.append(run_phase("lengths", [plan], group, sampler, work, args.verbose))
                    lengths = length_groups(length_phase[0])
            finally:
                sampler.stop()
            memory.peaks = sampler.peaks
            memory.hwm = {name: vm_hwm_mb(pid) for name, pid in group.pids.items()}
            memory.hwm["client"] = max(p.client_peak_mb for p in levels)
    wall_s = time.perf_counter() - began
    for phase in levels:
        if not phase.turns:
            raise RuntimeError(f"{phase.name}: no turn was answered")

    main_s = stage_summaries(main.turns)
    e2e = main_s["end_to_end"]
    missing = sum(not math.isfinite(t.synthesis_server_ms) for t in main.turns)
    clip_seconds = [c.seconds for c in clips]
    lines += [
        f"- mode: {mode} ({settings.turns} turns in one session"
        + (
            f"; {', '.join(map(str, sorted(set(settings.sessions) - {1})))} concurrent sessions with "
            f"{settings.scale_turns} turns each"
            if len(settings.sessions) > 1
            else ""
        )
        + (
            f"; lengths {', '.join(settings.lengths)} with {settings.length_turns} turns each"
            if settings.lengths
            else ""
        )
        + f"; {settings.warmup} warm-up turn(s) not counted)",
        "- services: the Procfile's commands, each its own process, on free loopback ports ("
        + ", ".join(f"{name} {port}" for name, port in ports.items())
        + "); Procfile defaults (the caller's EMOLOOP_* settings are not passed on); the synthesis service logs at "
        "DEBUG for its first-chunk times",
        f"- utterances: the {len(clips)} shipped samples (samples/*.wav and samples/kokoro-af_heart/*.wav: six "
        f"emotions, two voices, {min(clip_seconds):.1f}-{max(clip_seconds):.1f} s), {settings.gap_s:g} s of silence "
        f"after each, streamed in real time in 512-sample blocks (as `emoloop run` without `--fast`); answers: "
        f"{len(VARIED) + 2} texts of 6-25 words (bench/sentences.py) in rotation",
        f"- load average at end: {load_average()}; wall time {wall_s:.0f} s",
        "",
        f"### End to end, one session ({len(main.turns)} turns from {settings.turns} sample utterances)",
        "",
        *stage_table(main.turns),
        "",
        f"End to end: p50 **{e2e.p50:.0f} ms** ({'within' if e2e.p50 <= BUDGET_MS else 'over'} the 120 ms budget), "
        f"p95 **{e2e.p95:.0f} ms**, max {e2e.max:.0f} ms; {within_budget(main.turns):.0%} of turns within 120 ms. "
        "Percentiles are per stage, so the stage rows need not add up to the end-to-end row; per turn the five "
        "stages do. The clock starts when the block that let SER decide the utterance had ended was sent (the "
        "250 ms of trailing silence that decision needs come before it); the audio is paced like a microphone, so "
        "the service is never handed a backlog that a live user could not produce. The sink is a file, as in "
        "`emoloop run`: the first sample counts as out when its chunk arrives (a speaker adds its output latency). "
        "A turn is an utterance as the endpointer cut it: it cuts some Kokoro samples in two at a pause of 250 ms "
        "or more, so there are more turns than sample utterances."
        + (f" The synthesis service logged no first-chunk time for {missing} turn(s)." if missing else ""),
        "",
        "### Memory (resident set, MB)",
        "",
        *memory_table(
            memory, list(dict.fromkeys([levels[0].name, levels[-1].name])) + (["lengths"] if lengths else [])
        ),
        "",
        "Idle: after every model loaded, before any turn (the client: connected, audio loaded). Phase peaks: the "
        "largest VmRSS sampled every 50 ms while the phase ran; VmHWM: the kernel's peak over the whole run. The "
        "client row is the largest single client (one user's loop has one). The sum adds each process's peak, an "
        "upper bound on what they held at once; it is what the 1 GB budget is checked against.",
        "",
        "### Concurrent sessions",
        "",
        *scale_rows(levels),
        "",
        "Each session is a client process of its own speaking the samples in its own order; session k starts k/n of "
        "a turn period after the first, so endpoints are spread as uncorrelated users' would be. A session speaks "
        f"every ~{np.mean(clip_seconds) + settings.gap_s:.1f} s and does not pause to listen to its answer, so it "
        "loads the services about twice as often as a person who does. The 1-session row is the run above. "
        "CPU cores: CPU time over wall time during the phase.",
        "",
        first_bottleneck(levels)[1],
    ]
    if lengths:
        lines += [
            "",
            "### Utterance length (one session)",
            "",
            *length_rows(lengths),
            "",
            f"From the espeak-ng samples (samples/*.wav), which the endpointer keeps whole. Short: the first "
            f"{SHORT_S:g} s of a sample's speech; medium: one sample's speech (trimmed of its silences); long and "
            f"very-long: 2 and 4 of them joined by {JOIN_GAP_S * 1000:.0f} ms, too short a pause "
            f'to end an utterance. Every turn answers the same text ("{SHORT}"), so only the utterance varies; SER\'s '
            "endpoint run covers the whole utterance, so it is the stage expected to grow.",
        ]
    write_turns(args.turns_csv, [*levels, *length_phase])
    plot(levels, lengths, args.plot, load_at_start)
    lines += ["", f"Plot: `{_shown(args.plot)}`; every turn: `{_shown(args.turns_csv)}` (not kept in git)."]
    metrics = headline_metrics(main, levels, lengths, memory)
    lines += ["", *record_history("loop", mode, metrics, history_path(args.results))]  # history and results last
    text = "\n".join(lines) + "\n"
    print(text)
    append_results(text, args.results)
    log(f"wrote {args.results}, {history_path(args.results)} and {args.plot} in {wall_s:.0f} s")
    return 0


def _shown(path: Path) -> str:
    """A path as the results file shows it: relative to the repository where it lies inside."""
    path = path.resolve()
    return str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.loop", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 8 turns, 1-2 sessions, 2 lengths (about 1.5 min)"
    )
    parser.add_argument("--turns", type=int, help=f"turns in the one-session run (default {FULL.turns})")
    parser.add_argument("--sessions", help="concurrent session levels, comma-separated (default 1,2,4,8)")
    parser.add_argument(
        "--scale-turns", type=int, help=f"turns per session above one session (default {FULL.scale_turns})"
    )
    parser.add_argument(
        "--lengths", help=f"utterance length classes, comma-separated, or none (default {','.join(LENGTHS)})"
    )
    parser.add_argument("--length-turns", type=int, help=f"turns per length class (default {FULL.length_turns})")
    parser.add_argument("--warmup", type=int, help=f"uncounted turns first (default {FULL.warmup})")
    parser.add_argument("--gap", type=float, help=f"seconds of silence after each utterance (default {FULL.gap_s:g})")
    parser.add_argument("--procfile", type=Path, default=PROCFILE, help="where the service commands come from")
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="Markdown file the results are appended to (history.csv beside it)",
    )
    parser.add_argument("--plot", type=Path, default=PLOT, help="PNG of latency against sessions and length")
    parser.add_argument(
        "--turns-csv",
        type=Path,
        default=TURNS_CSV,
        help="every measured turn, one row each (default out/bench-loop-turns.csv)",
    )
    parser.add_argument("--verbose", action="store_true", help="print every turn's stages as `emoloop run` does")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The benchmark, or (with the hidden --worker) one client's conversation inside its own process."""
    args = build_parser().parse_args(argv)
    if args.worker:
        return run_worker(args.worker)

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the finally blocks that stop every process

    # Ctrl-C raises KeyboardInterrupt even where SIGINT was inherited as ignored (a shell's background job).
    previous = signal.signal(signal.SIGTERM, terminate), signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return run_benchmark(args)
    except KeyboardInterrupt:
        log("interrupted: the services and clients were stopped, nothing was recorded")
        return 130
    except SystemExit:
        log("terminated: the services and clients were stopped, nothing was recorded")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])


if __name__ == "__main__":
    sys.exit(main())
