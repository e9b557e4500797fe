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


class DatabasePool:
    """Databases with memoir's schema for tests, reused: creating one from a template costs 50 to
    300 ms (more on a loaded machine), emptying one about 2 ms. A database is emptied when it is
    taken again; one whose schema a test changed (a table more, another version) is dropped and
    replaced by a new copy of the template."""

    # Emptied children first; identity columns restarted, so ids begin at 1 as in a new database.
    TABLES = (
        "oauth_spent_refresh", "oauth_grants", "oauth_auth_codes", "oauth_login_codes", "oauth_clients", "tokens",
        "hook_recalls", "hook_sessions", "embeddings", "keyword_postings", "keyword_docs", "keyword_users",
        "history", "memories", "fts_pending",  # last: deleting memories queues their removal from the index
    )
    IDENTITIES = (("memories", "id"), ("history", "event_id"), ("fts_pending", "seq"), ("keyword_users", "uid"))

    def __init__(self, cluster: Cluster) -> None:
        from memoir.memory.backends.postgres import migrate
        from memoir.memory.postgres import connect_sync

        self.cluster = cluster
        url = cluster.create_database()
        db = connect_sync(url)
        try:
            migrate(db)
        finally:
            db.close()
        self.template = database_name(url)
        with psycopg.connect(url, autocommit=True) as conn:
            self.schema = self._schema(conn)
        self.free: list[str] = []

    @staticmethod
    def _schema(conn: psycopg.Connection) -> tuple:
        tables = conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1").fetchall()
        functions = conn.execute(
            "SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'public' ORDER BY 1"
        ).fetchall()
        version = conn.execute("SELECT version FROM schema_version").fetchall()
        return tuple(tables), tuple(functions), tuple(version)

    def take(self) -> str:
        while self.free:
            url = self.free.pop()
            if self._emptied(url):
                return url
            self.cluster.drop_database(url)
        return self.cluster.create_database(template=self.template)

    def give_back(self, urls: list[str]) -> None:
        self.free.extend(urls)

    def _emptied(self, url: str) -> bool:
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                if self._schema(conn) != self.schema:
                    return False
                with conn.transaction():
                    for table in self.TABLES:
                        conn.execute(f"DELETE FROM {table}")
                    for table, column in self.IDENTITIES:
                        conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} RESTART")
                    conn.execute("UPDATE memoir_changes SET version = 0")
        except psycopg.Error:
            return False
        return True


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
