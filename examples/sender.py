"""An asyncio sender: connects, sends its arguments, prints what comes back.

python examples/sender.py ADDRESS KEY "some text" [KEY_NAME]
"""

from __future__ import annotations

import asyncio
import sys

from hyco import ConnectionRejected, HybridConnectionClient, TokenProvider


async def main(address: str, key: str, text: str, key_name: str) -> None:
    """Send text, print the reply."""
    client = HybridConnectionClient(address, TokenProvider.from_shared_access_key(key_name, key))
    try:
        stream = await client.connect(headers={"X-Example": "sender.py"})
    except ConnectionRejected as exc:
        sys.exit(f"rejected: {exc.http_status} {exc.description}")
    async with stream:
        await stream.write(text.encode())
        await stream.shutdown()  # half-close: "that is all I send", keep reading
        reply = b""
        while data := await stream.read():
            reply += data
    print(reply.decode(errors="replace"))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    asyncio.run(
        main(
            sys.argv[1],
            sys.argv[2],
            sys.argv[3],
            sys.argv[4] if len(sys.argv) > 4 else "RootManageSharedAccessKey",
        )
    )
