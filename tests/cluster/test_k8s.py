"""The Kubernetes manifests (``k8s/``) without a cluster: every manifest passes the schema the API
server would check it against (KubeRay's RayJob CRD, Kubernetes' own schemas, vendored in
``k8s/schemas/``, no network), broken copies are refused, and the pieces fit together (MLflow only
inside the cluster, one shared volume at one path everywhere, GPUs where the trials run)."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

K8S = ROOT / "k8s"
SCHEMAS = K8S / "schemas"
SCHEMA_FILES = {("ray.io/v1", "RayJob"): "rayjob-ray-v1.json", ("apps/v1", "Deployment"): "deployment-apps-v1.json",
                ("v1", "Service"): "service-v1.json", ("v1", "PersistentVolumeClaim"): "persistentvolumeclaim-v1.json",
                ("v1", "ConfigMap"): "configmap-v1.json"}
SHARED_MOUNT = "/mnt/shared"


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[tuple[str, dict]]:
    """(file:index kind/name, document) for every YAML document of every manifest."""
    out = []
    for path in manifest_files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                out.append((f"{path.name} {doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def by_kind(kind: str) -> list[dict]:
    return [doc for _, doc in documents() if doc["kind"] == kind]


def schema_errors(doc: dict) -> list[str]:
    """What the vendored schema of ``doc``'s apiVersion and kind says is wrong with it (empty: valid)."""
    import jsonschema

    key = (doc.get("apiVersion"), doc.get("kind"))
    if key not in SCHEMA_FILES:
        return [f"no schema vendored for {key}"]
    schema = json.loads((SCHEMAS / SCHEMA_FILES[key]).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]


@pytest.mark.parametrize("name,doc", documents(), ids=[name for name, _ in documents()])
def test_every_manifest_passes_its_schema(name, doc):
    assert schema_errors(doc) == []


BROKEN = {
    "RayJob worker group with a misspelled key": ("RayJob", lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
                                                   .__setitem__("replica", 1)),
    "RayJob rayStartParams value not a string": ("RayJob", lambda d: d["spec"]["rayClusterSpec"]["headGroupSpec"]
                                                  ["rayStartParams"].__setitem__("num-cpus", 0)),
    "RayJob worker container with a misspelled resources key": (
        "RayJob", lambda d: d["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
        ["resources"].__setitem__("limit", {"cpu": "1"})),
    "RayJob without an entrypoint type": ("RayJob", lambda d: d["spec"].__setitem__("entrypoint", ["python"])),
    "Deployment container port as a string": ("Deployment", lambda d: d["spec"]["template"]["spec"]["containers"][0]
                                              ["ports"][0].__setitem__("containerPort", "5000")),
    "Deployment with an unknown field": ("Deployment", lambda d: d["spec"].__setitem__("replica", 1)),
    "Service port missing": ("Service", lambda d: d["spec"]["ports"][0].pop("port")),
    "PersistentVolumeClaim access modes not a list": ("PersistentVolumeClaim",
                                                      lambda d: d["spec"].__setitem__("accessModes", "ReadWriteMany")),
    "ConfigMap value not a string": ("ConfigMap", lambda d: d["data"].__setitem__("LEVELED_KD_BANK", 5)),
    "wrong apiVersion": ("Deployment", lambda d: d.__setitem__("apiVersion", "apps/v1beta1")),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_manifest_is_refused(case):
    kind, breaks = BROKEN[case]
    doc = copy.deepcopy(by_kind(kind)[0])
    assert schema_errors(doc) == []
    breaks(doc)
    assert schema_errors(doc), f"{case}: the schema accepted a broken {kind}"


def test_kustomization_applies_every_manifest_into_one_namespace():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization" and kustomization["namespace"] == "leveled-kd"
    assert sorted(kustomization["resources"]) == [p.name for p in manifest_files()]
    assert {(d["apiVersion"], d["kind"]) for _, d in documents()} == set(SCHEMA_FILES)


def test_vendored_schemas_name_their_source_and_version():
    readme = (SCHEMAS / "README.md").read_text()
    for name in SCHEMA_FILES.values():
        assert name in readme
    assert "ray-project/kuberay" in readme and "v1.7.0" in readme and "v1.30.0" in readme


# ----------------------------------------------------------------------------- how the pieces fit


def pod_specs(job: dict) -> dict[str, dict]:
    spec = job["spec"]["rayClusterSpec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return pods


def test_mlflow_is_reachable_only_inside_the_cluster():
    (service,) = by_kind("Service")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    text = yaml.safe_dump_all([doc for _, doc in documents()])  # what is applied, without the comments
    assert not re.search(r"LoadBalancer|NodePort|hostPort|hostNetwork|kind: Ingress", text)
    (job,) = by_kind("RayJob")
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"].get("serviceType", "ClusterIP") == "ClusterIP"
    (config,) = by_kind("ConfigMap")
    uri = config["data"]["MLFLOW_TRACKING_URI"]
    assert uri == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"
    (deployment,) = by_kind("Deployment")
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert service["spec"]["ports"][0]["targetPort"] in [p["name"] for p in container["ports"]]
    env = {e["name"]: e["value"] for e in container["env"]}
    allowed = env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert f"{service['metadata']['name']}:*" in allowed  # the Host header pods send ("mlflow:5000")
    assert "--host=0.0.0.0" in container["args"] and "--serve-artifacts" in container["args"]


def test_shared_volume_is_read_write_many_and_mounted_at_one_path_on_every_ray_node():
    claims = {c["metadata"]["name"]: c for c in by_kind("PersistentVolumeClaim")}
    (job,) = by_kind("RayJob")
    for group, pod in pod_specs(job).items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        (container,) = pod["containers"]
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        claim = volumes[mounts[SHARED_MOUNT]]["persistentVolumeClaim"]["claimName"]
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"], group
        assert {"name": "leveled-kd-env"} in [e["configMapRef"] for e in container["envFrom"]], group
    entrypoint = job["spec"]["entrypoint"]
    for flag in ("--output-dir", "--bank-dir", "--data-root"):
        assert re.search(rf"{flag} {SHARED_MOUNT}/", entrypoint), flag
    (config,) = by_kind("ConfigMap")
    assert config["data"]["LEVELED_KD_BANK"].startswith(SHARED_MOUNT + "/")


def test_trials_run_on_gpu_workers_and_the_head_runs_none():
    (job,) = by_kind("RayJob")
    spec = job["spec"]["rayClusterSpec"]
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head["resources"].get("limits", {})
    (gpu,) = spec["workerGroupSpecs"]
    worker = gpu["template"]["spec"]
    assert worker["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] >= 1
    assert any(t["key"] == "nvidia.com/gpu" for t in worker["tolerations"])
    assert 0 <= gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    assert "--gpus-per-trial 0.25" in job["spec"]["entrypoint"] and "--address auto" in job["spec"]["entrypoint"]
    assert job["spec"]["shutdownAfterJobFinishes"] is True and job["spec"]["activeDeadlineSeconds"] > 0


def test_versions_match_pyproject_and_the_image_has_the_project():
    pins = dict(re.findall(r'"([a-z\[\]]+)==([0-9.*]+)"', (ROOT / "pyproject.toml").read_text()))
    ray_pin, mlflow_pin = pins["ray[tune]"].rstrip(".*"), pins["mlflow"].rstrip(".*")
    (job,) = by_kind("RayJob")
    assert job["spec"]["rayClusterSpec"]["rayVersion"].startswith(ray_pin)
    (deployment,) = by_kind("Deployment")
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].split(":v")[1].startswith(mlflow_pin)
    dockerfile = (K8S / "Dockerfile").read_text()
    assert f'"ray[default]=={pins["ray[tune]"]}"' in dockerfile
    for line in re.findall(r"^COPY (.+) \S+$", dockerfile, re.MULTILINE):
        for source in line.split():
            assert (ROOT / source).exists(), source
