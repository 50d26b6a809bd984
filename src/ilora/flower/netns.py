"""A private network for Ray: ``ilora flower simulate`` run inside its own network namespace.

Ray 2.55 binds its servers (GCS, raylets, workers) to the node's IP address, and ``ray.init``
deliberately replaces 127.0.0.1 by the machine's external address; so on a networked machine
every Ray server listens on an interface others can reach, without authentication. There is no
Ray option to keep it on loopback. In a new network namespace, though, the only interface is a
loopback: Ray finds no external address, takes 127.0.0.1, and nothing it opens can be reached
from outside the namespace, not even from the host's own 127.0.0.1.

``python -m ilora.flower.netns ARGS...`` makes that namespace (an unprivileged user namespace
that maps the caller to itself, then a network namespace with ``lo`` up) while the interpreter
is still single-threaded, and runs ``ilora ARGS...`` in it. Linux only; where unprivileged user
namespaces are switched off, :func:`isolate` raises :class:`PrivateNetworkError`.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct
import sys
from pathlib import Path

CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


class PrivateNetworkError(OSError):
    """The kernel refused a private network namespace to this process."""


def interfaces(pid: int | str = "self") -> list[str]:
    """Return the network interfaces of the namespace of process ``pid``."""
    lines = Path(f"/proc/{pid}/net/dev").read_text().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines]


def is_private() -> bool:
    """Return whether this process's network has no interface but loopback."""
    try:
        return interfaces() == ["lo"]
    except OSError:
        return False


def isolate() -> None:
    """Move this (single-threaded) process into new user and network namespaces, ``lo`` up.

    Raises:
        PrivateNetworkError: if the kernel refuses (no unprivileged user namespaces, not Linux).

    """
    uid, gid = os.getuid(), os.getgid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            request = struct.pack("16sH", b"lo", 0)
            flags = struct.unpack("16sH", fcntl.ioctl(s, SIOCGIFFLAGS, request)[:18])[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
    except (OSError, AttributeError) as err:
        raise PrivateNetworkError(
            f"cannot give Ray a private network here ({err}; unprivileged user namespaces may "
            "be off); rerun with --ray-network host to let Ray listen on this machine's "
            "addresses"
        ) from err


def main() -> None:
    """``python -m ilora.flower.netns ARGS...``: run ``ilora ARGS...`` in a private network."""
    try:
        isolate()
    except PrivateNetworkError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    # the namespaces survive exec: the CLI (a layer above this module) starts inside them
    os.execv(sys.executable, [sys.executable, "-m", "ilora", *sys.argv[1:]])


if __name__ == "__main__":
    main()
