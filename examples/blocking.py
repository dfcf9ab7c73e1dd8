"""The blocking SDK (hyco.sync): a listener thread that upper-cases, and a sender, in plain threads.

python examples/blocking.py ADDRESS KEY [KEY_NAME]
"""

from __future__ import annotations

import sys
import threading

from hyco.sync import AcceptContext, HybridConnectionClient, HybridConnectionListener, TokenProvider


def serve(listener: HybridConnectionListener) -> None:
    """Upper-case every stream until the listener closes."""
    for stream in listener:  # ends when the listener is closed
        with stream:
            data = b""
            while chunk := stream.read():
                data += chunk
            stream.write(data.upper())


def main(address: str, key: str, key_name: str) -> None:
    """Run a listener and one sender."""
    tokens = TokenProvider.from_shared_access_key(key_name, key)

    def only_friends(context: AcceptContext) -> bool:
        if context.headers.get("X-Friend") != "yes":
            context.reject(403, "Friends only")
            return False
        return True

    with HybridConnectionListener(address, tokens, accept_handler=only_friends) as listener:
        worker = threading.Thread(target=serve, args=(listener,), daemon=True)
        worker.start()
        with HybridConnectionClient(address, tokens).connect(headers={"X-Friend": "yes"}) as stream:
            stream.write(b"quiet words")
            stream.shutdown()
            print(stream.read().decode())
    worker.join()


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "RootManageSharedAccessKey")
