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
