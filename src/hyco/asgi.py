"""``hyco.asgi``: serve an ASGI application (FastAPI, Starlette, ...) through a hybrid connection listener.

See :mod:`hyco.client.asgi` and ``docs/http.md``::

    import hyco.asgi
    await hyco.asgi.serve(app, HybridConnectionListener("sb://ns.example/myhc", tp))
"""

from hyco.client.asgi import ASGIApp, LifespanError, asgi_handler, serve

__all__ = ["ASGIApp", "LifespanError", "asgi_handler", "serve"]
