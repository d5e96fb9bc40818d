"""What every benchmark shares: the machine header of a results section, load, percentiles, memory."""

from __future__ import annotations

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
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return [
        f"## {title}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"- machine: {platform.machine()}, {cpu}, {os.cpu_count()} cores",
        f"- load average at start (1/5/15 min): {load_average()}",
        f"- git commit: {commit or 'unknown'}{' (work tree has uncommitted changes)' if dirty else ''}",
        f"- command: `{command}`",
    ]


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def vm_hwm_mb(pid: int) -> float:
    """Peak resident memory of another process (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")
