"""Does a trial fit on the Ray cluster it joined, or on a node its autoscaler can add?

A Ray Train worker's bundle ({CPU: cpus_per_worker, GPU: 1}) must fit on one node. If no node
of the cluster has room for it and the autoscaler has no node type that would, Ray keeps the
request pending forever and the study prints "started:" and then nothing. The shapes checked:

- the nodes alive now (their total resources);
- the autoscaler's node types, where they can be read: the cluster config the autoscaler
  reports to the GCS (autoscaler v2, KubeRay), else the autoscaling config file of the Ray
  monitor running on this machine (the head, where `xstilts run --address auto` runs under the
  cluster launcher; `--autoscaling-config=` on its command line).

When the node types cannot be read and no alive node fits, the study goes on with a warning
(an autoscaler we cannot see may still add one); when they can, it is refused (exit 2).
"""
from __future__ import annotations

from dataclasses import dataclass

from xstilts.study.config import ConfigError


@dataclass(frozen=True)
class NodeShape:
    name: str  # a node id (alive) or a node type name (autoscaler)
    resources: dict


def worker_bundle(resources) -> dict:
    """What one Ray Train worker of a trial asks for (xstilts.trainables.trial._fit)."""
    bundle = {"CPU": float(resources.cpus_per_worker)}
    if resources.use_gpu:
        bundle["GPU"] = 1.0
    return bundle


def fits(bundle: dict, shape: dict) -> bool:
    return all(shape.get(name, 0.0) >= amount for name, amount in bundle.items())


def alive_shapes() -> list[NodeShape]:
    import ray

    return [NodeShape(node["NodeID"], dict(node.get("Resources", {}))) for node in ray.nodes() if node.get("Alive")]


def _reported_node_types() -> list[NodeShape] | None:
    from xstilts.trainables.ray_compat import reported_cluster_config

    config = reported_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    return [NodeShape(group.name, {k: float(v) for k, v in group.resources.items()})
            for group in config.node_group_configs if group.max_count != 0]


def _monitor_config_node_types() -> list[NodeShape] | None:
    import psutil
    import yaml

    for process in psutil.process_iter(["cmdline"]):
        args = process.info.get("cmdline") or []
        if not any("monitor.py" in arg for arg in args):
            continue
        for arg in args:
            if arg.startswith("--autoscaling-config="):
                try:
                    with open(arg.split("=", 1)[1]) as handle:
                        config = yaml.safe_load(handle)
                except (OSError, yaml.YAMLError):
                    return None
                return node_types_of(config)
    return None


def node_types_of(config: dict) -> list[NodeShape] | None:
    """The worker node types of an autoscaling config; None when any type's resources are left to
    auto-detection (an empty `resources:` on a cloud instance type), since those are unknown."""
    types = (config or {}).get("available_node_types") or {}
    head = (config or {}).get("head_node_type")
    shapes = []
    for name, spec in types.items():
        if name == head or (spec or {}).get("max_workers", 1) == 0:
            continue
        resources = (spec or {}).get("resources") or {}
        if not resources:
            return None
        shapes.append(NodeShape(name, {k: float(v) for k, v in resources.items()}))
    return shapes or None


def autoscaler_node_types() -> list[NodeShape] | None:
    """The node types the cluster's autoscaler can add, or None when they cannot be read."""
    reported = _reported_node_types()
    return reported if reported is not None else _monitor_config_node_types()


def check_trial_fits(resources, log=print) -> None:
    """Refuse (ConfigError) a trial whose Train worker fits on no node the cluster has or can add."""
    bundle = worker_bundle(resources)
    alive = alive_shapes()
    if any(fits(bundle, node.resources) for node in alive):
        return
    node_types = autoscaler_node_types()
    if node_types is not None and any(fits(bundle, node.resources) for node in node_types):
        return
    need = ", ".join(f"{amount:g} {name}" for name, amount in bundle.items())
    largest = max(alive, key=lambda n: n.resources.get("CPU", 0.0), default=None)
    have = f"its largest node has {largest.resources.get('CPU', 0.0):g} CPU, {largest.resources.get('GPU', 0.0):g} GPU" \
        if largest else "it has no node"
    if node_types is None:
        log(f"warning: no node of the cluster fits a Train worker ({need}; {have}), and its autoscaler's node "
            f"types could not be read: trials wait until a node that fits joins")
        return
    types = "; ".join(f"{t.name}: {t.resources.get('CPU', 0.0):g} CPU, {t.resources.get('GPU', 0.0):g} GPU" for t in node_types)
    field = "resources.use_gpu" if "GPU" in bundle and not any(t.resources.get("GPU") for t in [*alive, *node_types]) \
        else "resources.cpus_per_worker"
    raise ConfigError(field, f"a Train worker needs {need} on one node; {have} and the autoscaler's node types "
                             f"are [{types}]", "lower it to what a node type has, or add a node type that fits")
