"""A bounded soak: hostile clients of every kind against one relay process while a bystander keeps using it.

``scripts/soak [--seconds 600] [--quiet 10] [--kinds a,b|all] [--each SECONDS] [--json FILE]``

A relay process (``bench.proc relay``, the config of ``bench.hostile.soak_config``: default limits, shorter
deadlines), a bystander pair in this process on 127.0.0.1 (a listener that echoes; a sender that connects
afresh every second and echoes 1 KiB every 100 ms, checking every byte, plus one relayed POST a second whose
answer is its CRC32), and the hostile clients of ``bench.hostile`` in a child process on other loopback
addresses. First ``--quiet`` seconds without hostiles (the bystander's baseline), then ``--seconds`` with all
of them, then the hostiles stop and the relay gets up to 30 s to settle back. The relay's RSS, open files,
CPU and accept queue (connections the kernel completed on its port that it has not accepted yet) are
sampled every 0.5 s; a table row (the largest of each, and the bystander's echo latency and slowest
connect) is printed every ``--every`` seconds.

``--each SECONDS`` runs the kinds one at a time instead (the hostile probe): one row per kind with the
bystander's latency while it ran.

Verdict (exit status 1 when broken): the bystander never failed and never lost a byte, no hostile kind lost a
byte or got in where it must not, no kind with a legitimate part was locked out (:data:`LOCKOUT_RULE`: its
successes grew in every window of the run), the relay logged no traceback and no ERROR line, its open files
came back to within ``FD_SLACK`` of the baseline and its RSS grew by less than ``--max-rss-growth`` MiB over
the quiet phase. Nothing timed is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import WSMsgType

from bench.common import (
    ROOT,
    accept_queue,
    auth_headers,
    connect_url,
    cpu_seconds,
    die_with_parent,
    listen_url,
    open_files,
    percentile,
    rss,
    spawn,
)
from bench.hostile import BYSTANDER_PATH, KINDS, SUCCESSES, soak_config

#: Open files the relay may keep above its quiet baseline once everything settled (listeners' sockets).
FD_SLACK = 16
#: Seconds any one bystander step may take before it counts as a failure.
STEP = 10.0
#: Windows shorter than this (the last, partial row of a run) are not judged for lockouts.
#: Seconds without a single success that make a kind locked out (less when the kind ran less long). Longer
#: than a slow moment of a loaded relay (new connections waited up to 11 s in its accept queue in the
#: soak), short enough to catch a limit that never lets a client back in.
LOCKOUT_SECONDS = 20.0
LOCKOUT_RULE = (
    f"a kind with a legitimate part ({', '.join(f'{k}: {v!r}' for k, v in SUCCESSES.items())}) is locked "
    f"out when that count does not grow over consecutive table rows of {LOCKOUT_SECONDS:g} s or more (or "
    f"over all of its rows when it ran less long): every attempt refused, cut or stuck"
)


@dataclass
class Bystander:
    """The well-behaved pair: what it measured, and every failure it met."""

    relay: str
    rtts: list[tuple[float, float]] = field(default_factory=list)  # (when, milliseconds)
    connects: list[tuple[float, float]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    echoes: int = 0
    posts: int = 0
    lost: int = 0
    listener_restarts: int = 0

    async def listen(self, session: aiohttp.ClientSession) -> None:
        """A control channel on the bystander's entity that echoes every connection and answers POSTs."""
        while True:
            try:
                ws = await session.ws_connect(
                    listen_url(self.relay, str(uuid.uuid4()), BYSTANDER_PATH),
                    headers=auth_headers(self.relay),
                )
            except aiohttp.ClientError as exc:
                self.failures.append(f"listener: {exc!r}"[:200])
                await asyncio.sleep(1)
                continue
            tasks: set[asyncio.Task[None]] = set()
            waiting: dict[str, Any] | None = None
            async for msg in ws:
                if msg.type is WSMsgType.BINARY and waiting is not None:
                    response = {"response": {"requestId": waiting["id"], "statusCode": 200, "body": True}}
                    await ws.send_str(json.dumps(response))
                    await ws.send_bytes(f"{len(msg.data)} {zlib.crc32(msg.data)}".encode())
                    waiting = None
                elif msg.type is WSMsgType.TEXT:
                    command = json.loads(msg.data)
                    if "accept" in command:
                        task = asyncio.ensure_future(self._echo(session, command["accept"]["address"]))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                    elif "request" in command:
                        waiting = command["request"]
            self.listener_restarts += 1
            self.failures.append(f"listener: control channel closed ({ws.close_code})")

    async def _echo(self, session: aiohttp.ClientSession, address: str) -> None:
        with contextlib.suppress(aiohttp.ClientError, ConnectionError):
            peer = await session.ws_connect(address)
            async for msg in peer:
                if msg.type is WSMsgType.BINARY:
                    await peer.send_bytes(msg.data)
            await peer.close()

    async def send(self, session: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        """Every second: a fresh connection with ten 1 KiB echoes 100 ms apart, and one relayed POST."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                async with asyncio.timeout(STEP * 3):
                    await self._one_connection(session)
                    await self._one_post(session)
            except aiohttp.WSServerHandshakeError as exc:
                self.failures.append(
                    f"{time.strftime('%H:%M:%S')} sender: handshake {exc.status} {exc.message}"
                )
            except (TimeoutError, aiohttp.ClientError, ConnectionError, AssertionError) as exc:
                self.failures.append(f"{time.strftime('%H:%M:%S')} sender: {exc!r}"[:200])
            await asyncio.sleep(max(0.0, 1 - (time.monotonic() - started)))

    async def _one_connection(self, session: aiohttp.ClientSession) -> None:
        began = time.monotonic()
        ws = await session.ws_connect(
            connect_url(self.relay, BYSTANDER_PATH), headers=auth_headers(self.relay)
        )
        self.connects.append((began, (time.monotonic() - began) * 1000))
        try:
            for _ in range(10):
                payload = os.urandom(1024)
                sent = time.monotonic()
                await ws.send_bytes(payload)
                msg = await ws.receive(STEP)
                self.rtts.append((sent, (time.monotonic() - sent) * 1000))
                if msg.type is not WSMsgType.BINARY or msg.data != payload:
                    self.lost += 1
                    raise AssertionError(f"echo lost or altered: {msg.type}")
                self.echoes += 1
                await asyncio.sleep(0.1)
        finally:
            await ws.close()

    async def _one_post(self, session: aiohttp.ClientSession) -> None:
        body = os.urandom(1024)
        async with session.post(
            f"http{self.relay[2:]}/{BYSTANDER_PATH}/post", data=body, headers=auth_headers(self.relay)
        ) as resp:
            answer = await resp.text()
        if resp.status != 200 or answer != f"{len(body)} {zlib.crc32(body)}":
            self.lost += 1
            raise AssertionError(f"POST answered {resp.status} {answer[:80]!r}")
        self.posts += 1

    def latency(self, since: float, until: float) -> dict[str, float]:
        values = [ms for when, ms in self.rtts if since <= when < until]
        connects = [ms for when, ms in self.connects if since <= when < until]
        return {
            "connect_max_ms": round(max(connects, default=0.0), 1),
            "echoes": len(values),
            "p50_ms": round(percentile(values, 50), 2),
            "p99_ms": round(percentile(values, 99), 2),
            "max_ms": round(max(values, default=0.0), 2),
        }


@dataclass
class Sampler:
    """The relay process, read from /proc every 0.5 s; ``port`` is the relay's, for its accept queue."""

    pid: int
    port: int
    # (when, rss, fds, cpu s, connections waiting in the kernel's accept queue)
    samples: list[tuple[float, int, int, float, int]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.samples.append(
                    (
                        time.monotonic(),
                        rss(self.pid),
                        open_files(self.pid)[0],
                        cpu_seconds(self.pid),
                        accept_queue(self.port),
                    )
                )
            await asyncio.sleep(0.5)

    def window(self, since: float, until: float) -> dict[str, float]:
        rows = [s for s in self.samples if since <= s[0] < until] or self.samples[-1:]
        cpu = (rows[-1][3] - rows[0][3]) / max(rows[-1][0] - rows[0][0], 1e-9) * 100 if len(rows) > 1 else 0.0
        return {
            "rss_mib": round(max(r[1] for r in rows) / 2**20, 1),
            "fds": max(r[2] for r in rows),
            "cpu_pct": round(cpu, 0),
            "accept_queue": max(r[4] for r in rows),
        }

    def now(self) -> tuple[int, int]:
        return rss(self.pid), open_files(self.pid)[0]


async def health(session: aiohttp.ClientSession, relay: str) -> dict[str, Any]:
    async with session.get(f"http{relay[2:]}/$health") as resp:
        data: dict[str, Any] = await resp.json()
        return data


class Hostiles:
    """The ``bench.hostile`` child process."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, relay: str, kinds: list[str]) -> Hostiles:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.hostile",
            "--relay",
            relay,
            "--kinds",
            ",".join(kinds),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=str(ROOT),
            limit=1 << 20,
            preexec_fn=die_with_parent,
        )
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise RuntimeError(f"bench.hostile did not start: {line!r}")
        return cls(proc)

    async def snapshot(self) -> dict[str, dict[str, int]]:
        """The outcomes each kind counted so far."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"snapshot\n")
        await self.proc.stdin.drain()
        counts: dict[str, dict[str, int]] = json.loads(
            await asyncio.wait_for(self.proc.stdout.readline(), 60)
        )
        return counts

    async def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        await asyncio.wait_for(self.proc.wait(), 30)
        result: dict[str, Any] = json.loads(line)
        return result


def row(label: str, bystander: Bystander, sampler: Sampler, since: float, until: float) -> dict[str, Any]:
    return {"phase": label, **sampler.window(since, until), **bystander.latency(since, until)}


def print_row(r: dict[str, Any], failures: int) -> None:
    print(
        f"{r['phase']:>16} {r['rss_mib']:>8.1f} {r['fds']:>6} {r['cpu_pct']:>5.0f} {r['accept_queue']:>6} "
        f"{r['echoes']:>6} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['max_ms']:>8.1f} "
        f"{r['connect_max_ms']:>11.1f} {failures:>8}",
        flush=True,
    )


HEADER = (
    f"{'phase':>16} {'RSS MiB':>8} {'fds':>6} {'CPU%':>5} {'acc. q':>6} {'echoes':>6} {'p50 ms':>8} "
    f"{'p99 ms':>8} {'max ms':>8} {'connect max':>11} {'failures':>8}"
)


def growth(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """What each kind counted between two snapshots (outcomes that did not grow are left out)."""
    grown: dict[str, dict[str, int]] = {}
    for kind, seen in after.items():
        earlier = before.get(kind, {})
        delta = {
            outcome: n - earlier.get(outcome, 0) for outcome, n in seen.items() if n > earlier.get(outcome, 0)
        }
        grown[kind] = delta
    return grown


async def attack(
    relay: str,
    kinds: list[str],
    seconds: float,
    every: float,
    label: str,
    bystander: Bystander,
    sampler: Sampler,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Run ``kinds`` for ``seconds``, a table row every ``every`` seconds; returns the rows, the outcomes and
    the windows (per row: the kinds, its seconds, what each kind counted in it)."""
    hostiles = await Hostiles.start(relay, kinds)
    rows = []
    windows: list[dict[str, Any]] = []
    started = snapped = time.monotonic()
    before: dict[str, dict[str, int]] = {}
    try:
        while (elapsed := time.monotonic() - started) < seconds:
            await asyncio.sleep(min(every, seconds - elapsed))
            now = time.monotonic()
            counts = await hostiles.snapshot()
            window = {"kinds": kinds, "seconds": round(now - snapped, 1), "outcomes": growth(before, counts)}
            windows.append(window)
            before, snapped = counts, now
            since = max(started, now - every) if label == "attack" else started
            name = f"{label} {now - started:.0f}s" if label == "attack" else label
            rows.append(row(name, bystander, sampler, since, now))
            if label == "attack":
                print_row(rows[-1], len(bystander.failures))
    finally:
        outcomes = await hostiles.stop()
    if label != "attack":
        rows = [row(label, bystander, sampler, started, time.monotonic())]
        print_row(rows[-1], len(bystander.failures))
    return rows, outcomes, windows


def lockouts(windows: list[dict[str, Any]]) -> list[str]:
    """Kinds locked out, by :data:`LOCKOUT_RULE`: for each kind, the spans of consecutive windows (table rows)
    without a success, flagged when one lasts ``LOCKOUT_SECONDS`` or all the time the kind ran."""
    found = []
    for kind, success in SUCCESSES.items():
        ran = [(number, window) for number, window in enumerate(windows, 1) if kind in window["kinds"]]
        total = sum(window["seconds"] for _, window in ran)
        span: list[tuple[int, dict[str, Any]]] = []
        for number, window in [*ran, (0, None)]:  # a sentinel ends the last span
            seen = window["outcomes"].get(kind, {}) if window is not None else {success: 1}
            if not seen.get(success):
                span.append((number, window))
                continue
            seconds = sum(w["seconds"] for _, w in span)
            if span and seconds >= min(LOCKOUT_SECONDS, total):
                saw: Counter[str] = Counter()
                for _, w in span:
                    saw.update(w["outcomes"].get(kind, {}))
                found.append(
                    f"{kind} locked out for {seconds:g} s (rows {span[0][0]}-{span[-1][0]}): no {success!r}; "
                    f"saw {dict(saw) or 'nothing'}"
                )
            span = []
    return found


async def settle(session: aiohttp.ClientSession, relay: str, sampler: Sampler, fds: int) -> float:
    """Wait (up to 30 s) until nothing hostile is left in the relay; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < 30:
        h = await health(session, relay)
        if (
            sampler.now()[1] <= fds + FD_SLACK
            and h["http_requests_in_flight"] <= 1
            and h["active_connections"] <= 1
        ):
            break
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def soak(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    config = workdir / "relay.toml"
    config.write_text(soak_config())
    log = args.log or workdir / "relay.log"
    with log.open("wb") as log_file:
        relay_child = await spawn(
            "relay", ["relay", "--config", str(config), "--loop", args.relay_loop], stderr=log_file
        )
    relay = relay_child.ready
    kinds = list(KINDS) if args.kinds == "all" else args.kinds.split(",")
    sampler = Sampler(relay_child.pid, int(relay.rsplit(":", 1)[1]))
    bystander = Bystander(relay)
    stop = asyncio.Event()
    report: dict[str, Any] = {"command": " ".join(["scripts/soak", *sys.argv[1:]]), "kinds": kinds}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True)) as session:
        background = [asyncio.ensure_future(c) for c in (sampler.run(), bystander.listen(session))]
        idle_rss, idle_fds = sampler.now()
        await asyncio.sleep(0.5)
        sender = asyncio.ensure_future(bystander.send(session, stop))
        try:
            print(HEADER, flush=True)
            began = time.monotonic()
            await asyncio.sleep(args.quiet)
            quiet = row("quiet", bystander, sampler, began, time.monotonic())
            print_row(quiet, len(bystander.failures))
            quiet_rss, quiet_fds = sampler.now()
            rows: list[dict[str, Any]] = []
            outcomes: dict[str, Any] = {}
            windows: list[dict[str, Any]] = []
            if args.each:
                for kind in kinds:
                    kind_rows, kind_outcomes, kind_windows = await attack(
                        relay, [kind], args.each, args.each, kind, bystander, sampler
                    )
                    rows += kind_rows
                    outcomes[kind] = kind_outcomes
                    windows += kind_windows
                    await settle(session, relay, sampler, quiet_fds)
            else:
                rows, outcomes, windows = await attack(
                    relay, kinds, args.seconds, args.every, "attack", bystander, sampler
                )
            attacked = (began + args.quiet, time.monotonic())
            settled_in = await settle(session, relay, sampler, quiet_fds)
            await asyncio.sleep(2)  # two more rounds of the bystander after the hostiles left
            after = row("after", bystander, sampler, time.monotonic() - 2, time.monotonic())
            print_row(after, len(bystander.failures))
        finally:
            stop.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sender, STEP * 4)
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
        end_rss, end_fds = sampler.now()
        final_health = await health(session, relay)
    await relay_child.stop()
    log_lines = log.read_text(errors="replace").splitlines()
    peak_rss = max((s[1] for s in sampler.samples), default=end_rss)
    peak_fds = max((s[2] for s in sampler.samples), default=end_fds)
    cpu = sampler.window(*attacked)["cpu_pct"]
    under_attack = bystander.latency(*attacked)
    report |= {
        "seconds": args.seconds if not args.each else args.each * len(kinds),
        "bystander": {
            "quiet": {k: v for k, v in quiet.items() if k.endswith("_ms") or k == "echoes"},
            "under_attack": under_attack,
            "connect_p50_ms": round(percentile([ms for _, ms in bystander.connects], 50), 2),
            "connect_ms": [round(ms, 1) for _, ms in bystander.connects],
            "connections": len(bystander.connects),
            "echoes": bystander.echoes,
            "posts": bystander.posts,
            "failures": len(bystander.failures),
            "first_failures": bystander.failures[:5],
            "lost": bystander.lost,
        },
        "relay": {
            "rss_mib": {
                "idle": round(idle_rss / 2**20, 1),
                "after_quiet": round(quiet_rss / 2**20, 1),
                "peak": round(peak_rss / 2**20, 1),
                "end": round(end_rss / 2**20, 1),
            },
            "fds": {"idle": idle_fds, "after_quiet": quiet_fds, "peak": peak_fds, "end": end_fds},
            "cpu_pct_under_attack": cpu,
            "settled_in_s": round(settled_in, 1),
            "log_bytes": log.stat().st_size,
            "log_lines": len(log_lines),
            "log_tracebacks": sum(1 for line in log_lines if line.startswith("Traceback")),
            "log_errors": [line[:300] for line in log_lines if line.startswith("ERROR")][:5],
            "health_at_end": final_health,
        },
        "rows": rows,
        "hostiles": outcomes,
        "windows": windows,
    }
    report["problems"] = problems(report, args.max_rss_growth)
    return report


def problems(report: dict[str, Any], max_rss_growth: float) -> list[str]:
    """Every broken promise in ``report`` (nothing timed)."""
    found = []
    by = report["bystander"]
    if by["failures"] or by["lost"]:
        found.append(
            f"the bystander failed {by['failures']} times, lost {by['lost']}: {by['first_failures']}"
        )
    outcomes = report["hostiles"]
    flat = outcomes.get("outcomes", {}) if "outcomes" in outcomes else {}
    for per_kind in outcomes.values():
        if isinstance(per_kind, dict) and "outcomes" in per_kind:
            flat |= per_kind["outcomes"]
    for kind, seen in flat.items():
        for outcome, n in seen.items():
            if outcome.startswith("lost") or outcome == "ACCEPTED":
                found.append(f"{kind}: {outcome} x{n}")
    found += lockouts(report["windows"])
    relay = report["relay"]
    if relay["log_tracebacks"] or relay["log_errors"]:
        found.append(f"the relay logged {relay['log_tracebacks']} tracebacks; errors: {relay['log_errors']}")
    if relay["fds"]["end"] > relay["fds"]["after_quiet"] + FD_SLACK:
        found.append(f"open files did not come back: {relay['fds']}")
    growth = relay["rss_mib"]["end"] - relay["rss_mib"]["after_quiet"]
    if growth > max_rss_growth:
        found.append(f"RSS grew by {growth:.0f} MiB (bound {max_rss_growth:g}): {relay['rss_mib']}")
    return found


def run_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="hostile phase (default 600)")
    parser.add_argument("--quiet", type=float, default=10, help="bystander alone first (default 10)")
    parser.add_argument("--every", type=float, default=0, help="seconds per table row (default: seconds/10)")
    parser.add_argument("--kinds", default="all", help=f"comma-separated, of: {','.join(KINDS)}")
    parser.add_argument("--each", type=float, default=0, help="run the kinds one at a time, this long each")
    parser.add_argument("--max-rss-growth", type=float, default=128, help="MiB over the quiet phase")
    parser.add_argument(
        "--relay-loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the relay's event loop (default uvloop, as hyco relay runs where uvloop is installed)",
    )
    parser.add_argument("--json", type=Path, help="write the whole report here")
    parser.add_argument("--log", type=Path, help="keep the relay's log (warnings and errors) here")
    args = parser.parse_args()
    args.every = args.every or max(5.0, args.seconds / 10)
    with tempfile.TemporaryDirectory() as tmp:
        report = asyncio.run(soak(args, Path(tmp)))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    by, relay = report["bystander"], report["relay"]
    quiet, attacked = by["quiet"], by["under_attack"]
    print(
        f"\nbystander: {by['connections']} connections, {by['echoes']} echoes, {by['posts']} POSTs, "
        f"{by['failures']} failures, {by['lost']} lost; echo p50/p99 {quiet['p50_ms']}/{quiet['p99_ms']} ms "
        f"quiet, {attacked['p50_ms']}/{attacked['p99_ms']} ms under attack\n"
        f"relay: RSS {relay['rss_mib']}, open files {relay['fds']}, "
        f"CPU {relay['cpu_pct_under_attack']:.0f} % under attack, settled in {relay['settled_in_s']} s, "
        f"{relay['log_lines']} lines ({relay['log_bytes']} bytes) of log"
    )
    for kind, seen in report["hostiles"].items():
        if kind in ("outcomes", "cuts"):  # all kinds at once
            for name, value in seen.items():
                print(f"  {name}{' cut' if kind == 'cuts' else ''}: {value}")
        elif kind == "listener_ends":
            print(f"  hostile listeners ended (and came back): {seen or 'never'}")
        else:  # one kind at a time (--each)
            ends = f" (listener ended: {seen['listener_ends']})" if seen.get("listener_ends") else ""
            print(f"  {kind}: {seen['outcomes'].get(kind, {})} {seen['cuts'].get(kind, '')}{ends}")
    print(f"lockout rule: {LOCKOUT_RULE}")
    if report["problems"]:
        print("BROKEN:\n  " + "\n  ".join(report["problems"]))
        sys.exit(1)
    print("ok: nothing lost, the bystander never failed, no kind locked out, open files and memory came back")


if __name__ == "__main__":
    run_cli()
