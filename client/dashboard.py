"""A live Streamlit page over the turn log: `streamlit run client/dashboard.py -- --log out/turns.csv`.

The loop only appends to its CSV (see csvlog), so the page simply re-reads the whole file about once a second
inside an `st.fragment(run_every=...)`: no file watcher, no state, and a client killed mid-run costs nothing.
Only the first five columns are required; the per-stage parts of the page are shown when their columns exist,
so logs from other tools that write just the seed's columns still render.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from emoloop.client.csvlog import read_log

BUDGET_MS = 120.0
DEFAULT_LOG = "out/turns.csv"
REFRESH_S = 1.0
# The per-stage columns, in pipeline order, with the label each gets on the page.
STAGES = {
    "ser_ms": "SER result",
    "policy_ms": "policy",
    "synthesis_first_chunk_ms": "first synthesis chunk",
    "playback_ms": "playback",
}
NUMERIC = ["latency_ms", "in_confidence", *STAGES, "utterance_ms", "answer_ms"]
SHOWN = ["turn", "timestamp", "in_emotion", "out_emotion", "latency_ms", *STAGES, "policy_reason", "text"]


def log_path(argv: Sequence[str], environ: Mapping[str, str]) -> Path:
    """The log to follow: `--log` (after `--` on the streamlit command line), else $EMOLOOP_LOG, else the default.

    Unknown arguments are ignored, so the page also runs under tools that pass their own (pytest's AppTest).
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--log")
    known, _ = parser.parse_known_args(list(argv))
    return Path(known.log or environ.get("EMOLOOP_LOG") or DEFAULT_LOG)


def load_turns(path: Path) -> pd.DataFrame:
    """The log as a frame with a 1-based `turn` column, numbers as floats and timestamps as UTC datetimes.

    Values that do not parse (a line caught half-written, a column another tool left empty) become NaN/NaT
    rather than errors, since the page re-reads a file that is being appended to.
    """
    frame = pd.DataFrame(read_log(path))
    if frame.empty:
        return frame
    for column in NUMERIC:
        if column in frame:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601", errors="coerce")
    frame.insert(0, "turn", np.arange(1, len(frame) + 1))
    return frame


@dataclass(frozen=True)
class Headline:
    """The numbers at the top of the page."""

    turns: int
    p50_ms: float
    p95_ms: float
    max_ms: float
    within_budget: float  # share of turns with latency <= BUDGET_MS, 0..1


def headline(frame: pd.DataFrame) -> Headline:
    """Latency percentiles and the share of turns within budget, over the turns whose latency parsed."""
    latency = frame["latency_ms"].dropna().to_numpy()
    if latency.size == 0:
        return Headline(len(frame), float("nan"), float("nan"), float("nan"), float("nan"))
    p50, p95 = np.percentile(latency, [50, 95])
    return Headline(len(frame), float(p50), float(p95), float(latency.max()), float(np.mean(latency <= BUDGET_MS)))


def stage_columns(frame: pd.DataFrame) -> list[str]:
    """The per-stage columns this log has with at least one value (older or foreign logs may have none)."""
    return [column for column in STAGES if column in frame and frame[column].notna().any()]


def transitions(frame: pd.DataFrame) -> pd.DataFrame:
    """How often each heard emotion (rows) was answered with each chosen emotion (columns)."""
    return pd.crosstab(frame["in_emotion"], frame["out_emotion"]).rename_axis(index="in ↓ / out →", columns=None)


def latency_chart(frame: pd.DataFrame) -> alt.LayerChart:
    """Latency per turn as a line with points coloured by budget, and the budget as a horizontal rule."""
    data = frame[["turn", "timestamp", "latency_ms", "in_emotion", "out_emotion"]].assign(
        budget=np.where(frame["latency_ms"] <= BUDGET_MS, "within", "over")
    )
    base = alt.Chart(data).encode(
        x=alt.X("turn:Q", title="turn", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("latency_ms:Q", title="latency (ms)"),
    )
    line = base.mark_line(color="#888888")
    points = base.mark_circle(size=60).encode(
        color=alt.Color(
            "budget:N", scale=alt.Scale(domain=["within", "over"], range=["#2ca02c", "#d62728"]), title="budget"
        ),
        tooltip=["turn", "timestamp", "latency_ms", "in_emotion", "out_emotion"],
    )
    rule = alt.Chart().mark_rule(color="#d62728", strokeDash=[6, 4]).encode(y=alt.datum(BUDGET_MS))
    return alt.layer(line, points, rule)


def stage_chart(frame: pd.DataFrame, columns: list[str]) -> alt.Chart:
    """Stacked bars per turn, one segment per stage, in pipeline order."""
    long = frame.melt(id_vars=["turn"], value_vars=columns, var_name="stage", value_name="ms")
    long["stage_order"] = long["stage"].map(columns.index)
    long["stage"] = long["stage"].map(STAGES)
    return (
        alt.Chart(long)
        .mark_bar()
        .encode(
            x=alt.X("turn:O", title="turn"),
            y=alt.Y("ms:Q", stack="zero", title="ms"),
            color=alt.Color("stage:N", sort=[STAGES[column] for column in columns], title="stage"),
            order=alt.Order("stage_order:Q"),
            tooltip=["turn", "stage", "ms"],
        )
    )


def emotion_chart(frame: pd.DataFrame) -> alt.Chart:
    """Two rows of coloured squares, heard (in) above chosen (out), one column per turn."""
    long = frame.melt(id_vars=["turn", "timestamp"], value_vars=["in_emotion", "out_emotion"], var_name="side")
    long["side"] = long["side"].map({"in_emotion": "in (heard)", "out_emotion": "out (chosen)"})
    return (
        alt.Chart(long)
        .mark_square(size=120, filled=True)
        .encode(
            x=alt.X("turn:Q", title="turn", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("side:N", title=None, sort=["in (heard)", "out (chosen)"]),
            color=alt.Color("value:N", title="emotion"),
            tooltip=["turn", "timestamp", "side", alt.Tooltip("value:N", title="emotion")],
        )
    )


def _ms(value: float) -> str:
    return "–" if np.isnan(value) else f"{value:.0f} ms"


def _percent(share: float) -> str:
    return "–" if np.isnan(share) else f"{share:.0%}"


def render(path: Path, charted: int, last_n: int) -> None:
    """Draw everything that depends on the log; called again every REFRESH_S when following live.

    The headline and the emotion counts cover the whole log; the charts only its last `charted` turns, so that
    a long session stays cheap to redraw every second.
    """
    try:
        frame = load_turns(path)
    except FileNotFoundError:  # also when it goes away between two refreshes
        st.info(f"No turn log at `{path}` yet. It appears when the loop logs its first turn.")
        return
    if frame.empty:
        st.info(f"`{path}` has no turns yet.")
        return

    numbers = headline(frame)
    turns, p50, p95, peak, within = st.columns(5)
    turns.metric("Turns", numbers.turns)
    p50.metric("Latency p50", _ms(numbers.p50_ms))
    p95.metric("Latency p95", _ms(numbers.p95_ms))
    peak.metric("Latency max", _ms(numbers.max_ms))
    within.metric(f"Within {BUDGET_MS:.0f} ms", _percent(numbers.within_budget))

    recent = frame.tail(charted)
    st.subheader("Latency per turn")
    st.altair_chart(latency_chart(recent))

    st.subheader("Per-stage breakdown")
    stages = stage_columns(frame)
    if stages:
        st.altair_chart(stage_chart(recent, stages))
        st.caption("Median per stage: " + ", ".join(f"{STAGES[c]} {recent[c].median():.0f} ms" for c in stages))
    else:
        st.info("This log has only the five seed columns, so there is no per-stage timing to show.")

    st.subheader("Emotions")
    st.altair_chart(emotion_chart(recent))
    st.caption("Heard (rows) → chosen (columns), over the whole log")
    st.dataframe(transitions(frame))

    st.subheader(f"Last {min(last_n, len(frame))} turns")
    shown = [column for column in SHOWN if column in frame]
    st.dataframe(frame[shown].tail(last_n).iloc[::-1], hide_index=True)


def main() -> None:
    """The page: settings in the sidebar, then the log-dependent part, re-run alone every REFRESH_S if live."""
    st.set_page_config(page_title="emoloop turns", layout="wide")
    st.title("emoloop — turn log")
    path = log_path(sys.argv[1:], os.environ)
    st.caption(f"Following `{path}` · latency budget {BUDGET_MS:.0f} ms")
    live = st.sidebar.toggle("Follow live", value=True, help=f"Re-read the log every {REFRESH_S:.0f} s")
    charted = int(st.sidebar.number_input("Last turns in the charts", min_value=1, max_value=100_000, value=200))
    last_n = int(st.sidebar.number_input("Last turns in the table", min_value=1, max_value=1000, value=20))
    st.fragment(run_every=REFRESH_S if live else None)(render)(path, charted, last_n)


if __name__ == "__main__":  # Streamlit runs the script as __main__; importing it (tests) draws nothing.
    main()
