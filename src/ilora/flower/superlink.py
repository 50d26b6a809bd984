"""``ilora flower superlink``: Flower's SuperLink with its Control and Runtime APIs closed.

In flwr 1.42 one HTTPS port (``--host``/``--port``) serves three APIs: the Fleet API (SuperNodes
pull messages; each must sign with a key the operator registered, ``--enable-supernode-auth``),
the Control API (``flwr run``, ``flwr ls``, ``flwr supernode register``: no account
authentication in open-source Flower) and the Runtime API (the ServerApp's tasks). Whoever
reaches that port and trusts the CA certificate can therefore register a key of their own and
join, list and stop runs. This launcher runs the same SuperLink (flwr's own argument parsing,
app and lifespan) behind one ASGI guard:

- ``/v1/fleet/...`` and the health check answer every peer (TLS, then node authentication);
- everything else (``/v1/control/...``, ``/v1/runtime/...``) answers only the operator's
  addresses, ``127.0.0.1`` and ``::1`` unless ``--operator-address`` names others; any other
  peer gets HTTP 403 and nothing else.

So only the operator, on the SuperLink's machine, registers SuperNodes (their public keys,
provisioned out of band) and submits runs; a SuperNode elsewhere reaches the Fleet API only.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Awaitable
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import MutableMapping
from typing import Any

OPERATOR_ADDRESSES = ("127.0.0.1", "::1")
OPEN_PREFIXES = ("/v1/fleet/", "/health")  # what any peer may ask for

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    found = ipaddress.ip_address(text)
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped  # ::ffff:a.b.c.d is a.b.c.d
    return found


class OperatorOnly:
    """ASGI guard: the Control and Runtime APIs answer only peers in ``operators``."""

    def __init__(self, app: ASGIApp, operators: Iterable[str] = OPERATOR_ADDRESSES) -> None:
        self.app = app
        self.operators = {_address(a) for a in operators}

    def allowed(self, scope: Scope) -> bool:
        """Return whether the request of ``scope`` may reach the app."""
        path = str(scope.get("path", ""))
        if any(path == p.rstrip("/") or path.startswith(p) for p in OPEN_PREFIXES):
            return True
        client = scope.get("client")
        try:
            return client is not None and _address(str(client[0])) in self.operators
        except ValueError:
            return False  # a peer without an IP address (a UNIX socket) is not an operator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        body = b"this SuperLink API answers only its operator's addresses\n"
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def check_exposure(host: str, flwr_args: Iterable[str]) -> None:
    """Refuse a SuperLink reachable from other machines without TLS and node authentication.

    Raises:
        ValueError: for a non-loopback ``host`` without ``--enable-supernode-auth`` or with
            ``--insecure``.

    """
    try:
        loopback = host == "localhost" or _address(host).is_loopback
    except ValueError:  # a host name other than localhost
        loopback = False
    if loopback:
        return
    args = set(flwr_args)
    if "--enable-supernode-auth" not in args or "--insecure" in args:
        raise ValueError(
            f"--host {host} exposes the SuperLink to other machines: add TLS "
            "(--ssl-certfile/--ssl-keyfile) and --enable-supernode-auth, or bind 127.0.0.1"
        )


def run(flwr_args: list[str], operators: Iterable[str] = OPERATOR_ADDRESSES) -> None:
    """Run ``flower-superlink flwr_args...`` (blocking) with :class:`OperatorOnly` in front.

    Uses flwr 1.42's own configuration parser, app factory and lifespan, and starts uvicorn
    with the settings ``flower-superlink`` uses.
    """
    import uvicorn
    from flwr.supercore.http_logging import get_uvicorn_log_config
    from flwr.supercore.logger import console_handler
    from flwr.superlink.cli.flower_superlink import SuperLinkLifespan
    from flwr.superlink.cli.flower_superlink import _parse_superlink_lifespan_config
    from flwr.superlink.main import create_app

    guard_operators = [str(_address(a)) for a in operators]  # fail early on a bad address
    sys.argv = ["flower-superlink", *flwr_args]
    config = _parse_superlink_lifespan_config()
    check_exposure(str(config.host), flwr_args)
    app = OperatorOnly(create_app(config, SuperLinkLifespan), guard_operators)
    uvicorn.run(
        app=app,
        host=config.host,
        port=config.port,
        reload=False,
        access_log=True,
        log_config=get_uvicorn_log_config(console_handler.level),
        ssl_keyfile=config.ssl_keyfile,
        ssl_certfile=config.ssl_certfile,
        workers=1,
    )
