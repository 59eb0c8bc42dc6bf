"""Ray cluster support: check a cluster launcher YAML offline, and check shared storage at run time.

    python -m study.cluster.config cluster.yaml [cluster.local.yaml ...]

:func:`validate_cluster_config` runs the checks ``ray up`` runs before it talks
to a cloud: the JSON schema of Ray's cluster launcher (``ray/autoscaler/ray-schema.json``),
then Ray's own ``prepare_config`` (merge with the provider's defaults, setup
commands, per-node-type worker counts; on-premises configs get their single
node type) and ``validate_config``. The provider's ``bootstrap_config`` step
(key pairs, IAM roles, subnets, security groups) needs cloud credentials and the
network, so it is not run: a config that passes here can still be refused by the
cloud, e.g. for a quota or a wrong AMI.

:func:`check_shared_storage` is run by the study driver on a multi-node cluster:
every node must see the Tune experiment directory and the teacher banks at the
same path (Ray >= 2.7 no longer syncs trial directories to the head node).
"""
from __future__ import annotations

import copy
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from study.errors import UserError

#: Marker that the shipped cluster files use for values a user must replace before ``ray up``.
PLACEHOLDER = "CHANGE-ME"


class ClusterConfigError(UserError, ValueError):
    """A cluster YAML that ``ray up`` would refuse; the message is one line."""


class SharedStorageError(UserError, ValueError):
    """A path the study needs on every node is not on storage that every node shares."""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _where(error) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return path or "(top level)"


def load_cluster_config(path: str | os.PathLike) -> dict[str, Any]:
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ClusterConfigError(f"{path}: cannot read it ({error.strerror or error})") from None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ClusterConfigError(f"{path}: not valid YAML{where}: {_one_line(problem)}") from None
    if not isinstance(config, dict):
        raise ClusterConfigError(f"{path}: a cluster config is a mapping of keys (cluster_name, provider, ...), "
                                 f"not a {type(config).__name__}")
    return config


def validate_cluster_config(path: str | os.PathLike) -> dict[str, Any]:
    """Check ``path`` the way ``ray up`` does before contacting a provider; returns the prepared config.

    Raises :class:`ClusterConfigError` with a one-line message naming the file and the offending key.
    """
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    path = Path(path)
    config = load_cluster_config(path)
    with open(Path(ray.autoscaler.__file__).parent / "ray-schema.json") as f:
        schema = json.load(f)
    # 1. the raw file against the launcher's schema (catches misspelled keys and fractional resources)
    error = jsonschema.exceptions.best_match(jsonschema.Draft7Validator(schema).iter_errors(config))
    if error is not None:
        raise ClusterConfigError(f"{path}: {_where(error)}: {_one_line(error.message)}")
    # 2. what `ray up` does next, offline: provider defaults, node types, then the same schema and
    #    consistency checks again (head_node_type, sum of min_workers <= max_workers, ...)
    try:
        prepared = _quietly(prepare_config, copy.deepcopy(config))
        validate_config(prepared)
    except jsonschema.ValidationError as error:
        raise ClusterConfigError(f"{path}: after merging Ray's defaults for provider "
                                 f"{config['provider'].get('type')!r}: {_where(error)}: "
                                 f"{_one_line(error.message)}") from None
    except NotImplementedError as error:  # unknown provider type
        raise ClusterConfigError(f"{path}: provider.type: {_one_line(error)}") from None
    except Exception as error:  # ValueError, AssertionError, click's abort of on-premises configs, ...
        raise ClusterConfigError(f"{path}: {_one_line(str(error) or type(error).__name__)}") from None
    return prepared


def _quietly(function, *args):
    """Ray's config helpers print through ``cli_logger`` (warnings, aborts) and log at INFO level
    ("setting max workers for head node type to 0"); keep the output to our one line."""
    import contextlib
    import io
    import logging

    log = logging.getLogger("ray.autoscaler")
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return function(*args)
    finally:
        log.setLevel(level)


def placeholders(config: Any, trail: str = "") -> list[str]:
    """Keys whose values still contain :data:`PLACEHOLDER` (to be replaced before ``ray up``)."""
    if isinstance(config, dict):
        return [p for k, v in config.items() for p in placeholders(v, f"{trail}.{k}" if trail else str(k))]
    if isinstance(config, list):
        return [p for i, v in enumerate(config) for p in placeholders(v, f"{trail}[{i}]")]
    return [trail] if isinstance(config, str) and PLACEHOLDER in config else []


def describe(prepared: dict[str, Any]) -> str:
    provider = prepared["provider"]["type"]
    if provider == "local" and "head_ip" in prepared["provider"]:
        return (f"provider local; head {prepared['provider']['head_ip']}; "
                f"workers {', '.join(map(str, prepared['provider'].get('worker_ips', []))) or 'none'}")
    types = prepared.get("available_node_types", {})
    head = prepared.get("head_node_type")
    workers = ", ".join(f"{name} {t.get('min_workers', 0)}-{t.get('max_workers', 0)}"
                        for name, t in types.items() if name != head)
    return f"provider {provider}; head {head}; workers {workers or 'none'}; max_workers {prepared.get('max_workers')}"


# ----------------------------------------------------------------------------- shared storage


def _missing_paths(paths: dict[str, str], attempts: int = 3) -> list[str]:
    """Runs on a node: the labels of ``paths`` that do not exist there (asked a few times, listing
    the folder in between, so that a network file system's attribute cache cannot fool it)."""
    import time

    for attempt in range(attempts):
        missing = [label for label, path in paths.items() if not os.path.exists(path)]
        if not missing or attempt == attempts - 1:
            return missing
        for label in missing:
            try:
                os.listdir(os.path.dirname(paths[label]))
            except OSError:
                pass
        time.sleep(1.0)
    return missing


def check_paths_on_every_node(paths: dict[str, str], timeout: float = 120.0) -> int:
    """Run a zero-CPU task on every alive node of the connected Ray cluster; raise
    :class:`SharedStorageError` if one of them does not see a path in ``paths`` (label -> path).
    Returns how many nodes answered (nodes that are still starting are skipped)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = ray.remote(num_cpus=0, max_retries=0)(_missing_paths)
    nodes = {probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False))
             .remote(paths): node for node in ray.nodes() if node.get("Alive")}
    ready, _ = ray.wait(list(nodes), num_returns=len(nodes), timeout=timeout)
    for ref in ready:
        try:
            missing = ray.get(ref)
        except ray.exceptions.RayError:  # the node went away meanwhile: nothing to check there
            continue
        if missing:
            node = nodes[ref]
            label = missing[0]
            raise SharedStorageError(
                f"{label} is not on storage every node shares: node "
                f"{node.get('NodeManagerAddress')} ({node['NodeID'][:8]}) cannot see it. On a multi-node cluster "
                f"put it on a mount all nodes have at the same path (NFS/EFS), e.g. --output-dir /mnt/shared/runs "
                f"and LEVELED_KD_BANK=/mnt/shared/teachers (docs/cluster.md)")
    return len(ready)


def check_shared_storage(dirs: dict[str, str | os.PathLike], timeout: float = 120.0) -> None:
    """Fail fast, before any GPU time is spent, when a directory the trials or teacher tasks write
    (label -> directory) is local to the driver's node. A no-op on a one-node cluster."""
    import ray

    if sum(1 for node in ray.nodes() if node.get("Alive")) < 2:
        return
    token = uuid.uuid4().hex[:12]
    markers = {}
    try:
        for label, directory in dirs.items():
            directory = Path(directory)
            directory.mkdir(parents=True, exist_ok=True)
            marker = directory / f".leveled-kd-shared-{token}"
            marker.write_text(token)
            markers[f"{label} {directory}"] = str(marker)
        check_paths_on_every_node(markers, timeout)
    finally:
        for marker in markers.values():
            Path(marker).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m study.cluster.config",
                                description="Check Ray cluster launcher YAML files offline (what `ray up` "
                                            "checks before it contacts a cloud).")
    p.add_argument("files", nargs="+", metavar="CLUSTER_YAML")
    args = p.parse_args(argv)
    status = 0
    for path in args.files:
        try:
            prepared = validate_cluster_config(path)
        except ClusterConfigError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 2
            continue
        print(f"{path}: ok ({describe(prepared)})")
        todo = placeholders(load_cluster_config(path))
        if todo:
            print(f"{path}: replace the {PLACEHOLDER} placeholders before `ray up`: {', '.join(todo)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
