"""A real PostgreSQL server for the tests: `initdb` into a temporary folder, a loopback port, stopped at the end.

Debian's server binaries (`make postgresql` installs them). PostgreSQL refuses to run as root, so
as root every server command runs as the `postgres` user, on a folder that user owns. The bot's
role `taleweaver` logs in with a password (scram-sha-256 over TCP), as it would in production;
`create_database` gives each test a fresh database of its own.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import psutil

from tests.serve_cluster import free_port

ROLE = "taleweaver"
START_TIMEOUT_S = 60


def server_binaries() -> Path:
    """The newest installed PostgreSQL's bin folder (Debian keeps the server out of PATH)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError("PostgreSQL's server is not installed: run `make postgresql` (Debian's postgresql package).")
    return Path(found[-1]).parent


@dataclass
class PostgresServer:
    """One server; `url(name)` is what `database.url` would hold (no password: that comes from the environment)."""

    folder: Path
    port: int
    durable: bool = True
    """False: no fsync (quick to create databases in); the crash tests start a durable server of their own."""
    password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    """The `taleweaver` role's password."""
    superuser_password: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    bin_dir: Path = field(default_factory=server_binaries)
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def url(self, database: str) -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def _run(self, *command: str) -> None:
        as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_owner, *command], check=True, capture_output=True, timeout=START_TIMEOUT_S)

    def init(self) -> None:
        pwfile = self.folder / "superuser-password"
        pwfile.write_text(self.superuser_password)
        self._run(
            str(self.bin_dir / "initdb"),
            "--pgdata",
            str(self.data_dir),
            "--username=postgres",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
            "--encoding=UTF8",
            "--no-instructions",
        )
        pwfile.unlink()

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", options, "-l", str(self.log), "-w", "start"
        )

    def stop(self, mode: str = "fast") -> None:
        """`fast`: roll back, checkpoint, stop; `immediate`: stop without the checkpoint (recovery on next start)."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop")

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def processes(self) -> list[psutil.Process]:
        """The postmaster and every backend it started (none when it is not running)."""
        try:
            postmaster = psutil.Process(int((self.data_dir / "postmaster.pid").read_text().split()[0]))
            return [postmaster, *postmaster.children(recursive=True)]
        except (FileNotFoundError, psutil.NoSuchProcess):
            return []

    def kill(self) -> None:
        """SIGKILL the whole server, as a crash of its machine's process would; `start` recovers it from its WAL."""
        processes = self.processes()
        for process in processes:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)
        psutil.wait_procs(processes, timeout=10)

    def freeze(self) -> list[psutil.Process]:
        """SIGSTOP the server: connections stay open and nothing answers, as with a hung host."""
        processes = self.processes()
        for process in processes:
            process.suspend()
        return processes

    @staticmethod
    def thaw(processes: list[psutil.Process]) -> None:
        for process in processes:
            process.resume()

    def create_role(self) -> None:
        self._psql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{self.password}'")

    def create_database(self) -> str:
        """A new, empty database owned by the bot's role; its name."""
        name = f"taleweaver_{next(self._names)}"
        # Without fsync, copying the template's files beats writing them all to the WAL.
        strategy = "WAL_LOG" if self.durable else "FILE_COPY"
        self._psql(f"CREATE DATABASE {name} OWNER {ROLE} STRATEGY {strategy}")
        return name

    def drop_database(self, name: str) -> None:
        self._psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _psql(self, sql: str) -> None:
        """One statement as the superuser, over the server's own socket (trusted)."""
        self._run(str(self.bin_dir / "psql"), "-h", str(self.folder), "-p", str(self.port), "-U", "postgres", "-c", sql)

    async def run(self, url: str, sql: str) -> None:
        """One statement as the bot's role on the database at `url`."""
        connection = await asyncpg.connect(url, password=self.password)
        try:
            await connection.execute(sql)
        finally:
            await connection.close()


def start_server(*, durable: bool = True) -> PostgresServer:
    """A new server in a new folder, started, with the bot's role; `stop_server` removes it all."""
    folder = Path(tempfile.mkdtemp(prefix="taleweaver-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    server = PostgresServer(folder, free_port(), durable=durable)
    try:
        server.init()
        server.start()
        server.create_role()
    except BaseException:
        stop_server(server)
        raise
    return server


def stop_server(server: PostgresServer) -> None:
    """Stop the server and remove its folder; its data is thrown away, so no shutdown checkpoint."""
    if (server.data_dir / "postmaster.pid").exists():
        try:
            server.stop("immediate")
        except subprocess.SubprocessError:
            server.kill()
    deadline = time.monotonic() + 10
    while (server.data_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    shutil.rmtree(server.folder, ignore_errors=True)
