"""streamfuse on a Ray cluster: camera pairs as actors (:mod:`.fleet`), archives as segment jobs (:mod:`.archive`).

Ray is an optional dependency (``pip install "streamfuse[ray]"``): nothing outside this package
imports it, and inside it only :func:`require_ray` does, when a cluster command runs.
"""

from __future__ import annotations

import socket

from streamfuse.errors import StreamfuseError


def require_ray():
    """The ``ray`` module.

    Raises:
        StreamfuseError: Ray is not installed; the message names the extra that brings it.
    """
    try:
        import ray
    except ImportError:
        raise StreamfuseError('the cluster commands need Ray, which is not installed; install the extra: '
                              'pip install "streamfuse[ray]"') from None
    return ray


def connect(address: str | None, *, num_cpus: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (``auto``: the one started with ``ray start`` on this machine),
    or start a new local one when ``address`` is None (even where a ``ray start`` cluster runs here).
    Does nothing when already connected."""
    ray = require_ray()
    if ray.is_initialized():
        return
    _check_reachable(address)
    try:
        ray.init(address=address or "local", num_cpus=num_cpus if address is None else None,
                 include_dashboard=False, log_to_driver=True)
    except ConnectionError as exc:
        raise StreamfuseError(f"--address {address}: cannot reach a Ray cluster ({exc}); start one with "
                              "'ray start --head' or omit --address for a local one") from None
    except ValueError as exc:  # 'garbage', a host without a port: Ray's 'Invalid address format' traceback
        raise StreamfuseError(f"--address {address}: not a Ray address ({exc}); give HOST:PORT of the head node "
                              "(its GCS port, 6379 unless 'ray start --port' set another), ray://HOST:PORT, or "
                              "auto") from None


#: How long joining a cluster waits for its address to answer before it says it cannot.
REACH_TIMEOUT_S = 5.0


def _check_reachable(address: str | None) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) nothing answers at: Ray itself retried for ever, printing
    only its own warnings."""
    host, _, port = (address or "").removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return  # None, auto, local: Ray finds (or starts) the cluster itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise StreamfuseError(f"--address {address}: nothing answers there ({exc.strerror or exc}); check the "
                              "head node's address and port ('ray status' on it), or omit --address for a local "
                              "cluster") from None
