"""The test cluster: ``DATABASE_URL`` when set, else a private throwaway PostgreSQL started
here with initdb/pg_ctl (as the ``postgres`` or ``nobody`` user when running as root), on
127.0.0.1 and a free port, removed at the end of the session.

libpgbroker comes from ``PGBROKER_LIB``, else the workspace's ``target/debug`` (build it with
``cargo build -p pgbroker-ffi``).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Iterator, Optional

import pytest

_ROOT = Path(__file__).resolve().parents[2]
if not os.environ.get("PGBROKER_LIB"):
    for profile in ("debug", "release"):
        candidate = _ROOT / "target" / profile / "libpgbroker.so"
        if candidate.is_file():
            os.environ["PGBROKER_LIB"] = str(candidate)
            break

import pgbroker  # noqa: E402  (after PGBROKER_LIB is set)


def _bin_dir() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        if out.returncode == 0 and (Path(out.stdout.strip()) / "initdb").is_file():
            return Path(out.stdout.strip())
    except FileNotFoundError:
        pass
    dirs = glob.glob("/usr/lib/postgresql/*/bin")
    dirs.sort(key=lambda d: [int(x) for x in Path(d).parent.name.split(".") if x.isdigit()])
    for d in reversed(dirs):
        if (Path(d) / "initdb").is_file():
            return Path(d)
    raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempPostgres:
    def __init__(self) -> None:
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="pgbroker-py-"))
        self.data = self.root / "data"
        self.user: Optional[pwd.struct_passwd] = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            assert self.user is not None, "running as root without a postgres/nobody user"
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-E", "UTF8", "--no-locale",
                  "--no-sync", "--username=postgres")
        for attempt in range(5):
            self.port = _free_port()
            options = (f"-c listen_addresses=127.0.0.1 -c port={self.port} "
                       "-c unix_socket_directories='' -c fsync=off -c synchronous_commit=off "
                       "-c max_connections=200")
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"),
                          "-o", options, "-w", "-t", "60", "start")
                return
            except RuntimeError:
                if attempt == 4:
                    raise

    def _run(self, program: str, *args: str) -> None:
        kwargs = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid}
        env = {k: v for k, v in os.environ.items() if k not in ("PGDATA", "PGPORT", "PGHOST")}
        out = subprocess.run([str(self.bin / program), *args], capture_output=True, text=True,
                             cwd=self.root, env=env, **kwargs)
        if out.returncode != 0:
            log = ""
            if (self.root / "server.log").exists():
                log = (self.root / "server.log").read_text()[-2000:]
            raise RuntimeError(f"{program} failed: {out.stdout}{out.stderr}\n{log}")

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL", "").strip()
    if url:
        yield url
        return
    pg = TempPostgres()
    try:
        with pgbroker.Broker(pg.url) as b:
            b.install()
        yield pg.url
    finally:
        pg.stop()


@pytest.fixture
def broker(database_url: str) -> Iterator[pgbroker.Broker]:
    with pgbroker.Broker(database_url) as b:
        if os.environ.get("DATABASE_URL"):
            b.install()
        yield b


_counter = itertools.count()


@pytest.fixture
def name() -> str:
    """A name no other test uses (queues, topics, subscriptions, channels share one database)."""
    return f"py{next(_counter)}_{uuid.uuid4().hex[:8]}"


@pytest.fixture
def unreachable_url() -> str:
    return f"postgres://nobody@127.0.0.1:{_free_port()}/nothing?connect_timeout=5"
