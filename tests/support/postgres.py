"""A private PostgreSQL 15 cluster for the test session, on a free loopback port, ended at teardown.

Started from Debian's binaries (``apt-get install -y postgresql``) with initdb + pg_ctl, as user
``postgres`` when the tests run as root. Without them the tests that need it fail under CI=true and
are skipped elsewhere. For tests durability is switched off (fsync, synchronous_commit): a crashed
*server* is not what they are about, and it keeps each test database cheap. Autovacuum and background
workers are off, so the server starts no process on its own during a test (the leak check would see it).
"""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from actors.runtime.processes import children_of, reap_children
from cloud.loopback import free_port
from tests.support.polling import wait_for
from tests.support.services import missing

PG_BIN = pathlib.Path("/usr/lib/postgresql/15/bin")
SERVER_OPTIONS = "-c listen_addresses=127.0.0.1 -c autovacuum=off -c max_worker_processes=0 -c max_connections=200"
NOT_DURABLE = "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class PostgresCluster:
    """``durable`` keeps PostgreSQL's crash safety (fsync): slower, for benchmarks that mean it."""

    def __init__(self, workdir: str, durable: bool = False):
        self.workdir = pathlib.Path(workdir)
        self.options = SERVER_OPTIONS if durable else f"{SERVER_OPTIONS} {NOT_DURABLE}"
        self.datadir = self.workdir / "data"
        self.port = free_port()
        self._user = "postgres" if os.geteuid() == 0 else None  # initdb refuses to run as root

    def start(self) -> None:
        if self._user is not None:
            shutil.chown(self.workdir, self._user)
        self._run(PG_BIN / "initdb", "-D", self.datadir, "-U", "postgres", "--auth=trust", "--no-sync",
                  "--no-locale", "-E", "UTF8")
        self._run(PG_BIN / "pg_ctl", "-D", self.datadir, "-l", self.workdir / "server.log", "-w", "-t", "30",
                  "-o", f"{self.options} -p {self.port} -k {self.workdir}", "start")
        self._wait_until_settled()

    def stop(self) -> None:
        self._run(PG_BIN / "pg_ctl", "-D", self.datadir, "-m", "fast", "-w", "-t", "30", "stop")
        reap_children()  # the postmaster was reparented to the test session (a subreaper)

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        if (self.datadir / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        self.execute(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def execute(self, sql: str, database: str = "postgres") -> None:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=database)
        try:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(sql)
        finally:
            connection.close()

    def _run(self, *command) -> None:
        result = subprocess.run([str(part) for part in command], user=self._user, capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            log = self.workdir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{pathlib.Path(command[0]).name} failed: {result.stderr.strip()}\n{tail}")

    def _wait_until_settled(self) -> None:
        """Wait until the postmaster's helper processes are all up, so none appears during a test."""
        postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        seen, stable_since = None, time.monotonic()

        def settled() -> bool:
            nonlocal seen, stable_since
            now = set(children_of(postmaster))
            if now != seen:
                seen, stable_since = now, time.monotonic()
            return time.monotonic() - stable_since > 0.3

        wait_for(settled, timeout=10, what="the PostgreSQL helper processes")


_cluster: PostgresCluster | None = None  # one per session, though each test module imports the fixture


def _installed() -> bool:
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return False
    return (PG_BIN / "initdb").exists()


@pytest.fixture(scope="session")
def postgres_cluster():
    """The session's cluster, or None when PostgreSQL is not installed.

    Session-scoped and requested statically (``store_url`` does), so it starts before a test's leak
    check takes its census: the server's processes are never taken for the test's.
    """
    global _cluster
    if _cluster is None and _installed():
        cluster = PostgresCluster(tempfile.mkdtemp(prefix="fleetlet-pg-"))
        try:
            cluster.start()
        except BaseException:
            cluster.remove()
            raise
        _cluster = cluster
    yield _cluster
    if _cluster is not None:  # the first of the modules' fixtures to end stops it
        _cluster.remove()
        _cluster = None


@pytest.fixture
def postgres(postgres_cluster) -> PostgresCluster:
    """The session's cluster; without PostgreSQL: fails under CI=true, skips elsewhere."""
    return required(postgres_cluster)


def required(cluster: PostgresCluster | None) -> PostgresCluster:
    if cluster is None:
        missing("PostgreSQL 15 and psycopg2 (apt-get install -y postgresql; pip install psycopg2-binary)")
    return cluster

