"""The container runtime: a small interface over the Docker engine, and image-pull herd protection.

:class:`ContainerRuntime` is what the workers need from a container engine; :class:`DockerRuntime`
implements it with the ``docker`` SDK, every call in a thread so the actor's event loop never blocks.
The execution worker extends the interface with run / stream / remove; the workflow worker only asks
"is this image on the host?" and "pull it".

:class:`ImageEnsurer` is reference §6.4: an image already present is used with no lock; a missing
one is pulled under the Redis lock ``container:image-pull:<sha256(host)>:<sha256(image)>`` so that
workers sharing a Docker host pull it once.  Waiters poll every ``image_pull_retry_interval`` and give
up after ``image_pull_wait_timeout`` with a retryable error; the holder renews the lock while pulling.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Protocol, runtime_checkable

from redis.asyncio import Redis

from domain.config import DockerConfig, WorkflowWorkerConfig
from domain.errors import ChronoverseError, NotFound, RateLimited, Unavailable
from domain.workflow_events import image_pull_lock_key
from store import locks

log = logging.getLogger(__name__)

#: Labels that link a container to its job and workflow (set by the execution worker when it creates one).
LABEL_JOB_ID = "chronoverse.job_id"
LABEL_WORKFLOW_ID = "chronoverse.workflow_id"
DEFAULT_DOCKER_HOST = "unix:///var/run/docker.sock"

#: In-process pull attempts for transient errors (reference §5.1: 2 attempts, 1 s backoff).
PULL_ATTEMPTS = 2
PULL_BACKOFF_S = 1.0


@runtime_checkable
class ContainerRuntime(Protocol):
    """What workers need from a container engine."""

    @property
    def docker_host(self) -> str:
        """Identity of the engine (part of the image-pull lock key)."""
        ...

    async def image_present(self, image: str) -> bool:
        """True if ``image`` is available locally.  Raises Unavailable if the engine is unreachable."""
        ...

    async def pull_image(self, image: str) -> None:
        """Pull ``image``.  NotFound when the pull fails; Unavailable when the engine is unreachable."""
        ...

    async def remove_containers(self, labels: dict[str, str]) -> int:
        """Force-remove every container carrying all ``labels``; return how many were removed."""
        ...


def split_image(image: str) -> tuple[str, str | None]:
    """``repo[:tag][@digest]`` → ``(repository, tag-or-digest)``; a missing tag means ``latest``.

    The SDK pulls *every* tag when none is given, so we always name one.
    """
    if "@" in image:
        repo, digest = image.split("@", 1)
        return repo, digest
    slash = image.rfind("/")
    colon = image.rfind(":")
    if colon > slash:
        return image[:colon], image[colon + 1 :]
    return image, "latest"


class DockerRuntime:
    """:class:`ContainerRuntime` over the ``docker`` SDK; blocking calls run in a thread."""

    def __init__(self, config: DockerConfig) -> None:
        self._configured_host = config.host
        self._client: Any = None

    @property
    def docker_host(self) -> str:
        return self._configured_host or os.environ.get("DOCKER_HOST") or DEFAULT_DOCKER_HOST

    def _docker(self) -> Any:
        import docker

        if self._client is None:
            try:
                if self._configured_host:
                    self._client = docker.DockerClient(base_url=self._configured_host)
                else:
                    self._client = docker.from_env()
            except docker.errors.DockerException as err:
                raise Unavailable(f"docker engine unreachable at {self.docker_host}: {err}") from None
        return self._client

    async def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def _image_present(self, image: str) -> bool:
        import docker
        import requests

        try:
            self._docker().images.get(image)
            return True
        except docker.errors.ImageNotFound:
            return False
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            raise Unavailable(f"docker engine unreachable at {self.docker_host}: {err}") from None

    async def image_present(self, image: str) -> bool:
        result: bool = await self._call(self._image_present, image)
        return result

    def _pull(self, image: str) -> None:
        import docker
        import requests

        repository, tag = split_image(image)
        client = self._docker()
        try:
            client.images.pull(repository, tag=tag)
        except requests.exceptions.ConnectionError as err:
            raise Unavailable(f"docker engine unreachable at {self.docker_host}: {err}") from None
        except docker.errors.APIError as err:
            # The engine answered: the image cannot be pulled (unknown, unauthorized, registry unreachable).
            raise NotFound(f"failed to pull image {image}: {err.explanation or err}") from None
        except docker.errors.DockerException as err:
            raise Unavailable(f"docker engine error while pulling {image}: {err}") from None

    async def pull_image(self, image: str) -> None:
        await self._call(self._pull, image)

    def _remove(self, labels: dict[str, str]) -> int:
        import docker
        import requests

        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        try:
            containers = self._docker().containers.list(all=True, filters=filters)
        except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
            raise Unavailable(f"docker engine unreachable at {self.docker_host}: {err}") from None
        removed = 0
        for container in containers:
            try:
                container.remove(force=True, v=True)
                removed += 1
            except docker.errors.NotFound:
                pass  # already gone: the goal is reached
            except (docker.errors.DockerException, requests.exceptions.RequestException) as err:
                raise Unavailable(f"failed to remove container {container.id}: {err}") from None
        return removed

    async def remove_containers(self, labels: dict[str, str]) -> int:
        removed: int = await self._call(self._remove, labels)
        return removed

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class ImageEnsurer:
    """Make sure an image is on the runtime's host, pulling at most once per host (reference §6.4).

    In-process callers asking for the same image share one attempt (single flight); across
    processes the Redis herd lock serialises pulls.
    """

    def __init__(self, runtime: ContainerRuntime, redis: Redis, config: WorkflowWorkerConfig) -> None:
        self.runtime = runtime
        self.redis = redis
        self.config = config
        self._inflight: dict[str, asyncio.Future[None]] = {}

    async def ensure(self, image: str) -> None:
        """Return once ``image`` is present.  Raises NotFound (pull failed, permanent), RateLimited
        (lock wait timed out or lock lost, retryable) or Unavailable (engine down, retryable)."""
        if await self.runtime.image_present(image):
            return
        running = self._inflight.get(image)
        if running is not None:
            await asyncio.shield(running)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._inflight[image] = future
        try:
            await self._pull_under_lock(image)
            future.set_result(None)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as err:
            future.set_exception(err)
            future.exception()  # mark retrieved: followers (if any) re-raise it themselves
            raise
        finally:
            del self._inflight[image]

    async def _pull_under_lock(self, image: str) -> None:
        key = image_pull_lock_key(self.runtime.docker_host, image)
        held = await locks.wait_acquire(
            self.redis,
            key,
            self.config.image_pull_lock_ttl,
            wait_timeout=self.config.image_pull_wait_timeout,
            retry_interval=self.config.image_pull_retry_interval,
        )
        if held is None:
            raise RateLimited(f"timed out waiting for image pull lock for {image}")
        try:
            # Whoever held the lock before us has probably pulled it already.
            if await self.runtime.image_present(image):
                return
            await self._pull_with_retry(image)
            if held.lost:
                raise RateLimited(f"image pull lock for {image} was lost during the pull")
        finally:
            await held.release()

    async def _pull_with_retry(self, image: str) -> None:
        for attempt in range(1, PULL_ATTEMPTS + 1):
            try:
                await self.runtime.pull_image(image)
                return
            except ChronoverseError as err:
                if not err.retryable or attempt == PULL_ATTEMPTS:
                    raise
                log.warning("pull of %s failed (attempt %d), retrying: %s", image, attempt, err)
                await asyncio.sleep(PULL_BACKOFF_S)
