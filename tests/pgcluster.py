"""A throwaway PostgreSQL cluster for tests and benches, made with the machine's PostgreSQL.

`initdb` and `pg_ctl` refuse to run as root, so when the tests run as root they run as the
`postgres` user (`runuser`), in a private temporary directory owned by it. The server listens
only on a Unix socket in that directory (no TCP port to collide with), with fsync off: a test
cluster need not survive a power cut. Connections use trust authentication as `postgres`.

    with Cluster.start() as cluster:
        url = cluster.create_database()     # postgresql://postgres@/memoir_1?host=/tmp/...
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg


def pg_bin() -> Path | None:
    """The directory of initdb / pg_ctl (Debian keeps them out of PATH), or None."""
    if found := shutil.which("initdb"):
        return Path(found).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(candidate).parent
    return None


class Cluster:
    def __init__(self, root: Path, bin_dir: Path, as_user: str | None) -> None:
        self.root = root
        self.data = root / "data"
        self.socket = root / "sock"
        self.bin = bin_dir
        self.as_user = as_user
        self._names = itertools.count(1)

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if self.as_user:
            command = ["runuser", "-u", self.as_user, "--", *command]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @classmethod
    def start(cls, *, durable: bool = False) -> Cluster:
        """`durable`: fsync and synchronous commits on, PostgreSQL's defaults (for benches)."""
        bin_dir = pg_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb): apt-get install postgresql")
        root = Path(tempfile.mkdtemp(prefix="memoir-pg-"))
        as_user = "postgres" if os.geteuid() == 0 else None
        if as_user:
            shutil.chown(root, user=as_user)
        cluster = cls(root, bin_dir, as_user)
        cluster.socket.mkdir()
        if as_user:
            shutil.chown(cluster.socket, user=as_user)
        cluster._run("initdb", "-D", str(cluster.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                     "--locale=C.UTF-8", "--no-sync")
        options = f"-c listen_addresses='' -c unix_socket_directories='{cluster.socket}' -c max_connections=200"
        options += " -c shared_buffers=128MB" if durable else (
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=64MB"
        )
        cluster._run("pg_ctl", "-D", str(cluster.data), "-o", options, "-w", "-s", "-l",
                     str(cluster.root / "server.log"), "start")
        return cluster

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "-s", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket}"

    def admin(self, sql: str) -> None:
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of `template`); its URL."""
        name = f"memoir_{os.getpid()}_{next(self._names)}"
        self.admin(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = database_name(url)
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_name(url: str) -> str:
    return url.split("@/", 1)[1].split("?", 1)[0]


if __name__ == "__main__":
    # For benches by hand: `python tests/pgcluster.py [NAME ...]` starts a cluster (durable: fsync
    # and synchronous commits on), creates the databases named, prints each one's URL and runs
    # until its standard input closes (or Ctrl-C).
    import sys

    cluster = Cluster.start(durable=True)
    try:
        for name in sys.argv[1:] or ["memoir"]:
            cluster.admin(f'CREATE DATABASE "{name}"')
            print(cluster.url(name), flush=True)
        sys.stdin.read()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
