"""Before a run starts: does the Ray cluster named by ``--address`` or ``RAY_ADDRESS`` answer?

``ray.init(address=...)`` on an address where nothing listens does not fail: it
retries for minutes, printing warnings. ``check_address`` fails at once with one
line instead, before a run directory exists: it resolves the address the way
Ray does (``auto``: the cluster started on this machine with ``ray start
--head``; ``ray://HOST:PORT``: a Ray Client server; ``HOST:PORT``: a head's GCS)
and opens, then closes, a TCP connection to it — a check that something
listens there, not a protocol of ours. ``None`` and ``"local"`` (a local Ray
started by the run) need no check.
"""

from __future__ import annotations

import os
import socket

FORMS = "HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto"


def check_address(address: str | None, timeout: float = 5.0, option: str = "--address") -> None:
    """Raise a one-line ``ValueError`` unless the cluster ``address`` (default:
    ``RAY_ADDRESS``) names answers within ``timeout`` seconds, or Ray is not installed.
    ``option`` names where ``address`` came from in the message (``"OnRay's address"``)."""
    given = address if address is not None else (os.environ.get("RAY_ADDRESS") or None)
    if given is None or given == "local":
        return
    what = f"{option} {given}" if address is not None else f"RAY_ADDRESS={given}"
    from ermlab.distributed.ray_backend import import_ray

    try:
        import_ray()
    except ImportError as error:
        raise ValueError(str(error)) from None
    target = _running_cluster(what, option) if given == "auto" else given
    if target is None:
        return
    host, port = _host_port(what, target.removeprefix("ray://"))
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as error:
        reason = (f"no answer within {timeout:g} s" if isinstance(error, TimeoutError)
                  else error.strerror or type(error).__name__)
        raise ValueError(f"{what}: no Ray cluster answers at {host}:{port} ({reason}); start "
                         f"one there (`ray start --head --port={port}` on that machine) or "
                         f"leave out {option} and RAY_ADDRESS for a local Ray") from None


def _running_cluster(what: str, option: str) -> str | None:
    """The address ``auto`` stands for (Ray's own lookup), or None if Ray cannot tell."""
    try:
        from ray._private.services import canonicalize_bootstrap_address
    except ImportError:  # another Ray: let ray.init resolve it
        return None
    try:
        return canonicalize_bootstrap_address("auto")
    except ConnectionError:
        raise ValueError(f"{what}: no running Ray cluster found on this machine; start one "
                         "with `ray start --head`, or name its HEAD:PORT in " + option) from None


def _host_port(what: str, text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} is not a cluster address; use {FORMS}")
    return host, int(port)
