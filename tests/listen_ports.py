"""Ports for test services that bind some time after the port is chosen.

``cluster.localstack.free_port`` asks the kernel for a free port (bind to port 0), which hands out
ports of the *ephemeral* range (``net.ipv4.ip_local_port_range``): the same range the kernel uses for
every outgoing connection and every other port-0 bind on the machine (Ray's workers, other test
runs).  A port chosen that way and bound seconds later (HAProxy starts after Ray, Serve after the
stack) can be taken in between.  :func:`listen_port` picks from below the ephemeral range instead,
where only explicit binds land, and never hands out the same port twice in one run.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_handed_out: set[int] = set()


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    # 0.0.0.0 conflicts with a bind on any address (HAProxy listens on all of them).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


#: Where to pick: above Ray's default worker ports (10002-19999) and below the ports our own stack
#: and Serve bind (Ray workers 28300-28999, HAProxy 28272-28275, Serve's HAProxy-mode replica
#: ports 30000-31000) — none of those check a test port first.
LOW, HIGH = 20000, 27999


def listen_port() -> int:
    """A TCP port below the ephemeral range, free now and not handed out before in this process."""
    high = min(_ephemeral_start() - 1, HIGH)
    low = LOW
    for _ in range(1000):
        port = random.randint(low, high)
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port in {low}-{high}")
