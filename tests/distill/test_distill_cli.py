import json
import subprocess
import sys
from pathlib import Path

import pytest

from study.distill.cli import main

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "study.distill", *args], cwd=ROOT, capture_output=True, text=True)


def test_end_to_end_distillation_beats_chance(mnist_root, tmp_path, capsys):
    code = main(["--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path), "--teacher", "cnn_1",
                 "--teacher-step", "50", "--student", "mlp_1", "--alpha", "0.5", "--temperature", "4",
                 "--s-kl", "1", "--s-fm", "1", "--epochs", "2", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"] == "type_2" and report["teacher_0_step"] == 50
    assert report["test_clean_acc"] > 0.3  # 10 classes: chance is 0.1
    assert 0.0 <= report["test_translated_acc"] <= 1.0 and len(report["test_acc_per_shift"]) == 33
    assert list((tmp_path / "teachers" / "mnist" / "cnn_1" / "seed-0").glob("step-000050.outputs-*.pt"))


def test_no_teacher_run(mnist_root, tmp_path, capsys):
    assert main(["--data-root", str(mnist_root), "--output-dir", str(tmp_path), "--teacher", "none",
                 "--epochs", "1", "--student", "mlp_2"]) == 0
    assert "no_kd" in capsys.readouterr().out
    assert not (tmp_path / "teachers").exists()


@pytest.mark.parametrize("args,message", [
    (["--teacher-step", "75"], "not a snapshot step"),
    (["--teacher", "resnet"], "valid teachers are"),
    (["--alpha", "2"], "alpha=2.0 is out of range [0, 1]"),
])
def test_bad_input_is_one_line_error(mnist_root, tmp_path, args, message):
    result = run_cli("--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path), *args)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_is_one_line_error(tmp_path):
    result = run_cli("--data-root", str(tmp_path / "nothing"), "--no-download", "--dataset", "fashion_mnist")
    assert result.returncode == 2 and "fashion_mnist not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_save_and_tracking_uri_write_the_same_loadable_student(mnist_root, mnist, tmp_path, capsys):
    """--save DIR and --tracking-uri: a state dict, a config, and one self-contained MLflow model
    (saved in DIR and logged on an MLflow run) that reproduce the run's test accuracy."""
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    from models import build_model
    from study.tracking.logged_models import tracking_uri_for_a_moment as _tracking_uri

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path), "--teacher", "none",
                 "--student", "mlp_2", "--epochs", "1", "--train-subset", "300", "--save", str(tmp_path / "student"),
                 "--tracking-uri", uri, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tolerance = 1.5 / len(mnist.test_y)  # argmax ties under another batch size: at most one image

    def accuracy(model, images):
        with torch.no_grad():
            return (model(images).argmax(1) == mnist.test_y).float().mean().item()

    saved = tmp_path / "student"
    config = json.loads((saved / "config.json").read_text())
    assert config["student"] == "mlp_2" and config["variant"] == "no_kd" and config["input_shape"] == [1, 28, 28]
    student = build_model("mlp_2", (1, 28, 28), 10).eval()
    student.load_state_dict(torch.load(saved / "student.pt", weights_only=True))
    assert abs(accuracy(lambda x: student(x).logits, mnist.test_x) - report["test_clean_acc"]) <= tolerance
    from_folder = mlflow.pytorch.load_model(str(saved / "mlflow_model"))
    assert abs(accuracy(from_folder, mnist.test_x.flatten(1)) - report["test_clean_acc"]) <= tolerance

    client = MlflowClient(uri)
    run = client.get_run(report["mlflow_run_id"])
    assert client.get_experiment(run.info.experiment_id).name == "distill"
    assert run.info.status == "FINISHED" and run.data.tags["leveled_kd.kind"] == "distill"
    assert run.data.params["student"] == "mlp_2" and run.data.params["variant"] == "no_kd"
    assert run.data.metrics["test_clean_acc"] == pytest.approx(report["test_clean_acc"])
    assert "test_acc_shift/dx_2_dy_0" in run.data.metrics
    assert report["mlflow_model_uri"] == f"runs:/{run.info.run_id}/model"
    with _tracking_uri(uri):
        logged = mlflow.pytorch.load_model(report["mlflow_model_uri"])
    assert abs(accuracy(logged, mnist.test_x.flatten(1)) - report["test_clean_acc"]) <= tolerance


def test_experiment_flag_chooses_the_mlflow_experiment(mnist_root, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path), "--teacher", "none",
                 "--student", "mlp_2", "--epochs", "1", "--train-subset", "200", "--tracking-uri", uri,
                 "--experiment", "my-runs", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    client = MlflowClient(uri)
    assert client.get_run(report["mlflow_run_id"]).info.experiment_id == \
        client.get_experiment_by_name("my-runs").experiment_id
    assert "saved" not in report  # no --save: nothing written but the run


def test_unreachable_tracking_server_fails_before_training(mnist_root, tmp_path):
    from study.testing import free_port

    result = run_cli("--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path), "--teacher",
                     "none", "--epochs", "1", "--tracking-uri", f"http://127.0.0.1:{free_port()}")
    assert result.returncode != 0 and "cannot reach the MLflow tracking server" in result.stderr
    assert "epoch 1/1" not in result.stdout and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def shared_out(tmp_path_factory):
    """One output dir (so one teacher bank per architecture) for the KD-method and ViT runs."""
    return tmp_path_factory.mktemp("distill_methods")


@pytest.mark.parametrize("flags,variant,part", [
    (["--s-kl", "0", "--s-dkd", "1", "--dkd-beta", "4"], "dkd", "loss_dkd"),
    (["--s-kl", "0", "--s-dist", "1"], "dist", "loss_dist"),
    (["--s-kl", "0", "--s-rkd", "0.1"], "rkd", "loss_rkd"),
])
def test_registered_kd_methods_run_from_the_cli(mnist_root, shared_out, capsys, flags, variant, part):
    code = main(["--data-root", str(mnist_root), "--no-download", "--output-dir", str(shared_out), "--teacher", "cnn_1",
                 "--teacher-step", "50", "--epochs", "1", "--train-subset", "500", "--json", *flags])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"] == variant and report[f"s_{variant}"] > 0 and report["s_kl"] == 0
    assert report["test_clean_acc"] > 0.2


def test_vit_student_with_two_teachers_of_different_biases(mnist_root, shared_out, capsys):
    """The CiT setting from the CLI: a convolution and an involution teacher co-advise a ViT."""
    code = main(["--data-root", str(mnist_root), "--no-download", "--output-dir", str(shared_out),
                 "--teacher", "cnn_1,inn_1", "--teacher-step", "50,50", "--student", "vit_1", "--epochs", "1",
                 "--train-subset", "300", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["student"] == "vit_1" and report["teachers"] == "cnn_1+inn_1"
    assert report["teacher_0_weight"] == report["teacher_1_weight"]
    assert 0.0 <= report["test_translated_acc"] <= 1.0


def test_a_teacher_only_model_is_refused_as_student(mnist_root, tmp_path):
    result = run_cli("--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path),
                     "--student", "cnn_1")
    assert result.returncode == 2 and "invalid choice" in result.stderr
