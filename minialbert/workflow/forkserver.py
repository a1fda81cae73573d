"""A pre-imported fork server for the workflow's many short jobs (fine-tuning, efficiency).

Why: a demo fine-tuning job spends ~4 s of its ~4.6 s importing torch, transformers and
datasets before it does anything. The server imports them once; each job is then a fork of it,
which starts with everything imported. The job still runs exactly what it runs in-process (the
runner its client names, e.g. "minialbert.workflow.jobs:finetune"), in the client's working
directory, environment and log files. The server knows no rule: the rules whose jobs come here
say so in their scripts (workflow_scripts/, through `minialbert.workflow.launch`).

Protocol, one Unix stream connection per job: the client sends a 4-byte length and a JSON
request (its working directory, environment, code fingerprint, the target runner as
"module:function" and the job), its stdin, stdout and stderr travelling with the first bytes
(SCM_RIGHTS); the job's process imports the target and calls it on the job. The server answers
with JSON lines: `{"stale": true}` (it runs other code than the client's: it stops listening and
exits once its jobs end), or `{"pid": N}` when the job's process is forked, then
`{"status": S}`, the job's exit status (128 + signal number for a signal death, like a shell).

Lifetime: one server per working directory, Python and package, started detached by the first
job that finds none (under a lock, so two jobs starting together start one server). It exits
after IDLE_SECONDS without jobs, and kills its jobs if it is terminated. A job whose client
goes away (Snakemake killed it) is terminated. The server never runs a torch op, so no
OpenMP/BLAS thread pool exists when it forks.

Linux only (macOS system libraries are not fork-safe once loaded); `MINIALBERT_FORKSERVER=0`
turns it off; never under SLURM: there a packed allocation's runs (rules/finetune.smk) each pay
the imports, seconds beside a GPU run's queue wait and CUDA start-up that packing already saves,
and a server on a shared node could serve another allocation's job outside its cgroup and GPUs.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib
import json
import os
import pkgutil
import selectors
import signal
import site
import socket
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator, NamedTuple

IDLE_SECONDS = 120
START_TIMEOUT = 120  # seconds a client waits for the server it started to finish importing
REQUEST_TIMEOUT = 10  # seconds the server waits for a connected client's request
SWITCH = "MINIALBERT_FORKSERVER"  # "0": every job runs in its own process
DIR_VARIABLE = "MINIALBERT_FORKSERVER_DIR"  # where sockets, locks and pid files go
# what a fine-tuning or efficiency job imports; imported by the server, never by a client
PRELOAD = (
    "torch",
    "datasets",
    "transformers.modeling_utils",
    "transformers.models.auto.modeling_auto",
    "transformers.models.auto.tokenization_auto",
    "transformers.models.bert.modeling_bert",
    "transformers.models.bert.tokenization_bert",
    "transformers.models.distilbert.modeling_distilbert",
    "transformers.models.albert.modeling_albert",
    "transformers.optimization",
    "transformers.data.data_collator",
    "minialbert.modeling",
    "minialbert.finetune",
    "minialbert.report",
    "minialbert.workflow.jobs",
)
_HEADER = struct.Struct("!I")
MAX_SOCKET_PATH = 100  # bytes; sun_path holds 108 on Linux, 104 on BSDs


class ForkServerError(Exception):
    """The server cannot take this job; nothing of the job has run."""


def enabled() -> bool:
    """Whether this process's jobs may go through the server."""
    return (os.environ.get(SWITCH, "1") != "0" and "SLURM_JOB_ID" not in os.environ
            and sys.platform.startswith("linux"))


# --------------------------------------------------------------------------------------------
# Where the server lives and which code it runs
# --------------------------------------------------------------------------------------------
def fingerprint() -> str:
    """A hash of the code a job would run: the Python, the minialbert package's files (path,
    mtime, size) and the site-packages dirs' mtimes (pip install or upgrade changes them)."""
    import minialbert

    package = Path(minialbert.__file__).resolve().parent
    files = []
    for path in sorted(package.rglob("*.py")):
        st = path.stat()
        files.append((str(path.relative_to(package)), st.st_mtime_ns, st.st_size))
    sites = [(p, os.stat(p).st_mtime_ns) for p in site.getsitepackages() if os.path.isdir(p)]
    return _digest([sys.executable, sys.version, str(package), files, sites])


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()


class Paths(NamedTuple):
    """A server's socket, the lock held to start it, and its pid file."""

    socket: Path
    lock: Path
    pid: Path

    @classmethod
    def for_workdir(cls, workdir: str) -> "Paths":
        """One server per working directory, Python and package. Unix socket paths are limited
        to ~107 bytes, so the files go in a short private dir, named by a hash."""
        import minialbert

        base = Path(os.environ.get(DIR_VARIABLE) or f"/tmp/minialbert-{os.getuid()}")
        _private_dir(base)
        name = _digest([os.path.realpath(workdir), sys.executable, minialbert.__file__])[:16]
        if len(str(base / f"{name}.sock")) > MAX_SOCKET_PATH:
            raise ForkServerError(f"{base}: too long a dir for a Unix socket; set {DIR_VARIABLE} to a shorter one")
        return cls(base / f"{name}.sock", _lock_path(base / f"{name}.sock"), base / f"{name}.pid")


def _lock_path(socket_path: Path) -> Path:
    """Held while a server is started or its socket file removed."""
    return socket_path.with_suffix(".lock")


def _private_dir(path: Path) -> None:
    """Create `path` (0700) or check that it is ours and private: another user's socket there
    could run our jobs with their code."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ForkServerError(f"{path} is not a private dir of this user (mode {st.st_mode & 0o777:o})")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _stat_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


# --------------------------------------------------------------------------------------------
# Client: the workflow's job entry point
# --------------------------------------------------------------------------------------------
def submit(target: str, job: Any) -> int | None:
    """Run `target(job)` ("module:function", resolved by pkgutil.resolve_name; `job` a
    `snakemake` object, of which the job's process gets `describe`'s parts) in a fork of the
    server for this working directory, starting one if there is none; returns its exit status.
    None when the server cannot take it: nothing ran, the caller runs the job itself (and this
    says why in the job's log)."""
    try:
        paths = Paths.for_workdir(os.getcwd())
        request = {"cwd": os.getcwd(), "env": dict(os.environ), "fingerprint": fingerprint(), "target": target,
                   "job": describe(job)}
        for _ in range(2):  # a stale server stops listening: the second try starts a fresh one
            status = _submit(_connect(paths.socket) or _start_server(paths), request)
            if status is not None:
                return status
        raise ForkServerError("a freshly started server runs other code than this job")
    except (OSError, ValueError, ForkServerError) as e:
        print(f"[workflow] fork server unavailable ({type(e).__name__}: {e}); running in this process", flush=True)
        return None


def describe(job: Any) -> dict:
    """The parts of a `snakemake` object that a job run by the server gets, as JSON data."""
    return {"rule": job.rule, "output": list(job.output), "threads": int(job.threads),
            "job_config": job.params.job_config}


def job_from_description(description: dict) -> SimpleNamespace:
    """`describe`'s data back as an object that a runner takes like a `snakemake` object."""
    return SimpleNamespace(rule=description["rule"], output=description["output"], threads=description["threads"],
                           params=SimpleNamespace(job_config=description["job_config"]))


def _connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    return sock


def _start_server(paths: Paths) -> socket.socket:
    """Start a detached server and wait until it listens (it binds after its imports)."""
    with _locked(paths.lock):
        sock = _connect(paths.socket)  # another job may have started it meanwhile
        if sock is not None:
            return sock
        paths.socket.unlink(missing_ok=True)  # nobody listens: a killed server's leftover
        log_path = Path("logs") / "forkserver.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        # the server computes nothing; BLAS pools that start at import must not exist when it forks
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
        with open(log_path, "ab") as log_file:
            server = subprocess.Popen(
                [sys.executable, "-m", "minialbert.workflow.forkserver", "--socket", str(paths.socket),
                 "--pid-file", str(paths.pid), "--idle", str(IDLE_SECONDS)],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                start_new_session=True)  # not in Snakemake's process group, no controlling terminal
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise ForkServerError(f"the server exited with status {server.returncode} (see {log_path})")
            sock = _connect(paths.socket)
            if sock is not None:
                return sock
            time.sleep(0.05)
        server.kill()
        raise ForkServerError(f"the server did not listen within {START_TIMEOUT} s (see {log_path})")


def _submit(sock: socket.socket, request: dict) -> int | None:
    """Send the request with this process's stdin/stdout/stderr; None if the server is stale.
    Once the job's process exists, a lost server is the job's failure, not a reason to rerun it."""
    with sock, sock.makefile("rb") as replies:
        body = json.dumps(request).encode()
        sys.stdout.flush()
        sys.stderr.flush()
        socket.send_fds(sock, [_HEADER.pack(len(body))], [0, 1, 2])
        sock.sendall(body)
        reply = json.loads(replies.readline() or b"null")
        if reply is None:
            raise ForkServerError("the server closed the connection")
        if reply.get("stale"):
            return None
        if "pid" not in reply:
            raise ForkServerError(reply.get("error") or f"unexpected reply {reply}")
        pid = reply["pid"]
        print(f"[workflow] running in pid {pid}, forked by the fork server ({SWITCH}=0 turns it off)",
              flush=True)
        try:
            line = replies.readline()
        except OSError:
            line = b""
        if not line:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGTERM)
            print("[workflow] lost the fork server while the job ran", file=sys.stderr, flush=True)
            return 1
        return int(json.loads(line)["status"])


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------
class Server:
    """Accepts job requests on a Unix socket and forks one process per job; single-threaded
    (a selector over the socket, the clients' connections and a SIGCHLD wake-up pipe), since
    forking a process with other threads can leave their locks held in the child."""

    def __init__(self, socket_path: Path, pid_file: Path, idle_seconds: float, code: str):
        self.socket_path, self.pid_file, self.idle_seconds, self.code = socket_path, pid_file, idle_seconds, code
        self.selector = selectors.DefaultSelector()
        self.jobs: dict[int, socket.socket] = {}  # job pid -> its client's connection
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so the wake-up byte is written
        signal.signal(signal.SIGTERM, _exit_on_signal)
        pid_file.write_text(f"{os.getpid()}\n")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(socket_path))
        self.listener.listen(16)
        self.socket_id = _stat_id(socket_path)
        self.selector.register(self.listener, selectors.EVENT_READ)
        self.selector.register(self.wakeup_r, selectors.EVENT_READ)

    def serve(self) -> None:
        """Serve until idle for idle_seconds (or stale) with no job running; then kill what runs."""
        idle_since = time.monotonic()
        try:
            while self.listening or self.jobs:
                timeout = None if self.jobs else max(0.0, idle_since + self.idle_seconds - time.monotonic())
                events = self.selector.select(timeout)
                if not events and not self.jobs:
                    log(f"idle for {self.idle_seconds:g} s: exiting")
                    break
                for key, _ in events:
                    if key.fileobj is self.listener:
                        self._accept()
                    elif key.fileobj == self.wakeup_r:
                        self._reap()
                    else:
                        self._client_gone(key.fileobj)
                if not self.jobs:
                    idle_since = time.monotonic()
        finally:
            for pid in self.jobs:
                _kill_job(pid)
            self._stop_listening()
            with contextlib.suppress(FileNotFoundError):
                if self.pid_file.read_text().strip() == str(os.getpid()):
                    self.pid_file.unlink()

    @property
    def listening(self) -> bool:
        return self.listener.fileno() != -1

    def _stop_listening(self) -> None:
        """Close the socket and remove its file, unless a newer server has already replaced it."""
        if not self.listening:
            return
        self.selector.unregister(self.listener)
        self.listener.close()
        with _locked(_lock_path(self.socket_path)):
            if _stat_id(self.socket_path) == self.socket_id:
                self.socket_path.unlink()

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        fds: list[int] = []
        try:
            conn.settimeout(REQUEST_TIMEOUT)
            request, fds = _receive_request(conn)
            if request["fingerprint"] != self.code:
                log("a client runs other code (the package was edited or reinstalled): exiting once my jobs end")
                self._stop_listening()
                _reply(conn, {"stale": True})
                conn.close()
                return
            pid = self._fork(conn, request, fds)
        except (OSError, ValueError, KeyError) as e:
            log(f"bad request: {type(e).__name__}: {e}")
            with contextlib.suppress(OSError):
                _reply(conn, {"error": f"bad request ({type(e).__name__}: {e})"})
            conn.close()
            return
        finally:
            for fd in fds:  # the job has its own copies
                os.close(fd)
        conn.settimeout(None)
        _reply(conn, {"pid": pid})
        self.jobs[pid] = conn
        self.selector.register(conn, selectors.EVENT_READ)
        log(f"job {pid}: rule {request['job']['rule']} -> {request['target']}, output {request['job']['output'][0]}")

    def _fork(self, conn: socket.socket, request: dict, fds: list[int]) -> int:
        sys.stdout.flush()  # or the job would write the server's buffered log lines again
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the job's process: never returns into the server's code
            status = 70  # EX_SOFTWARE: the job's process could not be set up
            try:
                os.setpgid(0, 0)
                self._forget()
                conn.close()
                status = _run_job(request, fds)
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(status)
        with contextlib.suppress(OSError):  # its own process group, so a kill reaches its children
            os.setpgid(pid, pid)
        return pid

    def _forget(self) -> None:
        """In a job's process: drop the server's sockets, pipe and signal handlers."""
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for key in list(self.selector.get_map().values()):
            if isinstance(key.fileobj, socket.socket):
                key.fileobj.close()
        self.selector.close()
        os.close(self.wakeup_r)
        os.close(self.wakeup_w)

    def _reap(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wakeup_r, 512):
                pass
        while self.jobs:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.jobs.pop(pid, None)
            if conn is None:
                continue
            status = exit_status(wait_status)
            log(f"job {pid}: exit status {status}")
            with contextlib.suppress(KeyError):  # unregistered if its client is gone
                self.selector.unregister(conn)
            with contextlib.suppress(OSError):  # the client may be gone
                _reply(conn, {"status": status})
            conn.close()

    def _client_gone(self, conn: socket.socket) -> None:
        """The client closed its connection (killed by Snakemake): terminate its job."""
        with contextlib.suppress(OSError):
            if conn.recv(1):
                return  # clients send nothing after the request; ignore stray bytes
        pid = next(pid for pid, c in self.jobs.items() if c is conn)
        log(f"job {pid}: its client is gone, terminating it")
        self.selector.unregister(conn)  # closed when the job is reaped
        _kill_job(pid)


def _receive_request(conn: socket.socket) -> tuple[dict, list[int]]:
    header, fds, flags, _ = socket.recv_fds(conn, _HEADER.size, 3)
    if flags & socket.MSG_CTRUNC or len(fds) != 3:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request comes with the client's stdin, stdout and stderr")
    try:
        header += _receive_exactly(conn, _HEADER.size - len(header))
        (size,) = _HEADER.unpack(header)
        return json.loads(_receive_exactly(conn, size)), fds
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise


def _receive_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ValueError("the client closed the connection mid-request")
        data += chunk
    return data


def _reply(conn: socket.socket, message: dict) -> None:
    conn.sendall(json.dumps(message).encode() + b"\n")


def exit_status(wait_status: int) -> int:
    """A waitpid status as a shell reports it: the exit code, or 128 + the killing signal."""
    code = os.waitstatus_to_exitcode(wait_status)
    return 128 - code if code < 0 else code


def _kill_job(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)


def _exit_on_signal(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _run_job(request: dict, fds: list[int]) -> int:
    """In the job's process: take over the client's stdio, directory and environment, then
    import the target and run the job as the client would have run it; returns its exit status."""
    for std_fd, fd in enumerate(fds):
        os.dup2(fd, std_fd)
        os.close(fd)
    # sys.stdout/stderr stay the same objects on fds 1/2 (loggers hold them), line-buffered like the client's
    sys.stdout.reconfigure(line_buffering=True)
    sys.stderr.reconfigure(line_buffering=True)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    try:
        pkgutil.resolve_name(request["target"])(job_from_description(request["job"]))
        status = 0
    except SystemExit as e:
        status = _system_exit_status(e)
    except BaseException:
        traceback.print_exc()
        status = 1
    finally:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    return status


def _system_exit_status(e: SystemExit) -> int:
    """What the interpreter would exit with for `e` (a message is printed, status 1)."""
    if e.code is None or isinstance(e.code, int):
        return e.code or 0
    print(e.code, file=sys.stderr)
    return 1


def log(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [forkserver {os.getpid()}] {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The workflow's fork server (started by its jobs).")
    parser.add_argument("--socket", type=Path, required=True)
    parser.add_argument("--pid-file", type=Path, required=True)
    parser.add_argument("--idle", type=float, default=IDLE_SECONDS, help="exit after this many seconds without jobs")
    args = parser.parse_args(argv)
    start = time.monotonic()
    code = fingerprint()  # before importing: a file edited meanwhile makes the next job restart us
    for module in PRELOAD:
        importlib.import_module(module)
    # 1 + pyarrow's jemalloc background thread, which jemalloc's own fork handlers take care of
    threads = len(os.listdir("/proc/self/task"))
    server = Server(args.socket, args.pid_file, args.idle, code)
    log(f"listening on {args.socket} after {time.monotonic() - start:.1f} s of imports ({threads} OS threads)")
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
