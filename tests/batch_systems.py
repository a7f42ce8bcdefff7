"""Real batch systems on loopback for the cluster-environment tests: SLURM (and PBS through
Torque's wrappers over it), an OpenSSH server, and a separate Dask scheduler with workers.

Each fixture is session-scoped, starts real daemons as child processes of the test run,
waits until they really answer (or raises :class:`BatchSystemError` with the daemons' log
tails), and stops and removes everything at teardown, so a test run leaves nothing behind.
Nothing is skipped: a machine without the Debian packages (see ``.ci/setup``) fails loudly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest

TEMPLATE = Path(__file__).with_name("slurm.conf.in")
SLURM_PORTS = (6817, 6818)  # SlurmctldPort and SlurmdPort in slurm.conf.in
LOOPBACK = "127.0.0.1"


class BatchSystemError(RuntimeError):
    """A daemon did not start (or stop) as it should; the message carries its log tail."""


# -- helpers --------------------------------------------------------------------------------
def find_program(name: str) -> str:
    """The absolute path of ``name``, also looking in sbin folders that a user's PATH may lack."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
    found = shutil.which(name, path=path)
    if found is None:
        raise BatchSystemError(
            f"`{name}` was not found: install the batch-system packages with .ci/setup "
            "(Debian: slurm-wlm munge slurm-wlm-torque openssh-server openssh-client)"
        )
    return found


def free_port() -> int:
    """A loopback TCP port that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def check_ports_free(ports: Sequence[int], who: str) -> None:
    """Fail clearly when a fixed port is taken (a stale daemon, or a real cluster on this host).

    SO_REUSEADDR makes the probe ignore TIME_WAIT leftovers of a previous run, so only a
    listening socket counts as busy.
    """
    for port in ports:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((LOOPBACK, port))
            except OSError as e:
                raise BatchSystemError(
                    f"{who} needs port {port} on {LOOPBACK}, but it is busy ({e}); "
                    f"stop whatever listens there (`ss -ltnp 'sport = :{port}'`)"
                ) from e


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, headed by its name, or a note that it is missing."""
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except FileNotFoundError:
        return f"--- {path.name}: (no file)"
    return "\n".join([f"--- {path.name}:", *text])


def start_process(
    args: Sequence[str], log: Path, *, env: dict[str, str] | None = None, **kwargs: object
) -> subprocess.Popen[bytes]:
    """Start a daemon in the foreground, its output appended to ``log``.

    A new session keeps a Ctrl-C in the terminal from killing the daemons before the
    teardown that needs them (``scancel`` needs slurmctld and munged).
    """
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            **kwargs,  # type: ignore[arg-type]
        )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """SIGTERM a daemon and everything it started, then SIGKILL whatever is still there."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    psutil.wait_procs(alive, timeout)


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    what: str,
    processes: dict[str, subprocess.Popen[bytes]],
    log_tail: Callable[[], str],
    interval: float = 0.1,
) -> None:
    """Poll ``ready`` until it holds; fail early, with the logs, if one of ``processes`` exits."""
    deadline = time.monotonic() + timeout
    while not ready():
        for name, process in processes.items():
            if process.poll() is not None:
                raise BatchSystemError(
                    f"{name} exited with code {process.returncode} while waiting for {what}\n"
                    f"{log_tail()}"
                )
        if time.monotonic() > deadline:
            raise BatchSystemError(f"timed out after {timeout} s waiting for {what}\n{log_tail()}")
        time.sleep(interval)


def run(args: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a short command and capture its text output (never raises on a failed command)."""
    return subprocess.run(list(args), capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]


# -- SLURM with munge -----------------------------------------------------------------------
@dataclasses.dataclass
class Slurm:
    """A running single-node SLURM: what tests and the engine need to submit to it."""

    conf: Path
    env: dict[str, str]
    root: Path
    partition: str = "debug"
    host: str = ""
    startup_seconds: float = 0.0
    logs: list[Path] = dataclasses.field(default_factory=list)

    def squeue(self) -> list[str]:
        """Ids of the jobs still in the queue (pending, running or completing)."""
        out = run(["squeue", "-h", "-o", "%i"], env={**os.environ, **self.env})
        if out.returncode != 0:
            raise BatchSystemError(f"squeue failed: {out.stderr.strip()}\n{self.log_tail()}")
        return out.stdout.split()

    def log_tail(self, lines: int = 30) -> str:
        """The end of munged's, slurmctld's and slurmd's logs, for error messages."""
        return "\n".join(tail(log, lines) for log in self.logs)


def node_resources() -> tuple[int, int]:
    """CPUs and RealMemory (MB) as ``slurmd -C`` sees them: the config must not claim more."""
    out = run([find_program("slurmd"), "-C"])
    fields = dict(re.findall(r"(\w+)=(\S+)", out.stdout))
    if out.returncode != 0 or "CPUs" not in fields or "RealMemory" not in fields:
        raise BatchSystemError(f"`slurmd -C` failed: {out.stdout}{out.stderr}")
    return int(fields["CPUs"]), int(fields["RealMemory"])


def start_munged(root: Path, stack: contextlib.ExitStack, slurm: Slurm) -> Path:
    """Start munged as user munge on a private socket, with a fresh key; return the socket.

    munged refuses key files and folders that others could write, and must run as munge,
    so everything under ``root/munge`` belongs to munge with modes 0700 (0755 for the socket's
    folder, which clients traverse) and the key is 0400.
    """
    try:
        munge_user = pwd.getpwnam("munge")
    except KeyError as e:
        raise BatchSystemError("no `munge` user: install Debian's munge package") from e
    munged = find_program("munged")
    base = root / "munge"
    dirs = {name: base / name for name in ("etc", "run", "log", "lib")}
    for name, path in dirs.items():
        path.mkdir(parents=True)
        path.chmod(0o755 if name == "run" else 0o700)
    key = dirs["etc"] / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    for path in (base, *dirs.values(), key):
        os.chown(path, munge_user.pw_uid, munge_user.pw_gid)
    sock = dirs["run"] / "munge.socket.2"
    log = root / "munged.out"  # in --foreground munged logs to stderr, not to --log-file
    slurm.logs.append(log)
    files = {"socket": sock, "key-file": key, "pid-file": dirs["run"] / "munged.pid"}
    files |= {"log-file": dirs["log"] / "munged.log", "seed-file": dirs["lib"] / "munged.seed"}
    process = start_process(
        [munged, "--foreground", *(f"--{flag}={path}" for flag, path in files.items())],
        log,
        user=munge_user.pw_uid,
        group=munge_user.pw_gid,
        extra_groups=[],
    )
    stack.callback(stop_process, process)
    munge = find_program("munge")
    wait_until(
        lambda: sock.exists() and run([munge, "-n", f"--socket={sock}"]).returncode == 0,
        timeout=30,
        what="munged to issue a credential",
        processes={"munged": process},
        log_tail=slurm.log_tail,
    )
    return sock


def write_slurm_conf(root: Path, host: str) -> Path:
    """Fill in the template for this machine and this session's scratch folder."""
    cpus, memory = node_resources()
    text = TEMPLATE.read_text()
    for name, value in {"ROOT": root, "HOST": host, "CPUS": cpus, "REAL_MEMORY": memory}.items():
        text = text.replace(f"@{name}@", str(value))
    leftover = re.findall(r"@[A-Z_]+@", text)
    assert not leftover, f"unfilled placeholders in {TEMPLATE}: {leftover}"
    conf = root / "slurm.conf"
    conf.write_text(text)
    return conf


def drain_queue(slurm: Slurm, timeout: float = 30) -> None:
    """Cancel every job and wait until the queue is empty, so no job step outlives slurmd.

    slurmstepd runs detached from slurmd: stopping slurmd while jobs run would leave their
    processes behind. A job that ignores SIGTERM gets SIGKILL after ``timeout``.
    """
    env = {**os.environ, **slurm.env}

    def jobs() -> list[str]:
        # lenient: when slurmctld never came up, the startup error is the one to report
        out = run(["squeue", "-h", "-o", "%i"], env=env)
        return out.stdout.split() if out.returncode == 0 else []

    for signal_args in ([], ["--signal=KILL", "--full"]):
        if not jobs():
            return
        run(["scancel", "--quiet", *signal_args, *jobs()], env=env)
        deadline = time.monotonic() + timeout
        while jobs() and time.monotonic() < deadline:
            time.sleep(0.2)
    if jobs():
        raise BatchSystemError(f"jobs survived scancel: {jobs()}\n{slurm.log_tail()}")


@contextlib.contextmanager
def slurm_cluster(timeout: float = 60) -> Iterator[Slurm]:
    """munged, slurmctld and slurmd for one node named after this host, partition ``debug``.

    The scratch root is made with :func:`tempfile.mkdtemp` (mode 0755) rather than pytest's
    tmp_path: pytest's base folder is 0700 root-only, which munged (running as munge) cannot
    traverse. /tmp itself is fine for munged: it is world-writable but sticky. The path also
    stays short, as a unix socket path must (108 bytes).
    """
    if os.geteuid() != 0:
        raise BatchSystemError("the slurm fixture must run as root (munged runs as munge)")
    check_ports_free(SLURM_PORTS, "SLURM (slurmctld, slurmd)")
    started = time.monotonic()
    root = Path(tempfile.mkdtemp(prefix="mole-slurm-"))
    root.chmod(0o755)
    host = socket.gethostname().split(".")[0]  # as `hostname -s`, what slurmd calls itself
    slurm = Slurm(conf=root / "slurm.conf", env={"SLURM_CONF": str(root / "slurm.conf")}, root=root)
    slurm.host = host
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, root, ignore_errors=True)
        start_munged(root, stack, slurm)
        write_slurm_conf(root, host)
        logs = root / "slurm" / "log"
        for name in ("state", "spool", "run", "log"):
            (root / "slurm" / name).mkdir(parents=True)
        env = {**os.environ, **slurm.env}
        daemons: dict[str, subprocess.Popen[bytes]] = {}
        for daemon, extra in (("slurmctld", []), ("slurmd", ["-N", host])):
            slurm.logs += [logs / f"{daemon}.log", logs / f"{daemon}.out"]
            daemons[daemon] = start_process(
                [find_program(daemon), "-D", "-f", str(slurm.conf), *extra],
                logs / f"{daemon}.out",
                env=env,
            )
            stack.callback(stop_process, daemons[daemon])
        # from here on, leave no job behind (runs before the daemons stop: LIFO)
        stack.callback(drain_queue, slurm)

        def idle() -> bool:
            out = run(["sinfo", "-h", "-o", "%t"], env=env)
            return out.returncode == 0 and out.stdout.split() == ["idle"]

        def log_tail() -> str:
            state = run(["sinfo", "-h", "-N", "-o", "%N %t %E"], env=env)
            return f"sinfo: {state.stdout.strip()} {state.stderr.strip()}\n{slurm.log_tail()}"

        wait_until(
            idle,
            timeout=timeout,
            what=f"node {host} to be idle in partition debug",
            processes=daemons,
            log_tail=log_tail,
        )
        slurm.startup_seconds = time.monotonic() - started
        yield slurm


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """A real single-node SLURM on loopback (ports 6817/6818), partition ``debug``.

    ``os.environ["SLURM_CONF"]`` points at it while the session runs, so that sbatch and
    friends, the engine in-process and any server subprocess all find it; it is restored at
    teardown, after every job is cancelled and the daemons and scratch folder are gone.
    """
    with slurm_cluster() as cluster:
        before = os.environ.get("SLURM_CONF")
        os.environ.update(cluster.env)
        try:
            yield cluster
        finally:
            if before is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = before


@pytest.fixture(scope="session")
def pbs(slurm: Slurm) -> Slurm:
    """PBS as Torque's commands (qsub, qstat, qdel from slurm-wlm-torque) over the same SLURM."""
    for program in ("qsub", "qstat", "qdel"):
        find_program(program)
    return slurm


# -- OpenSSH --------------------------------------------------------------------------------
@dataclasses.dataclass
class SSHServer:
    """A private sshd on loopback that accepts ``key`` (not ``wrong_key``) for ``user``."""

    host: str
    port: int
    user: str
    key: Path
    wrong_key: Path
    known_hosts: Path
    python: str
    log: Path

    def ssh_command(self, *command: str, key: Path | None = None) -> list[str]:
        """An ``ssh`` command line that trusts only this server's host key and uses one key."""
        options = {
            "UserKnownHostsFile": self.known_hosts,
            "GlobalKnownHostsFile": "/dev/null",
            "StrictHostKeyChecking": "yes",
            "IdentitiesOnly": "yes",
            "BatchMode": "yes",
            "ConnectTimeout": 5,
        }
        flags = [arg for name, value in options.items() for arg in ("-o", f"{name}={value}")]
        target = f"{self.user}@{self.host}"
        identity = ["-i", str(key or self.key), "-p", str(self.port)]
        return ["ssh", "-F", "none", *identity, *flags, target, *command]

    def log_tail(self, lines: int = 30) -> str:
        return tail(self.log, lines)


SSHD_CONFIG = """\
ListenAddress {host}
Port {port}
HostKey {host_key}
AuthorizedKeysFile {authorized}
PidFile {folder}/sshd.pid
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
LogLevel VERBOSE
"""


def keygen(path: Path, comment: str) -> Path:
    """An ed25519 key pair without passphrase; returns the private key's path."""
    out = run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    if out.returncode != 0:
        raise BatchSystemError(f"ssh-keygen failed: {out.stdout}{out.stderr}")
    return path


def check_sshd_config(sshd: str, config: Path) -> None:
    """``sshd -t``; creates the privilege separation folder (/run/sshd on Debian) it asks for.

    The folder's path is compiled into sshd, so it is read from sshd's own complaint.
    """
    out = run([sshd, "-t", "-f", str(config)])
    missing = re.search(r"Missing privilege separation directory: (\S+)", out.stderr)
    if missing:
        Path(missing.group(1)).mkdir(mode=0o755, parents=True, exist_ok=True)
        out = run([sshd, "-t", "-f", str(config)])
    if out.returncode != 0:
        raise BatchSystemError(f"sshd rejects its config {config}:\n{out.stderr}")


async def asyncssh_run(server: SSHServer, key: Path, command: str) -> str:
    """Run ``command`` through asyncssh, as Dask's SSHCluster connects, and return its stdout."""
    import asyncssh

    async with asyncssh.connect(
        server.host,
        port=server.port,
        username=server.user,
        client_keys=[str(key)],
        known_hosts=str(server.known_hosts),
        agent_path=None,
    ) as connection:
        result = await connection.run(command, check=True, timeout=20)
        return str(result.stdout)


def in_thread(coroutine_function: Callable[[], object]) -> object:
    """``asyncio.run`` in a thread of its own: safe even if this thread runs an event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(coroutine_function())).result()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHServer]:
    """A real OpenSSH server on 127.0.0.1 and a free port, with its own host key.

    What worked on Debian 12 (OpenSSH 9.2, asyncssh 2.24, distributed 2026.8):
    sshd_config with ``ListenAddress 127.0.0.1``, ``HostKey`` (a generated ed25519 key),
    ``AuthorizedKeysFile`` (absolute path to the test's file), ``StrictModes no`` (the files
    live under pytest's tmp folders), ``PubkeyAuthentication yes``, ``PasswordAuthentication
    no``, ``KbdInteractiveAuthentication no``, ``PermitRootLogin prohibit-password``,
    ``UsePAM no``, ``PidFile`` in the scratch folder; started as ``sshd -D -e -f config``.
    ``known_hosts`` holds ``[127.0.0.1]:PORT ssh-ed25519 ...``, which both OpenSSH's client
    and asyncssh (``known_hosts=str(path)``) match, so no test needs ``known_hosts=None``.
    Clients: ``ssh -i key -p PORT -o UserKnownHostsFile=... -o IdentitiesOnly=yes``, and
    ``SSHCluster([host, host], connect_options={"port": port, "username": user,
    "client_keys": [str(key)], "known_hosts": str(known_hosts)}, remote_python=python,
    scheduler_options={"host": host, "port": 0, "dashboard_address": ":0",
    "local_directory": ...}, worker_options={"host": host, "nthreads": 1, "local_directory":
    ...})``. Without ``host``, the remote scheduler and worker bind to the default route's
    address (not loopback); without ``local_directory``, they write /tmp/dask-scratch-space.
    """
    folder = tmp_path_factory.mktemp("sshd")
    user = pwd.getpwuid(os.getuid()).pw_name
    host_key = keygen(folder / "ssh_host_ed25519_key", "mole-test-host")
    key = keygen(folder / "id_ed25519", "mole-test-client")
    wrong_key = keygen(folder / "id_ed25519_wrong", "mole-test-not-authorized")
    authorized = folder / "authorized_keys"
    authorized.write_text(key.with_suffix(".pub").read_text())
    authorized.chmod(0o600)
    port = free_port()
    known_hosts = folder / "known_hosts"
    algorithm, public = host_key.with_suffix(".pub").read_text().split()[:2]
    known_hosts.write_text(f"[{LOOPBACK}]:{port} {algorithm} {public}\n")
    config = folder / "sshd_config"
    config.write_text(
        SSHD_CONFIG.format(
            host=LOOPBACK, port=port, host_key=host_key, authorized=authorized, folder=folder
        )
    )
    sshd_program = find_program("sshd")  # sshd re-executes itself: it needs an absolute path
    check_sshd_config(sshd_program, config)
    log = folder / "sshd.log"
    server = SSHServer(LOOPBACK, port, user, key, wrong_key, known_hosts, sys.executable, log)
    process = start_process([sshd_program, "-D", "-e", "-f", str(config)], server.log)
    try:
        wait_until(
            lambda: run(server.ssh_command("true"), timeout=20).returncode == 0,
            timeout=30,
            what=f"`ssh -p {port} {user}@{LOOPBACK} true` to succeed",
            processes={"sshd": process},
            log_tail=server.log_tail,
            interval=0.2,
        )
        try:
            out = in_thread(lambda: asyncssh_run(server, key, "echo asyncssh-ok"))
        except Exception as e:
            raise BatchSystemError(f"asyncssh cannot log in: {e!r}\n{server.log_tail()}") from e
        if str(out).strip() != "asyncssh-ok":
            raise BatchSystemError(f"asyncssh ran `echo` and got {out!r}\n{server.log_tail()}")
        yield server
    finally:
        stop_process(process)  # and the session processes it forked, dask's included


# -- a Dask scheduler of the user's own -----------------------------------------------------
@dataclasses.dataclass
class DaskScheduler:
    """A ``dask scheduler`` and a ``dask worker`` (2 processes x 1 thread) on loopback."""

    address: str
    folder: Path
    n_workers: int = 2

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(
            tail(self.folder / name, lines) for name in ("scheduler.log", "worker.log")
        )


def dask_cli(name: str) -> list[str]:
    """``dask scheduler`` / ``dask worker`` run by this venv's Python, whatever PATH says."""
    return [sys.executable, "-m", f"distributed.cli.dask_{name}"]


@pytest.fixture(scope="session")
def dask_scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaskScheduler]:
    """A Dask cluster started from the command line, as a user would, in separate processes.

    It is not the engine's: tests can check that the engine leaves it running and usable.
    """
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask-scheduler")
    port = free_port()
    cluster = DaskScheduler(address=f"tcp://{LOOPBACK}:{port}", folder=folder)
    env = {**os.environ, "DASK_TEMPORARY_DIRECTORY": str(folder)}
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        processes["dask scheduler"] = start_process(
            [*dask_cli("scheduler"), f"--host={LOOPBACK}", f"--port={port}", "--no-dashboard"],
            folder / "scheduler.log",
            env=env,
            cwd=folder,
        )
        worker_folder = folder / "worker"
        worker_folder.mkdir()
        worker_options = [f"--nworkers={cluster.n_workers}", "--nthreads=1", "--no-dashboard"]
        worker_options.append(f"--local-directory={worker_folder}")
        processes["dask worker"] = start_process(
            [*dask_cli("worker"), cluster.address, f"--host={LOOPBACK}", *worker_options],
            folder / "worker.log",
            env=env,
            cwd=worker_folder,
        )

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex((LOOPBACK, port)) == 0

        wait_until(
            listening,
            timeout=60,
            what=f"the scheduler to listen on {cluster.address}",
            processes=processes,
            log_tail=cluster.log_tail,
        )
        with Client(cluster.address, timeout=30) as client:

            def all_workers() -> bool:
                return len(client.scheduler_info()["workers"]) >= cluster.n_workers

            wait_until(
                all_workers,
                timeout=60,
                what=f"{cluster.n_workers} workers on {cluster.address}",
                processes=processes,
                log_tail=cluster.log_tail,
                interval=0.2,
            )
        yield cluster
    finally:
        for name in ("dask worker", "dask scheduler"):  # workers first: no reconnect attempts
            if name in processes:
                stop_process(processes[name], timeout=20)
