"""`honcho start` brings up all three services on the configured ports and stops them cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import free_ports
from emoloop.client.csvlog import read_log

ROOT = Path(__file__).resolve().parents[1]
SERVICES = {
    "ser": "emoloop.v1.EmotionRecognitionService",
    "policy": "emoloop.v1.PolicyService",
    "synthesis": "emoloop.v1.SynthesisService",
}


def service_ports() -> dict[str, int]:
    return dict(zip(SERVICES, free_ports(len(SERVICES)), strict=True))


def wait_serving(port: int, service: str, deadline: float) -> bool:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                time.sleep(0.2)
    return False


def test_honcho_starts_all_services_and_ctrl_c_stops_them_without_tracebacks() -> None:
    ports = service_ports()
    env = dict(os.environ, **{f"EMOLOOP_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    honcho = [sys.executable, "-m", "honcho", "start"]
    process = subprocess.Popen(
        honcho,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        for name, service in SERVICES.items():
            if not wait_serving(ports[name], service, deadline):
                os.killpg(process.pid, signal.SIGKILL)
                pytest.fail(f"{name} never became SERVING; honcho's output:\n{process.communicate(timeout=10)[0]}")
        status = subprocess.run([sys.executable, "-m", "emoloop.client.cli", "status"], env=env, timeout=60)
        assert status.returncode == 0
        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    for name, port in ports.items():
        assert f"service={name} event=listening address=127.0.0.1:{port}" in output
        assert f"service={name} event=stopped" in output
    assert "Traceback" not in output
    for port in ports.values():  # nothing is left listening
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0


def test_emoloop_status_names_each_service_that_is_down() -> None:
    ports = service_ports()
    env = dict(os.environ, **{f"EMOLOOP_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    result = subprocess.run(
        [sys.executable, "-m", "emoloop.client.cli", "status", "--timeout", "0.5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    for name, port in ports.items():
        assert f"{name}" in result.stdout and f"127.0.0.1:{port}" in result.stdout
    assert result.stdout.count("DOWN") == 3


def test_demo_starts_the_services_runs_the_shipped_sample_and_stops_them(tmp_path: Path) -> None:
    ports = service_ports()
    env = dict(os.environ, **{f"EMOLOOP_{name.upper()}_PORT": str(port) for name, port in ports.items()})
    out = tmp_path / "answer.wav"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "emoloop.client.cli",
            "demo",
            "--text",
            "Hi",
            "--output",
            str(out),
            "--log",
            str(tmp_path / "turns.csv"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for stage in ("heard ", "policy ", "answer ", "latency "):
        assert f"\n{stage}" in result.stdout
    assert "services stopped" in result.stdout and out.stat().st_size > 1000
    (row,) = read_log(tmp_path / "turns.csv")
    assert row["text"] == "Hi" and float(row["latency_ms"]) > 0
    for port in ports.values():  # nothing is left running
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
