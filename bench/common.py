"""What every benchmark shares: the machine header of a results section, load, percentiles, memory, history."""

from __future__ import annotations

import contextlib
import csv
import math
import os
import platform
import resource
import socket
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results.md"
HISTORY_FILE = "history.csv"  # kept beside the results file, so a run into a temporary results file stays there
HISTORY_FIELDS = ("timestamp", "commit", "bench", "mode", "metric", "value")
REGRESSION_RATIO = 1.2  # every headline metric is lower-is-better; this much worse than the previous run is marked


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM; ru_maxrss where /proc is absent)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    """Resident memory now (VmRSS), the baseline before the engine loads."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def machine_header(title: str, command: str) -> list[str]:
    """Who, where and under what load: timings on a shared machine mean little without it."""
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        cpu = next(
            (
                line.split(":", 1)[1].strip()
                for line in cpuinfo.read_text().splitlines()
                if line.startswith("model name")
            ),
            cpu,
        )
    commit, dirty = git_commit()
    return [
        f"## {title}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {platform.machine()}, {cpu}, {os.cpu_count()} cores",
        f"- load average at start (1/5/15 min): {load_average()}",
        f"- git commit: {commit or 'unknown'}{' (work tree has uncommitted changes)' if dirty else ''}",
        f"- command: `{command}`",
    ]


def git_commit() -> tuple[str, bool]:
    """The short commit of the work tree and whether it has uncommitted changes."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return commit, bool(dirty)


def load_average() -> str:
    """1, 5 and 15 minute load averages, to judge how noisy the timings are."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q))


def append_results(text: str, path: Path = RESULTS) -> None:
    """Append a section to the results file, a blank line apart, so every run stays on record."""
    separator = "\n" if path.exists() and path.stat().st_size else ""
    with path.open("a", encoding="utf-8") as results:
        results.write(separator + text)


def free_port() -> int:
    """A free loopback port for a service under test."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports: every socket stays bound until all are chosen, so none repeats."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of another process (VmHWM), in MB; NaN once it has exited."""
    return _proc_status_mb(pid, "VmHWM")


def _proc_status_mb(pid: int, key: str) -> float:
    """One memory line (VmRSS, VmHWM) of /proc/PID/status in MB; NaN once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return float("nan")
    for line in text.splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def vm_rss_mb(pid: int) -> float:
    """Resident memory of another process now (VmRSS), in MB; NaN once it has exited."""
    return _proc_status_mb(pid, "VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time another process has used so far (/proc/PID/stat); NaN once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return float("nan")
    # the command name may hold spaces, so split after its ')': the state (field 3) comes first, utime and stime
    # (fields 14 and 15 of the line) at 11 and 12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu_times() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine since boot, from /proc/stat; how loaded the cores were."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return float(total - idle), float(total)


# --------------------------------------------------------------------------------------------------------------
# History: one CSV row per headline figure per run, so that each results section can show the previous run's value.


def history_path(results: Path) -> Path:
    """The history file that goes with a results file (bench/history.csv for bench/results.md)."""
    return results.with_name(HISTORY_FILE)


def read_history(path: Path) -> list[dict[str, str]]:
    """Every row of a history file, oldest first (none if it does not exist yet)."""
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def previous_values(rows: list[dict[str, str]], bench: str, mode: str) -> dict[str, tuple[float, str]]:
    """The newest recorded value of each metric of a bench in a mode, with the commit and date it came from.

    Only runs of the same mode are compared: a quick run is not a baseline for a full one.
    """
    previous: dict[str, tuple[float, str]] = {}
    for row in rows:
        if row["bench"] == bench and row["mode"] == mode:
            previous[row["metric"]] = (float(row["value"]), f"{row['commit']}, {row['timestamp'][:16]}")
    return previous


def comparison_lines(metrics: dict[str, float], previous: dict[str, tuple[float, str]]) -> list[str]:
    """A Markdown table of this run's headline figures against the previous run's, with the ratio.

    Every headline figure is lower-is-better (a time or a size), so a ratio of REGRESSION_RATIO or more is marked.
    """
    lines = [
        f"| headline metric | this run | previous run | ratio | ≥ {REGRESSION_RATIO:.1f}x |",
        "|---|---|---|---|---|",
    ]
    for name, value in metrics.items():
        if name not in previous:
            lines.append(f"| {name} | {value:.4g} | – | – | |")
            continue
        old, source = previous[name]
        ratio = value / old if old and math.isfinite(old) else float("nan")
        mark = " ▲ worse |" if ratio >= REGRESSION_RATIO else " |"
        lines.append(f"| {name} | {value:.4g} | {old:.4g} ({source}) | {ratio:.2f} |{mark}")
    return lines


def record_history(bench: str, mode: str, metrics: dict[str, float], path: Path) -> list[str]:
    """Append this run's headline figures to the history file; the Markdown comparison with the previous run.

    Read before writing, so the comparison is with the run before this one.
    """
    previous = previous_values(read_history(path), bench, mode)
    commit, dirty = git_commit()
    stamp = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        if new:
            writer.writerow(HISTORY_FIELDS)
        for name, value in metrics.items():
            writer.writerow(
                [stamp, (commit or "unknown") + ("+dirty" if dirty else ""), bench, mode, name, f"{value:.6g}"]
            )
    return [
        "### Against the previous run",
        "",
        f"From `{path.name}` ({bench}, {mode} mode); ratio = this run / previous run.",
        "",
        *comparison_lines(metrics, previous),
    ]
