"""The classic Hybrid Connections walkthrough, step by step, written with the hyco SDK.

Microsoft's Python quick start drives raw WebSockets: open the control channel, receive the ``accept``
notice, dial the rendezvous address, receive a message. This program does the same with hyco and prints each
step as it happens. It plays both parts, so one command shows the whole exchange:

    python examples/walkthrough.py sb://NAMESPACE.servicebus.windows.net/HC_PATH KEY [KEY_NAME]
    python examples/walkthrough.py ws://127.0.0.1:9350/echo KEY          # a local hyco relay
"""

from __future__ import annotations

import asyncio
import sys

from hyco import AcceptContext, HybridConnectionClient, HybridConnectionListener, TokenProvider


def step(number: int, text: str) -> None:
    """Print one numbered step."""
    print(f"[{number}] {text}", flush=True)


async def main(address: str, key: str, key_name: str) -> None:
    """Play listener and sender, printing every step."""
    tokens = TokenProvider.from_shared_access_key(key_name, key)

    def on_accept(context: AcceptContext) -> bool:
        step(3, f"accept notice received for connection {context.id}")
        step(4, "dialing the rendezvous address to take the connection")
        return True  # returning False (or context.reject(status, text)) would refuse the sender

    listener = HybridConnectionListener(
        address, tokens, accept_handler=on_accept, on_online=lambda _: step(1, "control channel open")
    )
    async with listener:
        step(2, f"listening on {listener.address}; now a sender connects")
        sender = await HybridConnectionClient(address, tokens).connect()
        stream = await listener.accept()
        assert stream is not None
        step(5, "rendezvous complete: sender and listener are spliced")
        await sender.send_text("Hello from the sender!")
        message = await stream.receive()
        step(6, f"listener received: {message!r}")
        await stream.send_text("Hello back from the listener!")
        step(7, f"sender received: {await sender.receive()!r}")
        await asyncio.gather(sender.close(), stream.close())
    step(8, "closed")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    asyncio.run(
        main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "RootManageSharedAccessKey")
    )
