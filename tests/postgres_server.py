"""A throw-away PostgreSQL server for the tests and benchmarks that need a real one.

``python -m tests.postgres_server`` (run by ``make test``) installs Debian's ``postgresql``
package where its programs are missing (as root, with apt-get; elsewhere it prints what to
install). :class:`PostgresServer` then runs ``initdb`` and ``postgres`` in a temporary folder,
listening on 127.0.0.1 only, on a free port, trusting local connections: nothing outside the
test run can reach it, and it is stopped and removed afterwards. As root (CI) the server runs as
the ``postgres`` user, since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

HOST = "127.0.0.1"
INSTALL = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]


def binaries() -> Path | None:
    """The folder holding ``initdb`` and ``postgres`` (newest Debian version), or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return None if initdb is None else Path(initdb).resolve().parent


def install() -> bool:
    """Install Debian's postgresql package where it is missing; False (with a note) if not."""
    if binaries() is not None:
        return True
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("note: PostgreSQL is not installed (Debian: apt-get install postgresql); the "
              "*postgres* tests will skip", file=sys.stderr)  # fmt: skip
        return False
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(INSTALL, env=env, capture_output=True).returncode != 0:
        # a new machine's package lists may be missing or stale
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(INSTALL, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"note: apt-get install postgresql failed:\n{done.stderr[-2000:]}",
                  file=sys.stderr)  # fmt: skip
            return False
    return binaries() is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class PostgresServer:
    """``with PostgresServer() as server: server.url("db")`` (``server.create_database``)."""

    def __init__(self) -> None:
        found = binaries()
        if found is None:
            raise RuntimeError("PostgreSQL is not installed: python -m tests.postgres_server")
        self.bin, self.port = found, free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="mrm-postgres-"))
        self.data = self.folder / "data"
        self._as_root = os.geteuid() == 0

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_root else []
        done = subprocess.run(prefix + list(command), capture_output=True, text=True)
        if done.returncode != 0:
            log = self.folder / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{command[0]} failed: {done.stderr[-2000:]}\n{tail}")

    def start(self) -> PostgresServer:
        if self._as_root:
            shutil.chown(self.folder, "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "--auth=trust",
                  "-U", "postgres", "-E", "UTF8", "--no-sync")  # fmt: skip
        options = (f"-c listen_addresses={HOST} -c port={self.port} "
                   f"-c unix_socket_directories={self.folder} -c fsync=off "
                   "-c max_connections=200")  # fmt: skip
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-w",
                  "-l", str(self.folder / "log"), "start")  # fmt: skip
        return self

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://postgres{secret}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(0 if install() else 1)
