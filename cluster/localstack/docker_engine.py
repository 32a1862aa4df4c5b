"""Docker for the local stack: use an engine that answers (``DOCKER_HOST`` or the default socket);
otherwise, as root with Debian's ``docker.io`` installed, start our own ``dockerd`` without bridge,
iptables or IP forwarding (infra-notes §3).  Optional: without an engine the stack still runs and
container jobs report the runtime as unavailable.

Also builds the offline test image ``local/busybox:1`` from Debian's static busybox.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.localstack.base import Component, ComponentRecord, Health, StackContext, StackError
from cluster.localstack.processes import (
    MAX_SOCKET_PATH,
    is_alive,
    is_root,
    spawn,
    stop_pid,
    tail,
    wait_until,
)
from domain.config import Settings
from domain.enums import StackComponent

if TYPE_CHECKING:
    import docker

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
BUSYBOX_IMAGE = "local/busybox:1"
BUSYBOX_BINARY = Path("/bin/busybox")
START_TIMEOUT_S = 60.0
DOCKERD_FLAGS = ("--bridge=none", "--iptables=false", "--ip-forward=false", "--ip-masq=false")


def ping(base_url: str) -> str:
    """``""`` when a Docker engine answers at ``base_url``, else why not."""
    import docker
    from docker.errors import DockerException

    try:
        client = docker.DockerClient(base_url=base_url, timeout=3)
    except DockerException as err:
        return f"{err.__class__.__name__}: {err}"
    try:
        client.ping()
        return ""
    except Exception as err:  # requests' connection errors are not DockerException subclasses
        return f"{err.__class__.__name__}: {err}"
    finally:
        client.close()


def _run_dir(ctx: StackContext) -> Path:
    """Where dockerd's sockets go: in the state dir when the paths stay short enough for unix
    sockets (containerd nests several levels below the exec root), else a short dir in /tmp."""
    preferred = ctx.state_dir.resolve() / "docker" / "run"
    if len(str(preferred / "exec" / "containerd" / "containerd.sock.ttrpc")) < MAX_SOCKET_PATH - 10:
        return preferred
    digest = hashlib.sha1(str(ctx.state_dir.resolve()).encode()).hexdigest()[:10]
    return Path(f"/tmp/cv-docker-{digest}")


def _mounts_below(roots: list[Path]) -> list[str]:
    found: list[str] = []
    with open("/proc/self/mounts") as fh:
        for line in fh:
            point = line.split()[1].replace("\\040", " ")
            if any(point == str(r) or point.startswith(f"{r}/") for r in roots):
                found.append(point)
    return found


def _unmount_below(roots: list[Path]) -> None:
    # dockerd leaves the netns bind mount (exec-root/netns/default) behind (infra-notes §3).
    for point in sorted(_mounts_below(roots), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


class DockerEngine(Component):
    """An existing Docker engine, or our own ``dockerd`` (pid recorded, stopped on ``down``)."""

    name = StackComponent.DOCKER
    optional = True

    @classmethod
    def external(cls, ctx: StackContext) -> ComponentRecord | None:
        configured = ctx.settings.docker.host
        if configured:
            return ComponentRecord(name=cls.name, managed=False, endpoint=configured,
                                   env={"DOCKER_HOST": configured})
        if not ping(DEFAULT_SOCKET):
            return ComponentRecord(name=cls.name, managed=False, endpoint=DEFAULT_SOCKET,
                                   env={"DOCKER_HOST": DEFAULT_SOCKET})
        return None

    @classmethod
    def start(cls, ctx: StackContext) -> ComponentRecord:
        dockerd = shutil.which("dockerd")
        if dockerd is None:
            raise StackError(cls.name, "no engine answers and dockerd is not installed "
                             "(apt-get install docker.io)")
        if not is_root():
            raise StackError(cls.name, "no engine answers and starting dockerd needs root")
        log = ctx.log_path(cls.name)
        data_root = ctx.state_dir.resolve() / "docker" / "root"
        run_dir = _run_dir(ctx)
        exec_root, socket = run_dir / "exec", run_dir / "docker.sock"
        for directory in (data_root, exec_root):
            directory.mkdir(parents=True, exist_ok=True)
        socket.unlink(missing_ok=True)
        base_url = f"unix://{socket}"
        argv = [dockerd, "--data-root", str(data_root), "--exec-root", str(exec_root),
                "--pidfile", str(run_dir / "dockerd.pid"), "-H", base_url, *DOCKERD_FLAGS]
        proc = spawn(argv, log=log, env=ctx.child_env or None)
        record = ComponentRecord(
            name=cls.name, managed=True, pid=proc.pid, endpoint=base_url, log=str(log),
            data={"data_root": str(data_root), "run_dir": str(run_dir), "exec_root": str(exec_root)},
            env={"DOCKER_HOST": base_url},
        )
        reason = ["not answering yet"]

        def ready() -> bool:
            reason[0] = ping(base_url)
            return not reason[0]

        if not wait_until(ready, timeout=START_TIMEOUT_S, interval=0.1, alive=lambda: is_alive(proc.pid),
                          on_wait=lambda s: ctx.progress(f"docker: waiting for dockerd ({s:.0f}s)")):
            exited = not is_alive(proc.pid)
            cls.stop(record)
            raise StackError(cls.name, f"dockerd exited: {tail(log)}" if exited else
                             f"dockerd not ready: {reason[0]}", log)
        return record

    @classmethod
    def check(cls, record: ComponentRecord, settings: Settings) -> Health:
        if record.managed and not is_alive(record.pid):
            return Health(False, "dockerd is not running")
        reason = ping(record.endpoint)
        return Health(not reason, reason)

    @classmethod
    def stop(cls, record: ComponentRecord) -> None:
        if not record.managed:
            return
        stop_pid(record.pid, grace=30.0)
        roots = [Path(record.data[key]) for key in ("exec_root", "data_root") if key in record.data]
        _unmount_below(roots)
        run_dir = Path(record.data.get("run_dir", ""))
        if run_dir.is_absolute() and str(run_dir).startswith("/tmp/cv-docker-"):
            shutil.rmtree(run_dir, ignore_errors=True)


def _busybox_rootfs() -> bytes:
    """A tar of ``/bin/busybox`` plus one symlink per applet, ``/etc/passwd`` and ``/tmp``."""
    if not BUSYBOX_BINARY.is_file():
        raise StackError(StackComponent.DOCKER,
                         f"{BUSYBOX_BINARY} is missing: apt-get install busybox-static")
    applets = subprocess.run([str(BUSYBOX_BINARY), "--list"], capture_output=True, text=True, check=True)
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for directory, mode in (("bin", 0o755), ("etc", 0o755), ("tmp", 0o1777), ("root", 0o700)):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            tar.addfile(info)
        binary = BUSYBOX_BINARY.read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode, info.mtime = len(binary), 0o755, now
        tar.addfile(info, io.BytesIO(binary))
        for applet in sorted(set(applets.stdout.split())):
            if applet == "busybox" or "/" in applet:
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname, link.mode, link.mtime = tarfile.SYMTYPE, "busybox", 0o777, now
            tar.addfile(link)
        passwd = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size, info.mode, info.mtime = len(passwd), 0o644, now
        tar.addfile(info, io.BytesIO(passwd))
    return buf.getvalue()


def ensure_busybox_image(client: docker.DockerClient, image: str = BUSYBOX_IMAGE) -> str:
    """Import the offline image ``local/busybox:1`` (Debian's static busybox) unless it exists.
    No registry is involved.  Returns the image name."""
    from docker.errors import ImageNotFound

    try:
        client.images.get(image)
        return image
    except ImageNotFound:
        pass
    repository, _, tag = image.rpartition(":")
    result: Any = client.api.import_image_from_data(_busybox_rootfs(), repository=repository, tag=tag)
    try:
        client.images.get(image)
    except ImageNotFound:
        raise StackError(StackComponent.DOCKER, f"importing {image} failed: {result}") from None
    return image
