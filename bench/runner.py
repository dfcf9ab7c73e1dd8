"""``scripts/bench``: run the scenarios, print one table, write JSON and a PNG chart.

Every target is measured in the same run as its baselines (direct, haproxy); figures are medians over
``--runs``. Everything is on 127.0.0.1 and every step is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    profile,
    s1_stream,
    s2_roundtrip,
    s3_rendezvous,
    s4_concurrency,
    s5_http,
    s6_forward,
    tunnels,
)
from bench.common import find_haproxy, machine, median, run, uvloop_available
from bench.env import TARGETS, Env, Metric, Options

SCENARIOS = {1: s1_stream, 2: s2_roundtrip, 3: s3_rendezvous, 4: s4_concurrency, 5: s5_http, 6: s6_forward}
#: Upper bound of one scenario run (seconds), quick and full.
LIMITS = {True: 120.0, False: 900.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (a smoke run)")
    parser.add_argument("--scenarios", default="1,2,3,4,5,6", help="comma-separated scenario numbers")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; figures are medians")
    parser.add_argument("--no-uvloop", action="store_true", help="asyncio's default loop everywhere")
    parser.add_argument(
        "--both-loops", action="store_true", help="measure with uvloop, then with asyncio's default loop"
    )
    parser.add_argument("--out", default="bench/results", help="directory for results.json and the chart")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the relay in scenarios 1-3 and 5 (small GETs), relay and forwarders in 6 (run 1)",
    )
    parser.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run the relay as `hyco relay --workers N` (N > 1: the CLI, uvloop when installed; relay CPU is "
        "the sum over its processes)",
    )
    parser.add_argument(
        "--tunnels",
        choices=["install", "installed", "none"],
        default="installed" if os.environ.get("CI") else "install",
        help="scenario 6's rathole, frp, chisel and bore: build the missing ones from their registries into "
        "~/.cache/hyco-bench (default; 'installed' under CI), use only those built already, or none",
    )
    args = parser.parse_args(argv)
    args.scenarios = sorted({int(s) for s in args.scenarios.split(",") if s.strip()})
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {sorted(unknown)}")
    if args.no_uvloop or not uvloop_available():
        args.loops = ["asyncio"]
    elif args.both_loops:
        args.loops = ["uvloop", "asyncio"]
    else:
        args.loops = ["uvloop"]
    return args


def haproxy_version(binary: str | None) -> str:
    if binary is None:
        return "absent: haproxy not found (Debian: apt-get install -y haproxy); haproxy columns are empty"
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, timeout=10, check=False).stdout
    return out.splitlines()[0] if out else binary


# --- measuring ------------------------------------------------------------------------------------


def find_pyspy() -> str | None:
    """py-spy's path: on the PATH, or in this interpreter's venv."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


async def measure_loop(
    args: argparse.Namespace, loop: str, workdir: Path, out: Path, peers: list[tunnels.Prepared]
) -> dict[str, Any]:
    """All scenarios x runs on one event loop kind; returns medians, per-run values and errors."""
    haproxy = find_haproxy()
    pyspy = find_pyspy()
    runs: dict[str, list[Metric]] = {}
    errors: list[str] = []
    for index in range(args.runs):
        for number in args.scenarios:
            module = SCENARIOS[number]
            profile_dir = out if args.profile else None
            options = Options(
                args.quick, loop, workdir, haproxy, profile_dir, index, pyspy, peers, workers=args.workers
            )
            env = Env(options, number)
            started = time.monotonic()
            print(f"[{loop}] run {index + 1}/{args.runs} scenario {number} ({module.TITLE}) ...", flush=True)
            try:
                metrics = await asyncio.wait_for(module.measure(env), LIMITS[args.quick])
            except Exception as exc:
                detail = "timed out" if isinstance(exc, TimeoutError) else repr(exc)
                errors.append(f"run {index + 1} scenario {number}: {detail}")
                traceback.print_exc()
                metrics = []
            finally:
                await env.close()
            for metric in metrics:
                if env.haproxy_note:
                    metric.notes["haproxy"] = env.haproxy_note
                runs.setdefault(metric.key, []).append(metric)
            print(f"    done in {time.monotonic() - started:.1f} s", flush=True)
    return {"metrics": [combine(per_run) for per_run in runs.values()], "errors": errors}


def combine(per_run: list[Metric]) -> dict[str, Any]:
    """Median of each target's runs, and the ratios of the medians."""
    first = per_run[0]
    values = {t: [m.values[t] for m in per_run if t in m.values] for t in TARGETS}
    med = {t: median(v) for t, v in values.items() if v}
    entry: dict[str, Any] = {
        "key": first.key,
        "label": first.label,
        "unit": first.unit,
        "better": first.better,
        "median": med,
        "runs": {t: v for t, v in values.items() if v},
        "notes": [m.notes for m in per_run],
    }
    if med.get("direct") and "hyco" in med:
        entry["hyco_over_direct"] = med["hyco"] / med["direct"]
    if med.get("haproxy") and "hyco" in med:
        entry["hyco_over_haproxy"] = med["hyco"] / med["haproxy"]
    if med.get("direct") and "haproxy" in med:
        entry["haproxy_over_direct"] = med["haproxy"] / med["direct"]
    if med.get("direct"):
        entry["over_direct"] = {t: v / med["direct"] for t, v in med.items() if t != "direct"}
    return entry


# --- targets (issue 6) ----------------------------------------------------------------------------


def evaluate(metrics: list[dict[str, Any]], quick: bool) -> list[dict[str, Any]]:
    """Each scenario's target: the figure it is judged on and whether it is met (None: not measured)."""
    by = {m["key"]: m for m in metrics}

    def ratio(key: str) -> float | None:
        return by[key].get("hyco_over_direct") if key in by else None

    out: list[dict[str, Any]] = []

    def add(scenario: str, target: str, figure: str, met: bool | None, note: str = "") -> None:
        out.append({"scenario": scenario, "target": target, "figure": figure, "met": met, "note": note})

    if "1-up" in by and "1-down" in by:
        up, down = ratio("1-up"), ratio("1-down")
        if up is not None and down is not None:
            add("1 stream", ">= 0.5 x direct", f"up {up:.2f}x, down {down:.2f}x", min(up, down) >= 0.5)
    if "2-p50" in by:
        med = by["2-p50"]["median"]
        if "hyco" in med and "direct" in med:
            added = med["hyco"] - med["direct"]
            add("2 round trip", "adds <= 150 µs at p50", f"adds {added:.0f} µs", added <= 150)
    rates = [by[k]["median"].get("hyco") for k in ("3-rate-1", "3-rate-25") if k in by]
    if rates and all(r is not None for r in rates):
        figure = ", ".join(
            f"{by[k]['median']['hyco']:.0f}/s ({k.rsplit('-', 1)[1]} lst)"
            for k in ("3-rate-1", "3-rate-25")
            if k in by
        )
        add("3 rendezvous", ">= 500 relayed connections/s", figure, min(rates) >= 500)
    if "4-held" in by and "4-rss" in by:
        held = by["4-held"]["median"].get("hyco", 0)
        per = by["4-rss"]["median"].get("hyco", 0)
        notes = by["4-held"]["notes"][0]
        attempted, wanted = notes.get("attempted", 0), notes.get("wanted", 0)
        note = notes.get("capped", "")
        if quick:
            note = "; ".join(x for x in (f"--quick holds only {wanted}", note) if x)
        add(
            "4 concurrency",
            "10,000 held; <= 40 KiB relay RSS each",
            f"{held:.0f} held of {attempted} attempted ({wanted} wanted); {per:.1f} KiB each",
            held >= attempted and per <= 40,
            note,
        )
    keys = ("5-rate", "5-down", "5-up")
    if all(k in by for k in keys):
        r = [ratio(k) for k in keys]
        if all(x is not None for x in r):
            add(
                "5 HTTP",
                ">= 0.5 x direct req/s and body throughput",
                f"req/s {r[0]:.2f}x, download {r[1]:.2f}x, upload {r[2]:.2f}x",
                min(r) >= 0.5,  # type: ignore[type-var]
            )
    if "6-up" in by and "6-down" in by:
        up, down = ratio("6-up"), ratio("6-down")
        if up is not None and down is not None:
            note = ""
            if "6-p50" in by and {"hyco", "direct"} <= set(by["6-p50"]["median"]):
                med = by["6-p50"]["median"]
                note = f"1-byte round trip adds {med['hyco'] - med['direct']:.0f} µs at p50"
            add(
                "6 forward",
                ">= 0.5 x direct TCP",
                f"up {up:.2f}x, down {down:.2f}x",
                min(up, down) >= 0.5,
                note,
            )
    out.extend(against_haproxy(by))
    out.extend(against_tunnels(by))
    return out


def against_tunnels(by: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Issue 10's forward target: hyco forward's bulk throughput, both ways, at or above every tunnel's."""
    if "6-up" not in by or "6-down" not in by:
        return []
    up, down = by["6-up"]["median"], by["6-down"]["median"]
    if "hyco" not in up or "hyco" not in down:
        return []
    measured = [t for t in tunnels.NAMES if t in up and t in down]
    if not measured:
        return []

    # Like with like: frp with TLS (its default) against hyco over wss when that was measured; every
    # plain tunnel against hyco over ws.
    def ours(tunnel: str) -> str:
        return "hyco-wss" if tunnel == "frp" and "hyco-wss" in up and "hyco-wss" in down else "hyco"

    ratios = {t: (up[ours(t)] / up[t], down[ours(t)] / down[t]) for t in measured}
    figure = ", ".join(
        f"{t}{' (hyco-wss)' if ours(t) != 'hyco' else ''} up {u:.2f}x down {d:.2f}x"
        for t, (u, d) in ratios.items()
    )
    met = min(min(pair) for pair in ratios.values()) >= 1
    return [_target("6 forward", "throughput >= every tunnel's", f"hyco over {figure}", met)]


def against_haproxy(by: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The data-plane targets of issue 10, judged against haproxy measured in the same run."""
    out: list[dict[str, Any]] = []

    def vs(key: str) -> float | None:
        return by[key].get("hyco_over_haproxy") if key in by else None

    up, down, p50 = vs("1-up"), vs("1-down"), vs("2-p50")
    if up is not None and down is not None:
        out.append(
            _target("1 stream", ">= 1.0 x haproxy", f"up {up:.2f}x, down {down:.2f}x", min(up, down) >= 1)
        )
    if p50 is not None:
        out.append(_target("2 round trip", "p50 <= 1.0 x haproxy's", f"{p50:.2f}x", p50 <= 1))
    rate, cpu = vs("3-rate-1"), by.get("3-cpu", {}).get("median", {}).get("hyco")
    if rate is not None and cpu is not None:
        per_s = by["3-rate-1"]["median"]["hyco"]
        figure = f"{rate:.2f}x haproxy, {per_s:.0f}/s, {cpu:.2f} ms relay CPU each"
        met = rate >= 0.75 and per_s >= 1500 and cpu <= 0.4
        out.append(_target("3 rendezvous", ">= 0.75 x haproxy, >= 1,500/s, <= 0.4 ms CPU", figure, met))
    per = by.get("4-rss", {}).get("median", {}).get("hyco")
    if per is not None:
        out.append(_target("4 memory", "<= 16 KiB per held relayed connection", f"{per:.1f} KiB", per <= 16))
    return out


def _target(scenario: str, target: str, figure: str, met: bool) -> dict[str, Any]:
    return {"scenario": scenario, "target": target, "figure": figure, "met": met, "note": "issue 10"}


# --- output ---------------------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def aligned(rows: list[list[str]], left: int) -> list[str]:
    """Text table lines: the first row is the header, ruled below; the first ``left`` columns flush left."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for n, row in enumerate(rows):
        cells = [
            c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def table(report: dict[str, Any]) -> str:
    """The one table: every metric per loop with hyco, baselines and ratios; then the targets."""
    header = ["loop", "scenario", "unit", "hyco", "direct", "haproxy", "hyco/direct", "hyco/haproxy"]
    rows = [header]
    for loop, result in report["loops"].items():
        for m in result["metrics"]:
            med = m["median"]
            arrow = "↑" if m["better"] == "higher" else "↓"
            rd, rh = m.get("hyco_over_direct"), m.get("hyco_over_haproxy")
            rows.append(
                [
                    loop,
                    m["label"],
                    f"{m['unit']} {arrow}",
                    fmt(med.get("hyco")),
                    fmt(med.get("direct")),
                    fmt(med.get("haproxy")),
                    f"{rd:.2f}x" if rd is not None else "-",
                    f"{rh:.2f}x" if rh is not None else "-",
                ]
            )
    lines = aligned(rows, left=3)
    for loop, result in report["loops"].items():
        lines.extend(forward_peers(loop, result["metrics"]))
    lines.append("")
    for loop, result in report["loops"].items():
        for t in result["targets"]:
            state = {True: "met", False: "MISSED", None: "n/a"}[t["met"]]
            note = f"  ({t['note']})" if t["note"] else ""
            lines.append(f"[{loop}] {t['scenario']}: {t['target']}: {t['figure']} -> {state}{note}")
        for error in result["errors"]:
            lines.append(f"[{loop}] error: {error}")
    lines.append(f"haproxy: {report['haproxy']}")
    for name, state in report.get("tunnels", {}).items():
        lines.append(f"{name}: {state}")
    return "\n".join(lines)


def forward_peers(loop: str, metrics: list[dict[str, Any]]) -> list[str]:
    """Scenario 6 with one row per peer (hyco forward, direct, haproxy, the tunnels); empty without it."""
    by = {m["key"]: m for m in metrics}
    if "6-up" not in by:
        return []
    keys = ("6-up", "6-down", "6-p50", "6-cpu-up", "6-cpu-down")
    header = [
        "peer",
        "up MB/s",
        "x direct",
        "down MB/s",
        "x direct",
        "p50 µs",
        "x direct",
        "CPU s/GB up",
        "down",
    ]
    rows = [header]
    for peer in TARGETS:
        if peer not in by["6-up"]["median"]:
            continue
        row = [peer if peer != "hyco" else "hyco forward"]
        for key in keys:
            metric = by.get(key, {})
            row.append(fmt(metric.get("median", {}).get(peer)))
            if key in ("6-up", "6-down", "6-p50"):
                ratio = metric.get("over_direct", {}).get(peer)
                row.append(f"{ratio:.2f}x" if ratio is not None else "-")
        rows.append(row)
    title = f"[{loop}] scenario 6 by peer (median of runs; CPU: the peer's own processes)"
    return ["", title, *aligned(rows, left=1)]


def chart(report: dict[str, Any], path: Path) -> None:
    """Horizontal bars: each figure relative to direct, oriented so that longer is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    loops = list(report["loops"])
    fig, axes = plt.subplots(1, len(loops), figsize=(7 * len(loops), 6), squeeze=False, sharey=True)
    for ax, loop in zip(axes[0], loops, strict=True):
        metrics = [
            m for m in report["loops"][loop]["metrics"] if m["median"].get("direct") and "hyco" in m["median"]
        ]
        labels = [f"{m['label']} [{m['unit']}]" for m in metrics][::-1]

        def rel(m: dict[str, Any], target: str) -> float:
            value, direct = m["median"].get(target), m["median"]["direct"]
            if not value:
                return 0.0
            return float(value / direct if m["better"] == "higher" else direct / value)

        ys = range(len(metrics))
        ax.barh([y + 0.2 for y in ys], [rel(m, "hyco") for m in metrics][::-1], 0.4, label="hyco")
        ax.barh([y - 0.2 for y in ys], [rel(m, "haproxy") for m in metrics][::-1], 0.4, label="haproxy")
        ax.set_yticks(list(ys), labels)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.axvline(0.5, color="red", linestyle="--", linewidth=0.8, label="0.5 x direct")
        ax.set_xlabel("relative to direct (1.0 = direct; longer is better)")
        ax.set_title(f"hyco vs direct and haproxy ({loop}, median of {report['options']['runs']})")
        ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- entry point ----------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "scripts/bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    report: dict[str, Any] = {
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command.strip(),
        "machine": machine(),
        "options": {
            "quick": args.quick,
            "runs": args.runs,
            "scenarios": args.scenarios,
            "loops": args.loops,
            "workers": args.workers,
        },
        "haproxy": haproxy_version(find_haproxy()),
        "loops": {},
    }
    print(f"hyco benchmarks: {command}\nhaproxy: {report['haproxy']}", flush=True)
    if args.profile and find_pyspy() is None:
        print("--profile: py-spy not found (pip install py-spy, or scripts/bench installs it): no profiles")
    peers = tunnels.prepare(args.tunnels if 6 in args.scenarios else "none")
    report["tunnels"] = {
        p.tool.name: f"{p.tool.version} ({p.bin})" if p.bin else f"skipped: {p.reason}" for p in peers
    }
    for name, state in report["tunnels"].items():
        print(f"{name}: {state}", flush=True)
    with tempfile.TemporaryDirectory(prefix="hyco-bench-") as tmp:
        for loop in args.loops:
            result = run(measure_loop(args, loop, Path(tmp), out, peers), loop)
            result["targets"] = evaluate(result["metrics"], args.quick)
            report["loops"][loop] = result
    text = table(report)
    print("\n" + text)
    (out / "results.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out / "results.txt").write_text(text + "\n")
    charted = False
    if not args.no_chart:
        try:
            chart(report, out / "chart.png")
            charted = True
        except ImportError as exc:  # the figures are written already; a chart library is optional
            print(f"\nno chart: {exc} (pip install matplotlib)")
    if args.profile:
        for raw in sorted(out.glob("profile-*.txt")):
            if not raw.name.endswith("-summary.txt"):
                summary = profile.summarize(raw)
                raw.with_name(raw.stem + "-summary.txt").write_text(summary)
    print(f"\nwrote {out / 'results.json'}" + (f" and {out / 'chart.png'}" if charted else ""))
    return report


if __name__ == "__main__":
    main()
