"""Policy benchmark: the MLP's decision time in-process, the Decide round trip through the service, its memory.

Run from the repository root: `python -m bench.policy`. The service runs as its own process, as `honcho start`
runs it; the policy's budget is 1 ms per decision.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import (
    RESULTS,
    append_results,
    free_port,
    history_path,
    machine_header,
    percentile,
    record_history,
    vm_hwm_mb,
)
from emoloop.client.connect import connect
from emoloop.models.policy import Policy, PolicyInput
from emoloop.v1 import common_pb2, policy_pb2, policy_pb2_grpc

CALLS = 1000


def main() -> int:
    command = shlex.join([Path(sys.orig_argv[0]).name, *sys.orig_argv[1:]])
    policy = Policy.load()
    probabilities = np.array([0.1, 0.05, 0.05, 0.1, 0.65, 0.05])
    inp = PolicyInput(probabilities, np.minimum(probabilities * 1.5, 1), probabilities / 5, 0.65, "calm", 3, "support")
    decide_us = []
    for _ in range(CALLS):
        started = time.perf_counter()
        policy.decide(inp)
        decide_us.append((time.perf_counter() - started) * 1e6)

    port = free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "emoloop.services.policy", "--port", str(port)], stderr=subprocess.DEVNULL
    )
    try:
        with connect("policy", f"127.0.0.1:{port}", timeout_s=60) as channel:
            stub = policy_pb2_grpc.PolicyServiceStub(channel)
            scores = common_pb2.EmotionScores(
                **dict(zip(("neutral", "calm", "happy", "sad", "angry", "fearful"), probabilities, strict=True))
            )
            request = policy_pb2.DecideRequest(
                statistics=common_pb2.EmotionStatistics(mean=scores, max=scores, std=scores, confidence=0.65)
            )
            rtt_ms = []
            for _ in range(CALLS):
                started = time.perf_counter()
                stub.Decide(request, timeout=5)
                rtt_ms.append((time.perf_counter() - started) * 1e3)
        rss_mb = vm_hwm_mb(service.pid)
    finally:
        service.terminate()
        service.wait(30)
    rtt_ms = rtt_ms[50:]  # after warm-up
    lines = [
        *machine_header("Policy benchmark", command),
        "",
        "| measure | median | p95 |",
        "|---|---|---|",
        f"| `Policy.decide` in-process ({CALLS} calls) | {np.median(decide_us):.0f} µs "
        f"| {percentile(decide_us, 95):.0f} µs |",
        f"| `Decide` round trip through the service | {np.median(rtt_ms):.2f} ms | {percentile(rtt_ms, 95):.2f} ms |",
        "",
        f"Policy service peak RSS (VmHWM, its own process): {rss_mb:.0f} MB.",
    ]
    headline = {
        "decide_p50_us": float(np.median(decide_us)),
        "rtt_p50_ms": float(np.median(rtt_ms)),
        "rtt_p95_ms": percentile(rtt_ms, 95),
        "service_peak_rss_mb": rss_mb,
    }
    lines += ["", *record_history("policy", "full", headline, history_path(RESULTS))]
    text = "\n".join(lines) + "\n"
    print(text)
    append_results(text, RESULTS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
