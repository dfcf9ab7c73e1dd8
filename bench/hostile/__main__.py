"""``python -m bench.hostile``: run the kinds until told to stop, then print what they saw.

A ``snapshot`` line on stdin prints the outcomes counted so far (one JSON line, ``{kind: {outcome: n}}``);
a ``stop`` line (or the end of stdin) stops every kind and prints the summary (:func:`summary`)."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable
from typing import Any

import aiohttp

from bench.common import stdin_reader
from bench.hostile import KINDS
from bench.hostile.context import LISTENER_SOURCE, Ctx
from bench.hostile.listeners import frozen_listener, hostile_listener, nodial_listener


async def run(ctx: Ctx, kinds: list[str], ready: Callable[[], None]) -> None:
    """Start the hostile listeners, call ``ready``, run ``kinds`` until ``ctx.stop``; ``ctx`` counts what they
    saw."""
    stop = ctx.stop
    for i, kind in enumerate(KINDS):
        ctx.sources[kind] = f"127.0.0.{20 + i}"
    # The hostile listeners (and their rendezvous dials) get an address of their own too.
    connector = aiohttp.TCPConnector(limit=0, local_addr=(LISTENER_SOURCE, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        listeners = [
            asyncio.ensure_future(make(ctx, session))
            for make in (hostile_listener, nodial_listener, frozen_listener)
        ]
        await asyncio.sleep(1)  # the channels come online (a sender meanwhile would just get a 404)
        for listener in listeners:
            if listener.done():
                listener.result()  # a listener that could not connect: say why
        ready()
        tasks = [asyncio.ensure_future(KINDS[kind](ctx)) for kind in kinds]
        await stop.wait()
        # Every loop ends its current attempt within a few seconds of ``stop``; then cut what is left.
        _, late = await asyncio.wait(tasks, timeout=10)
        for task in [*late, *listeners]:
            task.cancel()
        await asyncio.gather(*tasks, *listeners, return_exceptions=True)


def counts(ctx: Ctx) -> dict[str, dict[str, int]]:
    """The outcomes counted so far, per kind."""
    return {kind: dict(seen) for kind, seen in ctx.outcomes.items()}


def summary(ctx: Ctx) -> dict[str, Any]:
    cuts = {
        kind: {"count": len(v), "max_s": round(max(v), 2), "min_s": round(min(v), 2)}
        for kind, v in ctx.cut_seconds.items()
        if v
    }
    return {"outcomes": counts(ctx), "cuts": cuts, "listener_ends": dict(ctx.listener_ends)}


async def main(args: argparse.Namespace) -> None:
    ctx = Ctx(args.relay, asyncio.Event())
    reader = await stdin_reader()

    async def watch_stdin() -> None:
        while (line := await reader.readline()) and line.strip() != b"stop":
            if line.strip() == b"snapshot":
                print(json.dumps(counts(ctx)), flush=True)
        ctx.stop.set()

    watcher = asyncio.ensure_future(watch_stdin())
    await run(ctx, args.kinds.split(","), lambda: print("ready", flush=True))
    watcher.cancel()
    print(json.dumps(summary(ctx)), flush=True)


def run_cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--relay", required=True)
    parser.add_argument("--kinds", default=",".join(KINDS))
    asyncio.run(main(parser.parse_args()))


if __name__ == "__main__":
    run_cli()
