"""Connecting to Ray, the engine cleanroom uses past one machine, without ever leaving a cluster behind.

`ray_session(address)` runs a block with Ray initialised. A connection that already exists (a test's
`ray.init(num_cpus=2)`, or a caller's own) is used and left alone. Otherwise it connects to `address`
(`runtime.ray_address`): "" starts a private Ray instance on this machine (Ray's "local": never another
user's cluster on a shared machine), "auto" joins the cluster `ray start` made, `ray://HOST:10001` is a
remote cluster through Ray Client; and whatever it started or joined is shut down when the block ends,
error or Ctrl-C included. Ray is an optional dependency (`pip install 'cleanroom[ray]'`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cleanroom.errors import CleanroomError


def require_ray() -> Any:
    """The `ray` module, or an error that says how to install it."""
    try:
        import ray
    except ImportError:
        raise CleanroomError("runtime.executor = \"ray\" needs Ray: pip install 'cleanroom[ray]' "
                             "(or pip install ray)") from None
    return ray


@contextmanager
def ray_session(address: str = "") -> Iterator[Any]:
    """Yield the `ray` module, initialised; shut down on exit only what this call started."""
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    try:
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise CleanroomError(f"cannot start or reach the Ray cluster at `{address or 'local'}` "
                             f"(runtime.ray_address): {str(e).splitlines()[0]}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def cluster_cpus(ray: Any) -> int:
    """CPUs the connected cluster offers (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))
