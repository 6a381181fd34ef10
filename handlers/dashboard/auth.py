"""Who may use the dashboard.

The rules (README "Monitoring and the dashboard"):
- Without a token the dashboard listens on a loopback address only (starting it on
  any other is refused: `DashboardConfigError`), and answers only requests whose `Host`
  is a loopback name or address, so a web page cannot reach it through DNS rebinding.
- With a token (`AGENTLEDGER_DASHBOARD_TOKEN`, at least `MIN_TOKEN_CHARS` printable
  characters) every request must carry it: `Authorization: Bearer <token>`, or the
  session cookie. `GET /?token=<token>` (the URL `agentledger dashboard` prints) answers
  the page with that cookie (`HttpOnly; SameSite=Strict`), so the page's own requests
  and its `EventSource` carry it; the page then takes the token out of its address.
  The cookie holds an HMAC of the token, not the token. Every comparison is in
  constant time (`hmac.compare_digest`).
- A POST (the replay button) from a browser must come from the dashboard's own origin.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from http import HTTPStatus

from agentledger.handlers.dashboard.http import Request, Response

__all__ = [
    "COOKIE",
    "MIN_TOKEN_CHARS",
    "DashboardConfigError",
    "Gate",
    "check_listen_config",
    "is_loopback",
]

COOKIE = "agentledger_dashboard"
MIN_TOKEN_CHARS = 16
_TOKEN = re.compile(rf"^[\x21-\x7e]{{{MIN_TOKEN_CHARS},512}}$")
_LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")


class DashboardConfigError(Exception):
    """The dashboard refuses to start as configured (the message says what to change)."""


def is_loopback(host: str) -> bool:
    """Whether `host` (an address or `localhost`) is only reachable from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen_config(host: str, token: str | None) -> None:
    """Refuse a configuration that would expose the dashboard: a non-loopback address
    without a token, or a token too short or with characters a header cannot carry."""
    if token is not None and not _TOKEN.match(token):
        raise DashboardConfigError(
            f"AGENTLEDGER_DASHBOARD_TOKEN (--token) must be {MIN_TOKEN_CHARS} to 512 printable"
            " ASCII characters without spaces; make one with `openssl rand -hex 24`"
        )
    if token is None and not is_loopback(host):
        raise DashboardConfigError(
            f"the dashboard would listen on {host}, which is not a loopback address, with no"
            " token: set AGENTLEDGER_DASHBOARD_TOKEN (or --token), or listen on 127.0.0.1"
        )


@dataclass(frozen=True, kw_only=True)
class Gate:
    """Decides whether a request may pass (see the module docstring)."""

    token: str | None

    @property
    def cookie_value(self) -> str | None:
        if self.token is None:
            return None
        return hmac.new(
            self.token.encode(), b"agentledger-dashboard-session", hashlib.sha256
        ).hexdigest()

    def refusal(self, request: Request) -> Response | None:
        """None when the request may pass, else the answer that refuses it."""
        if request.method == "POST" and not _same_origin(request):
            return _refuse(HTTPStatus.FORBIDDEN, "cross-origin request refused")
        if self.token is None:
            if not _loopback_host(request.headers.get("host", "")):
                return _refuse(
                    HTTPStatus.MISDIRECTED_REQUEST,
                    "this dashboard answers only at localhost (its Host header must name it)",
                )
            return None
        if self._bearer_ok(request) or self._cookie_ok(request) or self.query_token_ok(request):
            return None
        return Response(
            status=HTTPStatus.UNAUTHORIZED,
            body=b"a token is needed: open the URL `agentledger dashboard` printed, or send"
            b" Authorization: Bearer <token>\n",
            headers={"WWW-Authenticate": 'Bearer realm="agentledger-dashboard"'},
        )

    def query_token_ok(self, request: Request) -> bool:
        """`?token=` is taken on the page itself only (it then sets the cookie)."""
        given = request.query.get("token")
        return (
            given is not None
            and request.path == "/"
            and request.method in ("GET", "HEAD")
            and self._matches(given)
        )

    def session_cookie(self) -> str:
        """The Set-Cookie value that lets the page's own requests through."""
        assert self.cookie_value is not None
        return f"{COOKIE}={self.cookie_value}; Path=/; HttpOnly; SameSite=Strict"

    def _bearer_ok(self, request: Request) -> bool:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and self._matches(given.strip())

    def _cookie_ok(self, request: Request) -> bool:
        expected = self.cookie_value
        if expected is None:
            return False
        for part in request.headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), expected.encode()):
                return True
        return False

    def _matches(self, given: str) -> bool:
        assert self.token is not None
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.token.encode())


def _loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback (any port)."""
    host = host.lower()
    if host.startswith("["):
        name = host[: host.find("]") + 1] if "]" in host else host
    else:
        name = host.rsplit(":", 1)[0]
    return name in _LOOPBACK_NAMES or (name.startswith("127.") and is_loopback(name))


def _same_origin(request: Request) -> bool:
    """A browser's POST names its page's origin; one from another origin is refused. A
    client that sends no Origin (curl, scripts) is not a browser page."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host")
    return host is not None and hmac.compare_digest(origin.encode(), f"http://{host}".encode())


def _refuse(status: HTTPStatus, message: str) -> Response:
    return Response(status=status.value, body=f"{message}\n".encode())
