import json
import subprocess
import sys
from pathlib import Path

import pytest

from study.distill import main

ROOT = Path(__file__).resolve().parents[1]


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
    (["--teacher", "resnet"], "valid choices"),
    (["--alpha", "2"], "alpha must be in [0, 1]"),
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
