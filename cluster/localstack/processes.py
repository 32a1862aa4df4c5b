"""OS processes and ports for the local stack: spawn detached, check, stop by pid, run as a user.

Every process the stack starts gets its own session (``start_new_session``), so a Ctrl-C in the
terminal that ran ``chronoverse up`` does not reach it, and a process tree (the Ray head) can be
found again later by its session id.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Children spawned by this interpreter, kept so they can be reaped (no zombies in long test runs).
_children: dict[int, subprocess.Popen[bytes]] = {}

#: Longest path the kernel accepts for a unix socket (sun_path is 108 bytes incl. the NUL).
MAX_SOCKET_PATH = 107
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to run a server as (PostgreSQL refuses to run as root)."""

    name: str
    uid: int
    gid: int


def is_root() -> bool:
    return os.geteuid() == 0


def unprivileged_user() -> RunAs | None:
    """The account PostgreSQL runs as when we are root: ``postgres`` if it exists, else a
    ``chronoverse`` system user (created on first use).  ``None`` when not root."""
    if not is_root():
        return None
    for name in ("postgres", "chronoverse"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(name, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin",
         "chronoverse"],
        check=True,
        capture_output=True,
    )
    entry = pwd.getpwnam("chronoverse")
    return RunAs("chronoverse", entry.pw_uid, grp.getgrgid(entry.pw_gid).gr_gid)


def grant_traverse(path: Path) -> list[Path]:
    """Make every ancestor of ``path`` searchable by others (``o+x``), so an unprivileged server can
    reach its data directory below e.g. ``/root``.  Only the search bit is added (never read), and
    only where missing.  Returns the directories that were changed."""
    changed: list[Path] = []
    for directory in reversed(path.resolve().parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
            changed.append(directory)
    return changed


def can_access(user: RunAs, path: Path) -> bool:
    """Whether ``user`` can reach ``path`` (every ancestor searchable, the file itself readable)."""
    for directory in reversed(path.resolve().parents):
        if not _permits(user, directory.stat(), stat.S_IXOTH, stat.S_IXGRP, stat.S_IXUSR):
            return False
    return _permits(user, path.stat(), stat.S_IROTH, stat.S_IRGRP, stat.S_IRUSR)


def _permits(user: RunAs, st: os.stat_result, other: int, group: int, owner: int) -> bool:
    if st.st_uid == user.uid:
        return bool(st.st_mode & owner)
    if st.st_gid == user.gid:
        return bool(st.st_mode & group)
    return bool(st.st_mode & other)


def spawn(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached (own session), stdout+stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
        )
    _children[proc.pid] = proc
    return proc


def run(
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> int:
    """Run ``argv`` to completion with output appended to ``log``; return its exit code."""
    proc = spawn(argv, log=log, env=env, run_as=run_as, cwd=cwd)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return -signal.SIGKILL
    finally:
        _children.pop(proc.pid, None)


def _reap(pid: int) -> None:
    proc = _children.get(pid)
    if proc is not None and proc.poll() is not None:
        _children.pop(pid, None)


def is_alive(pid: int | None) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    if not pid or pid <= 0:
        return False
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return False
    # The state letter follows the parenthesised command name, which may itself contain spaces.
    state = raw[raw.rfind(b")") + 2 : raw.rfind(b")") + 3]
    return state not in (b"Z", b"X")


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [part.decode(errors="replace") for part in fh.read().split(b"\0") if part]
    except OSError:
        return []


def environ(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with (empty when unreadable; Python processes that set
    their title, such as Ray's agents, blank it)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if b"=" in item)
    return {key: value for key, _, value in pairs}


def all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def session_members(sid: int) -> list[int]:
    """Live processes whose session id is ``sid`` (a process tree started with its own session)."""
    members: list[int] = []
    for pid in all_pids():
        try:
            if os.getsid(pid) == sid and is_alive(pid):
                members.append(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return int(raw[raw.rfind(b")") + 2 :].split()[1])


def descendants(pid: int) -> list[int]:
    """Live children, grandchildren … of ``pid`` (PostgreSQL's and containerd's children each call
    setsid, so the session id does not find them; the parent chain does)."""
    children: dict[int, list[int]] = {}
    for candidate in all_pids():
        parent = parent_of(candidate)
        if parent is not None:
            children.setdefault(parent, []).append(candidate)
    found: list[int] = []
    stack = list(children.get(pid, []))
    while stack:
        child = stack.pop()
        if is_alive(child):
            found.append(child)
        stack.extend(children.get(child, []))
    return found


def signal_pids(pids: Iterable[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def wait_gone(pids: Iterable[int], timeout: float) -> list[int]:
    """Wait until every pid has exited; return those still alive after ``timeout``."""
    pending = list(pids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = [pid for pid in pending if is_alive(pid)]
        if pending:
            time.sleep(0.05)
    return [pid for pid in pending if is_alive(pid)]


def stop_pid(pid: int | None, *, sig: int = signal.SIGTERM, grace: float = 10.0) -> bool:
    """Send ``sig`` to ``pid``, wait ``grace`` seconds, then SIGKILL it and any descendant it left
    behind.  True if the process and its descendants are gone."""
    if not is_alive(pid):
        return True
    assert pid is not None
    tree = descendants(pid)
    signal_pids([pid], sig)
    if wait_gone([pid], grace):
        signal_pids([pid], signal.SIGKILL)
        wait_gone([pid], 5.0)
    orphans = wait_gone(tree, 2.0)
    signal_pids(orphans, signal.SIGKILL)
    wait_gone(orphans, 5.0)
    _reap(pid)
    return not is_alive(pid) and not any(is_alive(p) for p in tree)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether nothing listens on ``host:port`` (we can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers do: connections lingering in TIME_WAIT on that port do not make it busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port the kernel just reported free on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_until(
    check: Callable[[], bool],
    *,
    timeout: float,
    interval: float = 0.1,
    alive: Callable[[], bool] | None = None,
    on_wait: Callable[[float], None] | None = None,
) -> bool:
    """Poll ``check`` until it is true.  Stops early (False) when ``alive`` turns false; calls
    ``on_wait(elapsed)`` about every 5 s so a user sees progress."""
    start = time.monotonic()
    next_note = start + 5.0
    while True:
        if check():
            return True
        now = time.monotonic()
        if now - start >= timeout or (alive is not None and not alive()):
            return False
        if on_wait is not None and now >= next_note:
            on_wait(now - start)
            next_note = now + 5.0
        time.sleep(interval)


def tail(path: Path | None, lines: int = 5) -> str:
    """The last non-empty lines of a log file, joined with `` | `` for a one-line error message."""
    if path is None or not path.exists():
        return ""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 8192))
        text = fh.read().decode(errors="replace")
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])
