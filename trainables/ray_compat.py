"""Every Ray internal xstilts uses, in one place (Ray 2.60; `tests/test_ray_compat.py` fails
loudly when an upgrade moves one).

Each is a workaround for something no public API offers; each degrades gracefully at run time
(the cost of its absence is stated below), so a moved internal never breaks a study, it only
brings back the problem it worked around. The test is what tells a maintainer to look.
"""
from __future__ import annotations

import contextlib
import threading

# (module, attribute, what is lost if it moves): what tests/test_ray_compat.py checks.
INTERNALS = (
    ("ray.train._internal.session", "get_session",
     "trials stopped early by ASHA while Ray Train runs are recorded via the study's callback only"),
    ("ray._private.ray_constants", "ENABLE_RAY_CLUSTER",
     "a local Ray binds its ports on every interface instead of loopback"),
    ("ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator", "get_or_create_autoscaling_coordinator",
     "on an autoscaling cluster, the node of the first Train run is never released"),
    ("ray._private.state", "state",
     "a Train worker too big for every autoscaler node type is not refused (KubeRay/autoscaler v2 clusters)"),
)


def tune_stop_event() -> threading.Event | None:
    """The stop event of this trial's Tune session, which Tune sets when it stops the trial (a
    scheduler's early stop). Taken when the trial starts: stopping also drops the session, before
    the trial's actor (and the Ray Train controller it owns) is torn down. None when it cannot be
    found."""
    try:
        from ray.train._internal.session import get_session

        event = getattr(get_session(), "stop_event", None)
        return event if isinstance(event, threading.Event) else None
    except Exception:  # noqa: BLE001 - never let it break the trial
        return None


@contextlib.contextmanager
def loopback_ray():
    """While a local Ray starts: make its node address loopback, so that the GCS, the raylet, the
    object manager, the agents and the workers listen on 127.0.0.1 instead of every interface.

    Ray 2.60's `ray.init(_node_ip_address="127.0.0.1")` alone is not enough: it replaces a
    loopback address by the machine's routable one (`services.resolve_ip_for_localhost`), unless
    Ray clusters are disabled, as Ray does by default on macOS and Windows for this very reason
    (`ray_constants.ENABLE_RAY_CLUSTER`, env RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER). That switch is
    turned off for the driver's `ray.init` only (not through the environment, which `ray start`
    of a later cluster in the same process tree would inherit); once started, every process of
    the runtime takes the node address from its command line. A Ray without that constant (a
    later release binding to the node address) gets `_node_ip_address` as is.
    """
    try:
        from ray._private import ray_constants
    except ImportError:  # a Ray without it: _node_ip_address alone
        yield
        return
    if not hasattr(ray_constants, "ENABLE_RAY_CLUSTER"):
        yield
        return
    from unittest import mock

    with mock.patch.object(ray_constants, "ENABLE_RAY_CLUSTER", False):
        yield


def pin_train_coordinator_here() -> None:
    """Create Ray Train's autoscaling coordinator on the driver's node before any trial does.

    Ray Train 2.60 creates it (a detached actor) on the node of the first Train run's
    controller: on an autoscaling cluster that is a worker node, which then never counts as
    idle and is never released (seen on the fake autoscaler). Created here first, on the head
    where the driver runs, every Train run finds it by name. If it moved, the cost is only that
    one node outlives the study, so failures are ignored.
    """
    try:
        from ray.data._internal.cluster_autoscaler.default_autoscaling_coordinator import (
            get_or_create_autoscaling_coordinator)

        get_or_create_autoscaling_coordinator()
    except Exception:  # noqa: BLE001
        pass


def reported_cluster_config():
    """The cluster config an autoscaler reported to the GCS (autoscaler v2, KubeRay): a protobuf
    with `node_group_configs` (name, resources, max_count); None when none was reported."""
    try:
        from ray._private.state import state

        return state.get_cluster_config()
    except Exception:  # noqa: BLE001 - absent means "not reported"
        return None
