"""A throw-away PostgreSQL cluster of the tests' own, which they may stop hard, restart and cut off.

The shared server on 127.0.0.1:5432 belongs to every test (and to CI); crash and fault tests must not stop it. This
starts a private cluster with ``initdb``/``pg_ctl`` from the machine's PostgreSQL, in a temporary directory, on a free
loopback port, trust auth for ``postgres``. PostgreSQL refuses to run as root, so as root the commands run as the
``postgres`` system user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.support.server import free_port

_SEARCH = ("/usr/lib/postgresql/{v}/bin", "/usr/local/bin", "/usr/bin")


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        for version in sorted(base.iterdir(), reverse=True):
            candidate = version / "bin" / name
            if candidate.exists():
                return str(candidate)
    return None


def available() -> str | None:
    """None when a private cluster can be started here, else the reason it cannot."""
    if _binary("initdb") is None or _binary("pg_ctl") is None:
        return "initdb/pg_ctl not found"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the cluster as"
    return None


class PrivateCluster:
    """``with PrivateCluster(tmp_path) as cluster:`` → ``cluster.url`` (database ``postgres``), then
    ``cluster.stop_immediate()`` (``pg_ctl stop -m immediate``: no shutdown checkpoint, crash recovery on restart),
    ``cluster.start()``, ``cluster.restart_immediate()``."""

    def __init__(self, base: Path) -> None:
        # Not under ``base`` itself: pytest resets its temporary tree to mode 0700 whenever another pytest run starts,
        # and then the postgres user could no longer reach the cluster. ``base`` only names it.
        self.base = Path(tempfile.mkdtemp(prefix=f"piivault-pg-{base.name}-"))
        self.data = self.base / "pgdata"
        self.sockets = self.base / "pgsock"
        self.log = self.base / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_postgres = os.geteuid() == 0

    def __enter__(self) -> PrivateCluster:
        self.init()
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.stop_immediate(missing_ok=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def _run(self, args: list[str], timeout: float = 60) -> None:
        command = ["runuser", "-u", "postgres", "--", *args] if self._as_postgres else args
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(args[0]).name} failed ({done.returncode}): {done.stderr[-1500:]}")

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        for path in (self.data, self.sockets):
            path.mkdir(mode=0o700, exist_ok=True)
        self.log.touch()
        if self._as_postgres:
            entry = pwd.getpwnam("postgres")
            for path in (self.base, self.data, self.sockets, self.log):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        initdb = _binary("initdb")
        assert initdb is not None
        self._run([initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])

    def start(self) -> None:
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._run([pg_ctl, "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "60", "start"], 90)

    def stop_immediate(self, missing_ok: bool = False) -> None:
        """Stops the postmaster without a shutdown checkpoint; every connection drops, as in a crash."""
        pg_ctl = _binary("pg_ctl")
        assert pg_ctl is not None
        if missing_ok and not (self.data / "postmaster.pid").exists():
            return
        self._run([pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"])

    def restart_immediate(self) -> None:
        self.stop_immediate()
        self.start()
