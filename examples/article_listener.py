"""The raw listener of Microsoft's article "Hybrid relay control & rendezvous channel of Python edition".

    python examples/article_listener.py CONNECTION_STRING [CA_FILE]

CONNECTION_STRING is the one ``hyco relay`` prints, plus ``;EntityPath=echo``. CA_FILE is a CA certificate to
trust for a ``wss://`` relay with a development certificate (``hyco relay --self-signed`` prints its path).

The code is the article's: a ``websocket-client`` ``WebSocketApp`` holds the control channel
(``sb-hc-action=listen``, the token in ``sb-hc-token``), and ``on_message`` reads
``json.loads(message)["accept"]["address"]``, dials it with ``create_connection`` and ``recv()``s from the
sender. Like the article, it serves one sender at a time, inside the callback; here it echoes every message
until the sender closes. Only the token comes from hyco (no SDK is used).

The article warns that "the callback function will be triggered even [if the] sender does not send any
message": control channel notifications. This listener copes with the ones a relay sends:

* ``request`` (a plain HTTP sender; a body, when there is one, follows as a binary message): answered with
  ``501`` on the control channel, so the HTTP sender is not left waiting;
* an ``accept`` whose sender already gave up: dialing its address fails (``403``), or the relay closes the
  rendezvous at once; the listener says so and goes on listening;
* anything else: shown and ignored.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.parse

from websocket import ABNF, WebSocketApp, WebSocketException, create_connection

from hyco import RelayConnectionString
from hyco.protocol import create_token, parse_address

TOKEN_TTL = 3600  # seconds; the article's listener never renews its token


def make_token(cs: RelayConnectionString) -> str:
    """A Listen token for the connection string's hybrid connection, signed by hyco."""
    if not (cs.entity_path and cs.shared_access_key_name and cs.shared_access_key):
        sys.exit("the connection string needs SharedAccessKeyName, SharedAccessKey and EntityPath")
    audience = parse_address(cs.endpoint, cs.entity_path).audience
    return create_token(
        audience, cs.shared_access_key_name, cs.shared_access_key, int(time.time()) + TOKEN_TTL
    )


def on_open(ws):
    """The control channel is open: senders can reach us."""
    print("listening", flush=True)


def on_message(ws, message):
    """One message on the control channel: an ``accept`` to serve, or a notification."""
    if isinstance(message, bytes):
        # The body of an HTTP request announced just before; this listener does not serve HTTP.
        print(f"notification: skipped a {len(message)}-byte request body", flush=True)
        return
    data = json.loads(message)
    if "accept" not in data:
        answer_notification(ws, data)
        return
    url = data["accept"]["address"]
    rendezvous = None
    try:
        rendezvous = create_connection(url, sslopt=sslopt)
        connected = rendezvous.connected
        if connected:
            print(f"accepted {data['accept']['id']}", flush=True)
            echo(rendezvous)
    except (WebSocketException, OSError) as ex:
        # The sender gave up before we dialed (or the relay went away): nothing to serve, keep listening.
        print(f"rendezvous failed: {ex}", flush=True)
    finally:
        if rendezvous is not None:
            rendezvous.close()


def echo(rendezvous):
    """Send every message back as it came (text as text, binary as binary) until the sender closes."""
    while True:
        opcode, payload = rendezvous.recv_data()
        if opcode == ABNF.OPCODE_CLOSE:
            print("sender closed", flush=True)
            return
        rendezvous.send(payload, opcode)


def answer_notification(ws, data):
    """A control channel notification that is not an ``accept`` (protocol.md 2.2, 2.4)."""
    request = data.get("request")
    if request is None or "id" not in request:
        print(f"notification: ignored {sorted(data)}", flush=True)
        return
    response = {
        "requestId": request["id"],
        "statusCode": 501,
        "statusDescription": "This listener serves WebSocket connections only",
        "body": False,
    }
    ws.send(json.dumps({"response": response}))
    print(f"notification: answered request {request['id']} with 501", flush=True)


def on_error(ws, error):
    """Show what went wrong (websocket-client also calls this when a callback raised)."""
    print(f"error: {error}", flush=True)


def on_close(ws, close_status_code, close_msg):
    """The control channel closed; like the article's listener, this one does not reconnect."""
    print(f"closed {close_status_code} {close_msg}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    cs = RelayConnectionString.parse(sys.argv[1])
    endpoint = urllib.parse.urlsplit(cs.endpoint)
    # sb:// is TLS, as in Azure; ws:// is a plain local relay.
    scheme = "ws" if endpoint.scheme == "ws" else "wss"
    service_namespace = endpoint.netloc
    entity_path = cs.entity_path
    sslopt = {"ca_certs": sys.argv[2]} if len(sys.argv) == 3 else None
    token = make_token(cs)

    wss_uri = f"{scheme}://{service_namespace}/$hc/{entity_path}?sb-hc-action=listen"
    wss_uri += "&sb-hc-token=" + urllib.parse.quote(token)
    ws = WebSocketApp(wss_uri, on_open=on_open, on_message=on_message, on_error=on_error, on_close=on_close)
    ws.run_forever(sslopt=sslopt)
