"""An asyncio echo listener: every byte a sender writes comes back.

    python examples/echo_listener.py ADDRESS KEY [KEY_NAME]

Reconnects on its own if the relay goes away; prints its state changes. Stop it with Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

from hyco import HybridConnectionListener, HybridConnectionStream, TokenProvider


async def echo(stream: HybridConnectionStream) -> None:
    """Echo one stream until the sender half-closes."""
    async with stream:
        while data := await stream.read():
            await stream.write(data)
        await stream.shutdown()  # the sender half-closed; we are done too


async def main(address: str, key: str, key_name: str) -> None:
    """Listen and echo until interrupted."""
    tokens = TokenProvider.from_shared_access_key(key_name, key)
    listener = HybridConnectionListener(
        address,
        tokens,
        on_online=lambda lst: print("online", flush=True),
        on_offline=lambda lst: print(f"offline: {lst.last_error}", flush=True),
    )
    async with listener, asyncio.TaskGroup() as group:
        async for stream in listener:
            print(f"accepted {stream.tracking_id} from {stream.remote_endpoint}", flush=True)
            group.create_task(echo(stream))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "RootManageSharedAccessKey")
        )
