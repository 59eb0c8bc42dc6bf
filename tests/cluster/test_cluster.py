"""Running the study on a Ray cluster, without a cloud: the cluster launcher files pass the checks
``ray up`` makes, a study on a multi-node Ray cluster (three nodes on 127.0.0.1) survives losing a
worker node, and the MLflow server command of ``cluster.yaml`` serves a study. Loopback only."""
from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from helpers import ROOT, run_study, study_args

from study.cluster.config import (
    ClusterConfigError,
    SharedStorageError,
    check_paths_on_every_node,
    check_shared_storage,
    validate_cluster_config,
)
from study.run import ray_tmpdir
from study.testing import free_port, raylet_pid, running_trial_on_a_worker, runs_of, trial_results

#: Under pytest-xdist (scripts/test.sh runs two workers) this module's tests share one worker: they share
#: one module-scoped 3-node cluster, and two such clusters at once would only compete for the same cores.
pytestmark = pytest.mark.xdist_group("ray-cluster")

CLUSTER_FILES = ["cluster.yaml", "cluster.local.yaml"]
MLFLOW_SCRIPT = "scripts/start_mlflow_server.sh"


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def write(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- a. the launcher files


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_files_pass_the_checks_of_ray_up(name):
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(name)
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    prepared = prepare_config(copy.deepcopy(config))  # offline: provider defaults, node types, worker counts
    validate_config(prepared)
    assert validate_cluster_config(ROOT / name) == prepared


def test_aws_cluster_has_a_cpu_head_gpu_workers_and_shared_state():
    config = validate_cluster_config(ROOT / "cluster.yaml")
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head runs the driver and MLflow, no trials
    (gpu_type,) = [t for name, t in types.items() if name != config["head_node_type"]]
    assert gpu_type["resources"]["GPU"] >= 1 and gpu_type["node_config"]["InstanceType"].startswith("g5.")
    assert 0 < gpu_type["min_workers"] <= gpu_type["max_workers"] <= config["max_workers"]
    assert all(isinstance(v, int) for t in types.values() for v in t["resources"].values())
    assert config["file_mounts"] == {"~/leveled-kd": "."}
    setup = " ".join(config["setup_commands"])
    assert "pip install -q -e ~/leveled-kd" in setup and "/mnt/shared" in setup
    for commands in (config["head_setup_commands"], config["worker_setup_commands"]):
        text = " ".join(commands)
        assert "LEVELED_KD_BANK=/mnt/shared/" in text and "MLFLOW_TRACKING_URI=http://" in text


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_cluster_files_hold_no_secrets_and_only_placeholder_addresses(name):
    text = (ROOT / name).read_text()
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|BEGIN [A-Z ]*PRIVATE KEY|://[^/\s:@]+:[^/\s@]+@",
                         text, re.IGNORECASE)
    addresses = set(re.findall(r"\b\d{1,3}(?:\.\d{1,3}){3}\b", text))
    assert addresses <= {"0.0.0.0", "127.0.0.1"} | {a for a in addresses if a.startswith("192.0.2.")}
    if name == "cluster.local.yaml":
        provider = load(name)["provider"]
        assert provider["type"] == "local" and provider["head_ip"].startswith("192.0.2.")
        assert provider["worker_ips"] and all(ip.startswith("192.0.2.") for ip in provider["worker_ips"])


def _misspelled_key(c):
    c["max_worker"] = c.pop("max_workers")


def _fractional_gpu(c):
    c["available_node_types"]["ray.worker.gpu"]["resources"]["GPU"] = 0.5


def _unknown_head_type(c):
    c["head_node_type"] = "ray.head.gpu"


def _too_few_workers(c):
    c["max_workers"] = 0


def _unknown_provider(c):
    c["provider"]["type"] = "aws2"


@pytest.mark.parametrize("break_it, message", [
    (_misspelled_key, r"'max_worker' was unexpected"),
    (_fractional_gpu, r"available_node_types\.ray\.worker\.gpu\.resources\.GPU: 0\.5 is not of type 'integer'"),
    (_unknown_head_type, r"head_node_type.*must be one of"),
    (_too_few_workers, r"max_workers.*smaller than the sum of `min_workers`"),
    (_unknown_provider, r"provider\.type: Unsupported node provider: aws2"),
])
def test_broken_copies_are_rejected_in_one_line(tmp_path, break_it, message):
    config = load("cluster.yaml")
    break_it(config)
    path = write(tmp_path / "broken.yaml", config)
    with pytest.raises(ClusterConfigError, match=message) as error:
        validate_cluster_config(path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_local_config_without_addresses_is_rejected(tmp_path):
    config = load("cluster.local.yaml")
    del config["provider"]["worker_ips"]
    with pytest.raises(ClusterConfigError, match="head_ip.*worker_ips"):
        validate_cluster_config(write(tmp_path / "local.yaml", config))


def test_command_line_checks_files_and_reports_bad_yaml_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("cluster_name: x\nprovider: {type: aws\n")
    command = [sys.executable, "-m", "study.cluster.config"]
    ok = subprocess.run([*command, "cluster.yaml", "cluster.local.yaml"], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "cluster.yaml: ok (provider aws" in ok.stdout and "cluster.local.yaml: ok (provider local" in ok.stdout
    assert "replace the CHANGE-ME placeholders" in ok.stdout  # the AMI, EFS and bucket to fill in
    failed = subprocess.run([*command, str(bad)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert failed.returncode != 0
    assert failed.stderr.startswith(f"error: {bad}: not valid YAML at line 3") and failed.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- b. a multi-node study


@pytest.fixture(scope="module")
def local_cluster():
    """A head (no CPUs, like cluster.yaml's) and two 1-CPU worker nodes, all on 127.0.0.1."""
    from ray.cluster_utils import Cluster

    temp_dir = tempfile.mkdtemp(prefix="lkd-cluster-", dir="/tmp")  # short: Ray's socket paths must fit
    # A lost node is declared dead after 3 missed 1-second health checks instead of Ray's default ~30 s.
    fast_failure_detection = {"health_check_period_ms": 1000, "health_check_timeout_ms": 1000,
                              "health_check_failure_threshold": 3}
    with pytest.MonkeyPatch.context() as env:
        # this cluster's address file goes to its own folder, not to the one local studies use
        env.setenv("RAY_TMPDIR", temp_dir)
        ray_tmpdir()
        cluster = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=0, node_ip_address="127.0.0.1", include_dashboard=False, temp_dir=temp_dir,
            _system_config=fast_failure_detection))
        workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
        cluster.wait_for_nodes()
        try:
            yield cluster, workers
        finally:
            cluster.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow
def test_shared_storage_check_names_a_path_a_node_cannot_see(local_cluster, tmp_path):
    import ray

    cluster, _ = local_cluster
    ray.init(address=cluster.address, log_to_driver=False, logging_level="WARNING")
    try:
        assert check_paths_on_every_node({"--output-dir": str(tmp_path)}) == 3
        with pytest.raises(SharedStorageError, match=r"--output-dir /somewhere is not on storage every node "
                                                     r"shares: node 127\.0\.0\.1 \(\w+\) cannot see it"):
            check_paths_on_every_node({"--output-dir /somewhere": str(tmp_path / "only-on-the-driver")})
        check_shared_storage({"--output-dir": tmp_path / "runs"})  # one machine: shared
        assert not list((tmp_path / "runs").iterdir())  # its markers are removed
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_multi_node_study_survives_losing_a_worker_node(local_cluster, mnist_root, bank_dir, tmp_path):
    cluster, workers = local_cluster
    epochs, planned = 3, 4  # 3 search trials + the no-KD baseline
    args = study_args(mnist_root, bank_dir, tmp_path, "--address", cluster.address, "--num-samples", "3",
                      "--max-epochs", str(epochs), "--train-subset", "1200", "--no-asha", "--max-failures", "2")
    driver = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    tune_dir = tmp_path / "studies" / "leveled_kd-mnist" / "tune"
    raylets = {raylet_pid(node): node for node in workers}
    victim = None
    try:
        deadline = time.time() + 300
        while victim is None and driver.poll() is None and time.time() < deadline:
            victim = running_trial_on_a_worker(tune_dir, raylets, epochs)
            time.sleep(0.1)
        assert victim is not None, "no trial result on a worker node before the study ended"
        trial_dir, node = victim
        cluster.remove_node(node, allow_graceful=False)  # a crash: the node's raylet and workers are killed
        output, _ = driver.communicate(timeout=400)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode == 0, output[-4000:]

    # Tune saw the failure and retried the trial from its checkpoint on the surviving node
    assert (trial_dir / "error.txt").is_file(), output[-4000:]
    results = trial_results(trial_dir)
    pids = list(dict.fromkeys(r["pid"] for r in results))
    assert len(pids) >= 2 and results[-1]["training_iteration"] == epochs
    first_after_retry = next(r for r in results if r["pid"] == pids[-1])
    assert first_after_retry["training_iteration"] > 1, "restarted from scratch, not from its checkpoint"

    # every planned trial finished, each logged to MLflow exactly once
    _, runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "leveled_kd-mnist")
    trials = runs["trial"]
    ids = [t.data.tags["leveled_kd.trial_id"] for t in trials]
    assert len(ids) == planned and len(set(ids)) == planned
    assert set(ids) == {d.name.removeprefix("trial_") for d in tune_dir.glob("trial_*")}
    assert all(t.data.tags["state"] == "completed" and t.info.status == "FINISHED" for t in trials)
    (lost,) = [t for t in trials if t.data.tags["leveled_kd.trial_id"] == trial_dir.name.removeprefix("trial_")]
    assert int(lost.data.tags["retries"]) >= 1
    assert len(runs["study"]) == 1 and len(runs["teacher"]) == 1
    state = json.loads((tmp_path / "studies" / "leveled_kd-mnist" / "study.json").read_text())
    assert state["status"] == "finished"


# ----------------------------------------------------------------------------- c. the MLflow server


def mlflow_server_command(config: dict) -> list[str]:
    (line,) = [c for c in config["head_start_ray_commands"] if MLFLOW_SCRIPT in c]
    return shlex.split(line)


@pytest.mark.parametrize("name", CLUSTER_FILES)
def test_mlflow_server_command_matches_the_tracking_uri_of_the_nodes(name):
    config = load(name)
    script, host, port, store, artifacts, *_ = mlflow_server_command(config)
    mount = next(remote for remote, local in config["file_mounts"].items() if local == ".")
    assert script == f"{mount}/{MLFLOW_SCRIPT}"
    assert host == "0.0.0.0" and store.startswith("sqlite:///") and artifacts
    head_env = " ".join(config["head_setup_commands"])
    worker_env = " ".join(config["worker_setup_commands"])
    assert f"MLFLOW_TRACKING_URI=http://127.0.0.1:{port}" in head_env  # the driver runs on the head
    assert f"MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:{port}" in worker_env


@pytest.mark.slow
def test_mlflow_server_from_cluster_yaml_serves_a_study(mnist_root, bank_dir, tmp_path):
    _, host, port, store, artifacts, *flags = mlflow_server_command(load("cluster.yaml"))
    assert artifacts.startswith("s3://")  # locally: the same command with a directory instead
    local_port = free_port()
    script = str(ROOT / MLFLOW_SCRIPT)
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
               MLFLOW_SERVER_STATE_DIR=str(tmp_path / "server"))
    try:
        started = subprocess.run([script, "127.0.0.1", str(local_port), f"sqlite:///{tmp_path / 'server.db'}",
                                  str(tmp_path / "artifacts"), *flags, "--workers", "1"],
                                 env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stderr[-2000:]
        uri = f"http://127.0.0.1:{local_port}"
        # as on the cluster's head: the driver finds the server through $MLFLOW_TRACKING_URI
        result = run_study(*study_args(mnist_root, bank_dir, tmp_path / "out", "--num-samples", "1",
                                       "--max-epochs", "1", "--keep-best", "1"),
                           env=dict(os.environ, MLFLOW_TRACKING_URI=uri))
        assert result.returncode == 0, result.stderr[-3000:]
        assert not (tmp_path / "out" / "mlflow.db").exists()
        client, runs = runs_of(uri, "leveled_kd-mnist")
        assert len(runs["study"]) == 1 and len(runs["teacher"]) == 1 and len(runs["trial"]) == 2
        parent = runs["study"][0].info.run_id
        assert any(a.path == "reports/trials.csv" for a in client.list_artifacts(parent, "reports"))
        # uploaded through the server (--serve-artifacts) into its artifacts destination
        assert list((tmp_path / "artifacts").rglob("trials.csv"))
    finally:
        subprocess.run([script, "--stop", str(local_port)], env=env, timeout=60)
    assert not (tmp_path / "server" / f"mlflow-{local_port}.pid").exists()


def test_mlflow_server_script_usage_error():
    result = subprocess.run([str(ROOT / MLFLOW_SCRIPT), "127.0.0.1"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and result.stderr.startswith("usage:")
