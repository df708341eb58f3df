"""A throwaway PostgreSQL server for tests and load runs: nothing outside a temp dir is touched.

`initdb` into a fresh temp dir, `pg_ctl start` on a free loopback port with the unix socket in
the same dir, a random password for TCP logins; `stop()` ends the server and deletes the dir.
PostgreSQL refuses to run as root, so under root the server runs as the `postgres` user that
Debian's package creates (else `nobody`), which gets the temp dir.

    with ThrowawayPostgres() as pg:
        url = pg.create_database("votes")     # postgresql+psycopg://studio:...@127.0.0.1:PORT/votes

    python -m scripts.throwaway_postgres      # start one, print its URL, stop on Ctrl-C

The server binaries come from Debian's `postgresql` package (`scripts/setup.sh --test`
installs it); `server_bindir()` is None without them.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

SUPERUSER = "studio"
HOST = "127.0.0.1"
# Settings for a server whose data is thrown away: no fsync (a crash of the machine loses the
# cluster, which is deleted anyway). `durable=True` keeps PostgreSQL's defaults, for figures
# that should match a real server's.
FAST_SETTINGS = {"fsync": "off", "full_page_writes": "off", "synchronous_commit": "off"}


def server_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: on PATH, else Debian's
    /usr/lib/postgresql/<version>/bin (newest first); None when the server is not installed."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name)
                      if Path(p).parent.name.isdigit() else 0, reverse=True)
    candidates += [Path(p) for p in versions]
    for bindir in candidates:
        if all(os.access(bindir / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _server_account() -> pwd.struct_passwd | None:
    """The account the server runs as: None (this process's own) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' account exists to run "
                       "PostgreSQL as (it refuses to run as root)")


class ThrowawayPostgres:
    def __init__(self, durable: bool = False, bindir: Path | None = None) -> None:
        self.bindir = bindir or server_bindir()
        if self.bindir is None:
            raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; "
                                    "install Debian's postgresql package (scripts/setup.sh --test does)")
        self.durable = durable
        self.dir: Path | None = None
        self.port = 0
        self.password = secrets.token_hex(16)
        self.start_s = 0.0
        self._account = _server_account()

    # --- lifecycle ---
    def start(self) -> "ThrowawayPostgres":
        t0 = time.perf_counter()
        self.dir = Path(tempfile.mkdtemp(prefix="studio-pg-"))
        if self._account is not None:
            os.chown(self.dir, self._account.pw_uid, self._account.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._account is not None:
            os.chown(pwfile, self._account.pw_uid, self._account.pw_gid)
        try:
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, f"--pwfile={pwfile}",
                      "--auth-local=trust", "--auth-host=scram-sha-256", "--encoding=UTF8", "--no-locale",
                      "--no-sync", "--no-instructions")
            pwfile.unlink()
            settings = {"listen_addresses": HOST, "unix_socket_directories": str(self.dir),
                        "unix_socket_permissions": "0700", **({} if self.durable else FAST_SETTINGS)}
            for attempt in range(3):  # the free port can be taken between the probe and the bind
                self.port = _free_port()
                options = f"-p {self.port} " + " ".join(f"-c {k}={v}" for k, v in settings.items())
                try:
                    self._run("pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w",
                              "-t", "60", "-o", options, "start")
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise
        self.start_s = time.perf_counter() - t0
        return self

    def stop(self) -> None:
        """Stop the server at once (its data is thrown away) and delete the temp dir."""
        if self.dir is None:
            return
        if (self.data / "postmaster.pid").exists():
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass  # already gone; the dir is removed either way
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def __enter__(self) -> "ThrowawayPostgres":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- databases ---
    @property
    def data(self) -> Path:
        return self.dir / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@{HOST}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self._admin(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any connection still open to it."""
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host=HOST, port=self.port, user=SUPERUSER, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(sql)

    def _run(self, tool: str, *args: str) -> None:
        account = {}
        if self._account is not None:
            account = {"user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}
        proc = subprocess.run([str(self.bindir / tool), *args], cwd=self.dir, capture_output=True, text=True,
                              timeout=120, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}, **account)
        if proc.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}\n{tail}")


def main() -> None:
    with ThrowawayPostgres(durable=True) as pg:
        print(f"started in {pg.start_s:.2f} s; STUDIO_DB_URL={pg.create_database('studio')}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
