"""An embedded PostgreSQL 16 with pgvector, for local runs and tests.

Built on the binaries of the `pgserver` wheel (a dev extra, imported lazily), driven directly
with `initdb` / `pg_ctl` rather than through `pgserver.get_server`, because we need a TCP
port on 127.0.0.1 and explicit stop/start (tests stop PostgreSQL under load and bring it
back). PostgreSQL refuses to run as root, so as root every server command runs as the
unprivileged system user `pgserver` (created on first use, as pgserver itself does).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from agentledger.infra.nats_server import EmbeddedServerError, free_port

__all__ = [
    "EmbeddedPostgres",
    "EmbeddedServerError",
    "create_database_on",
    "drop_database_on",
    "pgserver_bin_dir",
]

_HOST = "127.0.0.1"
_OS_USER_WHEN_ROOT = "pgserver"
_SUPERUSER = "postgres"
_PG_CTL_TIMEOUT_S = 30
_PORT_RETRIES = 3
_LOG_TAIL_CHARS = 4000
# Unix socket paths are limited to 107 bytes (sun_path); leave room for ".s.PGSQL.65535".
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535")
_DBNAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SERVER_SETTINGS = {
    # Tests open many pools side by side (workers, projections, the test itself).
    "max_connections": "300",
}


def pgserver_bin_dir() -> Path:
    """Directory holding `initdb`, `pg_ctl` and `postgres` from the `pgserver` wheel."""
    try:
        with warnings.catch_warnings():
            # Importing pgserver evaluates platformdirs' runtime dir, which warns when
            # XDG_RUNTIME_DIR is unset (containers, CI); pytest would make that an error.
            warnings.simplefilter("ignore")
            from pgserver._commands import POSTGRES_BIN_PATH
    except ImportError as err:
        raise EmbeddedServerError(
            "the embedded PostgreSQL needs the pgserver wheel: `pip install pgserver==0.1.4` "
            "(or `pip install -e .[dev]`), or set AGENTLEDGER_POSTGRES_DSN to use a running "
            "PostgreSQL with pgvector"
        ) from err
    return Path(POSTGRES_BIN_PATH)


def _db_url(dsn: str, dbname: str) -> str:
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError("expected a postgresql://user:pass@host:port/db URL")
    return urlunsplit(parts._replace(path="/" + dbname))


def _check_dbname(name: str) -> None:
    # Lower-case identifiers only: they need no quoting in URLs, psql or log lines.
    if not _DBNAME_RE.fullmatch(name):
        raise ValueError(f"database name must match {_DBNAME_RE.pattern}: {name!r}")


def create_database_on(admin_dsn: str, name: str) -> str:
    """Create database `name` on the server of `admin_dsn` with pgvector; return its URL.

    `admin_dsn` is a `postgresql://` URL of any database the user may `CREATE DATABASE`
    from; the returned URL is the same with the database name replaced.
    """
    _check_dbname(name)
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = _db_url(admin_dsn, name)
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return dsn


def drop_database_on(admin_dsn: str, name: str) -> None:
    """Drop database `name` if it exists, disconnecting its sessions first."""
    _check_dbname(name)
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1 whose data lives in `data_dir`.

    Trust authentication (no password) for the superuser `postgres`: for tests and local
    runs only. The port, once chosen, is kept across `stop()`/`start()` so DSNs stay valid.
    An `atexit` hook stops a server still running when the interpreter exits (pg_ctl
    detaches the postmaster into its own session, so nothing else would).
    """

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        """Configure (not start) a server; `port=None` picks a free one on first start."""
        self.data_dir = Path(data_dir).resolve()
        self.log_file = self.data_dir / "postgres.log"
        self._port = port
        self._port_fixed = port is not None
        self._os_user: str | None = None
        self._own_socket_dir: Path | None = None
        self._atexit_registered = False

    # -- properties -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedServerError("EmbeddedPostgres has no port yet: call start() first")
        return self._port

    @property
    def is_running(self) -> bool:
        """True while a postmaster for `data_dir` is alive (ours or a leftover)."""
        return self._postmaster_pid() is not None

    def dsn(self, dbname: str = "postgres") -> str:
        """`postgresql://postgres@127.0.0.1:<port>/<dbname>`."""
        return f"postgresql://{_SUPERUSER}@{_HOST}:{self.port}/{dbname}"

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> EmbeddedPostgres:
        """initdb if `data_dir` is new, then start and wait until clients can connect.

        Raises:
            EmbeddedServerError: pgserver missing, or the server did not come up (the
                message carries the tail of the server log).
        """
        bin_dir = pgserver_bin_dir()
        self._prepare_os_user(bin_dir)
        if not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True
        if self.is_running:
            if self._port is not None and self._accepts_connections():
                return self
            # A postmaster from an owner that died (or on another port) holds data_dir:
            # stop it, since two owners of one data directory is a recipe for confusion.
            self._pg_ctl(bin_dir, ["-m", "fast", "stop"])
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bin_dir)

        for attempt in range(_PORT_RETRIES):
            if self._port is None:
                self._port = free_port()
            log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
            try:
                self._pg_ctl(
                    bin_dir, ["-l", str(self.log_file), "-o", self._server_options(), "start"]
                )
            except EmbeddedServerError as err:
                tail = self._log_tail(log_offset)
                self._remove_own_socket_dir()
                port_clash = "address already in use" in tail.lower()
                if port_clash and not self._port_fixed and attempt + 1 < _PORT_RETRIES:
                    # free_port() raced with another process for the port: pick again.
                    self._port = None
                    continue
                raise EmbeddedServerError(f"{err}\nserver log ({self.log_file}):\n{tail}") from err
            self._port_fixed = True
            break

        self._check_pgvector()
        return self

    def stop(self) -> None:
        """Fast shutdown (`pg_ctl -m fast stop`): open sessions are disconnected, data is
        checkpointed. Idempotent."""
        if not self.is_running:
            self._remove_own_socket_dir()
            return
        bin_dir = pgserver_bin_dir()
        try:
            self._pg_ctl(bin_dir, ["-m", "fast", "stop"])
        except EmbeddedServerError:
            # Something wedged the fast shutdown; immediate mode recovers via WAL replay
            # on the next start, which is still better than leaving a postmaster behind.
            pid = self._postmaster_pid()
            if pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGQUIT)
                self._wait_gone(pid)
        self._remove_own_socket_dir()

    def restart(self) -> EmbeddedPostgres:
        """stop() then start() on the same port and data."""
        self.stop()
        return self.start()

    def create_database(self, name: str) -> str:
        """Create database `name` with the vector extension; return its DSN."""
        return create_database_on(self.dsn(), name)

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(data_dir={str(self.data_dir)!r}, port={self._port})"

    # -- internals ----------------------------------------------------------------------

    def _prepare_os_user(self, bin_dir: Path) -> None:
        """As root: make sure user `pgserver` exists, can reach the binaries and owns
        data_dir. Otherwise: everything runs as the current user."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # see pgserver_bin_dir()
            from pgserver.utils import ensure_folder_permissions, ensure_user_exists

        entry = ensure_user_exists(_OS_USER_WHEN_ROOT)
        assert entry is not None
        self._os_user = _OS_USER_WHEN_ROOT
        _ensure_traversable(self.data_dir)
        _ensure_traversable(bin_dir)
        install_dir = bin_dir.parent
        if not os.stat(bin_dir / "postgres").st_mode & stat.S_IXOTH:
            # Wheels installed under a strict umask: open up exactly what postgres reads.
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(bin_dir, read | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(install_dir / "lib", read)
            ensure_folder_permissions(install_dir / "share", read)
        if self.data_dir.stat().st_uid != entry.pw_uid:
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _run(self, argv: list[str], timeout: float) -> None:
        # Output goes to temporary files, not pipes: the postmaster forked by `pg_ctl start`
        # could inherit a pipe and keep communicate() waiting forever.
        with tempfile.TemporaryFile() as out:
            try:
                proc = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    user=self._os_user,
                    # The unprivileged user may not be able to enter our cwd.
                    cwd="/",
                    env=_clean_env(),
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as err:
                raise EmbeddedServerError(
                    f"{Path(argv[0]).name} timed out after {timeout} s"
                ) from err
            if proc.returncode != 0:
                out.seek(0)
                output = out.read().decode("utf-8", "replace")[-_LOG_TAIL_CHARS:]
                raise EmbeddedServerError(
                    f"{shlex.join(argv)} failed with exit code {proc.returncode}:\n{output}"
                )

    def _initdb(self, bin_dir: Path) -> None:
        self._run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                _SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                # The C locale exists everywhere; containers often lack others.
                "--no-locale",
                # Skips only initdb's own final fsync of the template files; the running
                # server keeps fsync=on.
                "--no-sync",
            ],
            timeout=120,
        )

    def _pg_ctl(self, bin_dir: Path, args: list[str]) -> None:
        argv = [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            str(_PG_CTL_TIMEOUT_S),
        ]
        self._run(argv + args, timeout=_PG_CTL_TIMEOUT_S + 10)

    def _server_options(self) -> str:
        # pg_ctl hands -o to /bin/sh, hence the quoting.
        options = ["-h", _HOST, "-p", str(self.port), "-k", str(self._socket_dir())]
        for key, value in _SERVER_SETTINGS.items():
            options += ["-c", f"{key}={value}"]
        return shlex.join(options)

    def _socket_dir(self) -> Path:
        """The Unix socket goes in data_dir unless that path is too long for sun_path."""
        if len(str(self.data_dir)) <= _MAX_SOCKET_DIR_LEN:
            return self.data_dir
        if self._own_socket_dir is None:
            self._own_socket_dir = Path(tempfile.mkdtemp(prefix="agpg-"))
            if self._os_user is not None:
                shutil.chown(self._own_socket_dir, self._os_user, self._os_user)
        return self._own_socket_dir

    def _remove_own_socket_dir(self) -> None:
        if self._own_socket_dir is not None:
            shutil.rmtree(self._own_socket_dir, ignore_errors=True)
            self._own_socket_dir = None

    def _accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.dsn(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def _check_pgvector(self) -> None:
        """Fail at start, not in the middle of a test, if the vector library cannot load.
        The extension is created in a rolled-back transaction, leaving no trace."""
        try:
            with psycopg.connect(self.dsn(), connect_timeout=10) as conn:
                conn.execute("CREATE EXTENSION vector")
                conn.execute("SELECT '[1,2,3]'::vector <=> '[3,2,1]'::vector")
                conn.rollback()
        except psycopg.Error as err:
            raise EmbeddedServerError(f"pgvector does not load in {self!r}: {err}") from err

    def _postmaster_pid(self) -> int | None:
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first_line)
        except (OSError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        # A stale postmaster.pid after a crash can name a recycled pid: check it is postgres.
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return pid  # no /proc: trust the pid file
        return pid if comm.startswith("postgres") else None

    @staticmethod
    def _wait_gone(pid: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _log_tail(self, offset: int) -> str:
        try:
            with self.log_file.open("rb") as log:
                log.seek(offset)
                text = log.read().decode("utf-8", "replace")
        except OSError as err:
            return f"<cannot read log: {err}>"
        return text[-_LOG_TAIL_CHARS:] or "<empty>"

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


def _ensure_traversable(path: Path) -> None:
    """Let other users enter every ancestor of `path` (adds only the execute bit, unlike
    pgserver's helper, which also makes them listable)."""
    for parent in path.parents:
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH == 0:
            parent.chmod(mode | stat.S_IXGRP | stat.S_IXOTH)


def _clean_env() -> dict[str, str]:
    # PGDATA, PGPORT, PGHOST... from the caller's shell would silently override our flags.
    return {key: value for key, value in os.environ.items() if not key.startswith("PG")}
