"""The example project of docs/byo.md (examples/byo/), end to end at a tiny size: the test makes
the image folder and trains the teacher's checkpoint series with the example's own scripts, then
runs the example's space file unchanged: a user dataset, a user student and a pretrained teacher
bank, with no edit of the package. The best student then loads from MLflow in a fresh process that
never imported the example's models."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from helpers import ROOT, run_study

pytestmark = pytest.mark.slow

EXAMPLE = ROOT / "examples" / "byo"


def run(command, cwd, timeout=600):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_the_example_project_runs_end_to_end(tmp_path):
    project = tmp_path / "byo"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("data", "checkpoints", "runs", "__pycache__"))
    run([sys.executable, "make_shapes.py", "--train", "30", "--test", "10"], project)
    trained = run([sys.executable, "train_teacher.py", "--batch-size", "32"], project)
    assert "step 300" in trained.stdout and (project / "checkpoints" / "shapes_cnn-step-000300.pt").is_file()

    out = tmp_path / "runs"
    space = str(project / "shapes_kd.yaml")
    listed = run_study(sys.executable, "run_study.py", "--space", space, "--list-keys")
    assert listed.returncode == 0, listed.stderr
    assert "shapes_mlp" in listed.stdout and "pretrained my_cnn" in listed.stdout
    result = run_study(sys.executable, "run_study.py", "--space", space, "--output-dir", str(out), "--max-epochs", "1",
                       "--set", "variant=normal_kd", "--num-cpus", "2", "--keep-best", "1", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pretrained teacher" not in result.stderr or "near chance" not in result.stderr

    study = out / "studies" / "shapes_kd-shapes"
    table = pd.read_csv(study / "reports" / "trials.csv")
    assert len(table) == 3 and set(table["state"]) == {"completed"}  # the grid's 2 snapshots + no KD
    kd = table[table["variant"] == "normal_kd"]
    assert set(kd["teachers"]) == {"my_cnn"} and set(kd["teacher_step"]) == {100, 300}
    assert set(table["student"]) == {"shapes_mlp"} and kd["teacher_test_translated_acc"].notna().all()
    manifest = json.loads((out / "teachers" / "shapes" / "my_cnn" / "seed-0" / "manifest.json").read_text())
    assert manifest["pretrained"]["arch"] == "shapes_cnn" and sorted(manifest["snapshots"]) == ["100", "300"]
    assert manifest["snapshots"]["300"]["source"] == str(project / "checkpoints" / "shapes_cnn-step-000300.pt")
    plan = json.loads((study / "study.json").read_text())["plan"]
    assert plan["dataset"] == "shapes" and plan["plugins"] == [str(project / "shapes_models.py")]

    # the best student, from MLflow, in a process that never imported shapes_models
    load = ("import mlflow.pytorch, torch; mlflow.set_tracking_uri('sqlite:///{db}'); "
            "m = mlflow.pytorch.load_model('models:/leveled-kd-shapes_kd-shapes@best'); "
            "print(type(m.model).__name__, m(torch.zeros(2, 3, 32, 32)).shape)").format(db=out / "mlflow.db")
    loaded = run([sys.executable, "-c", load], tmp_path)
    assert loaded.stdout.split() == ["ShapesMLP", "torch.Size([2,", "4])"]

    # a second study whose teacher is the model the first one registered in MLflow (models:/...@best)
    second = project / "from_mlflow.yaml"
    second.write_text(f"""description: a teacher registered by an earlier study
imports: [shapes_models.py]
dataset: {{image_folder: data/shapes, name: shapes, mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5]}}
pretrained:
  earlier_best: {{model_uri: "models:/leveled-kd-shapes_kd-shapes@best", tracking_uri: "sqlite:///{out / 'mlflow.db'}"}}
sampler: grid
scheduler: none
fixed: {{student: shapes_mlp, teachers: earlier_best, variant: normal_kd, temperature: 4.0, alpha: 0.5}}
""")
    out2 = tmp_path / "runs2"
    result = run_study(sys.executable, "run_study.py", "--space", str(second), "--output-dir", str(out2),
                       "--max-epochs", "1", "--num-cpus", "2", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out2 / "studies" / "from_mlflow-shapes" / "reports" / "trials.csv")
    assert len(table) == 2 and set(table["state"]) == {"completed"}  # the one configuration + no KD
    assert set(table.loc[table["variant"] == "normal_kd", "teachers"]) == {"earlier_best"}
    manifest = json.loads((out2 / "teachers" / "shapes" / "earlier_best" / "seed-0" / "manifest.json").read_text())
    (record,) = manifest["snapshots"].values()
    assert record["source"] == "models:/leveled-kd-shapes_kd-shapes@best" and len(record["sha256"]) == 64


CIFAR_EXAMPLE = ROOT / "examples" / "cifar10_resnet18"


def write_cifar_like_folder(root, per_class=(6, 3)):
    """A tiny CIFAR-10-shaped image folder: 10 classes of 32x32 RGB PNGs, each class a colour."""
    import torch
    from torchvision.io import encode_png

    g = torch.Generator().manual_seed(0)
    classes = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
    for split, n in zip(("train", "test"), per_class):
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                image = torch.randint(0, 80, (3, 32, 32), dtype=torch.uint8, generator=g)
                image[c % 3, 8:24, 8:24] += 20 * c + 40
                (folder / f"{i:04d}.png").write_bytes(encode_png(image).numpy().tobytes())


def test_the_cifar10_resnet18_example_runs_end_to_end(tmp_path):
    """examples/cifar10_resnet18 unchanged: a torchvision ResNet-18 checkpoint (made here by the
    example's own training script) as a pretrained teacher, the example's own student, and an image
    folder; KL, feature matching on the ResNet's layer4, and both."""
    project = tmp_path / "cifar"
    shutil.copytree(CIFAR_EXAMPLE, project, ignore=shutil.ignore_patterns("data", "checkpoints", "runs", "__pycache__"))
    write_cifar_like_folder(project / "data" / "cifar10")
    trained = run([sys.executable, "train_teacher.py", "--steps", "3", "--batch-size", "8"], project)
    checkpoint = project / "checkpoints" / "resnet18-cifar10.pt"
    assert "step 3:" in trained.stdout and checkpoint.is_file()

    out = tmp_path / "runs"
    space = str(project / "resnet18_kd.yaml")
    result = run_study(sys.executable, "run_study.py", "--space", space, "--output-dir", str(out), "--max-epochs", "1",
                       "--num-cpus", "2", "--quiet")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / "studies" / "resnet18_kd-cifar10_folder" / "reports" / "trials.csv")
    assert len(table) == 4 and set(table["state"]) == {"completed"}  # 3 variants + no KD
    kd = table[table["variant"] != "no_kd"]
    assert set(kd["variant"]) == {"normal_kd", "type_1", "type_2"} and set(kd["teachers"]) == {"my_resnet18"}
    assert set(table["student"]) == {"bottleneck_mlp"} and kd["teacher_test_translated_acc"].notna().all()
    manifest = json.loads((out / "teachers" / "cifar10_folder" / "my_resnet18" / "seed-0" / "manifest.json").read_text())
    assert manifest["pretrained"]["arch"] == "resnet18" and list(manifest["snapshots"]) == ["1"]
    assert manifest["snapshots"]["1"]["source"] == str(checkpoint) and len(manifest["snapshots"]["1"]["sha256"]) == 64
