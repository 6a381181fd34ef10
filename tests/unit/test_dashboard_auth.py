"""Who may use the dashboard: loopback without a token, a token anywhere else; bearer,
cookie and `?token=` (on the page only); a Host header check without a token; POSTs
from another origin refused."""

from __future__ import annotations

import pytest

from agentledger.handlers.dashboard.auth import (
    COOKIE,
    DashboardConfigError,
    Gate,
    check_listen_config,
    is_loopback,
)
from agentledger.handlers.dashboard.http import Request

TOKEN = "s3cret-token-of-32-characters-xx"


def _request(
    path: str = "/api/state",
    *,
    method: str = "GET",
    query: dict[str, str] | None = None,
    **headers: str,
) -> Request:
    found = {"host": "127.0.0.1:8765"}
    found.update({k.replace("_", "-"): v for k, v in headers.items()})
    return Request(method=method, path=path, query=query or {}, headers=found)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.10", False),
        ("example.com", False),
    ],
)
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_non_loopback_address_needs_a_token() -> None:
    check_listen_config("127.0.0.1", None)
    check_listen_config("0.0.0.0", TOKEN)
    with pytest.raises(DashboardConfigError, match="not a loopback address, with no token"):
        check_listen_config("0.0.0.0", None)
    with pytest.raises(DashboardConfigError, match="16 to 512 printable"):
        check_listen_config("127.0.0.1", "short")
    with pytest.raises(DashboardConfigError, match="16 to 512 printable"):
        check_listen_config("0.0.0.0", "a token with spaces in it")


def test_without_a_token_only_loopback_hosts_pass() -> None:
    gate = Gate(token=None)
    assert gate.refusal(_request()) is None
    assert gate.refusal(_request(host="localhost:8765")) is None
    assert gate.refusal(_request(host="[::1]:8765")) is None
    rebinding = gate.refusal(_request(host="evil.example:8765"))
    assert rebinding is not None and rebinding.status == 421
    no_host = Request(method="GET", path="/", query={}, headers={})
    assert gate.refusal(no_host) is not None


def test_a_token_is_taken_as_bearer_cookie_or_on_the_page_query() -> None:
    gate = Gate(token=TOKEN)
    denied = gate.refusal(_request())
    assert denied is not None and denied.status == 401
    assert "Bearer" in denied.headers["WWW-Authenticate"]
    assert gate.refusal(_request(authorization=f"Bearer {TOKEN}")) is None
    assert gate.refusal(_request(authorization=f"bearer {TOKEN}")) is None
    wrong = gate.refusal(_request(authorization=f"Bearer {TOKEN}x"))
    assert wrong is not None and wrong.status == 401
    assert gate.refusal(_request(authorization=TOKEN)) is not None  # no scheme
    # The page takes ?token= (and its answer sets the cookie); the API does not.
    assert gate.refusal(_request("/", query={"token": TOKEN})) is None
    assert gate.query_token_ok(_request("/", query={"token": TOKEN}))
    assert gate.refusal(_request("/", query={"token": "wrong" * 4})) is not None
    assert gate.refusal(_request(query={"token": TOKEN})) is not None
    cookie = gate.session_cookie()
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert gate.refusal(_request(cookie=f"other=1; {COOKIE}={value}")) is None
    assert gate.refusal(_request(cookie=f"{COOKIE}={value}0")) is not None
    assert gate.refusal(_request(cookie=f"{COOKIE}={TOKEN}")) is not None


def test_a_browser_post_from_another_origin_is_refused() -> None:
    gate = Gate(token=None)
    post = {"method": "POST", "path": "/api/runs/x/replay"}
    assert gate.refusal(_request(**post, origin="http://127.0.0.1:8765")) is None  # type: ignore[arg-type]
    assert gate.refusal(_request(**post)) is None  # type: ignore[arg-type]  # curl: no Origin
    refused = gate.refusal(_request(**post, origin="http://evil.example"))  # type: ignore[arg-type]
    assert refused is not None and refused.status == 403
