"""Bad input to both command lines is one line on stderr and exit code 2, fast, before anything is
created; a bug in the project (any other exception) keeps its traceback.

Most cases call ``main()`` in-process through ``study.errors.run_cli`` (what the scripts run); a few
run the real scripts, to check what a user sees: the exit code, no traceback, no Ray log lines.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from helpers import ROOT

import run_study
from study.distill import cli as distill
from study.errors import run_cli
from study.testing import free_port


def _bank_manifest(bank_dir, content: str) -> None:
    folder = bank_dir / "mnist" / "cnn_1" / "seed-0"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(content)


def _corrupt_snapshot(output_dir) -> None:
    """A bank whose manifest lists step 50, but whose weights file does not match its sha256."""
    folder = output_dir / "teachers" / "mnist" / "cnn_1" / "seed-0"
    folder.mkdir(parents=True)
    (folder / "step-000050.pt").write_bytes(b"not torch weights")
    record = {"file": "step-000050.pt", "sha256": "0" * 64, "clean_acc": 0.5, "translated_acc": 0.2,
              "eval_images": 10}
    (folder / "manifest.json").write_text(json.dumps({"format": 2, "snapshots": {"50": record}}))


def _bad_yaml(tmp) -> str:
    path = tmp / "broken.yaml"
    path.write_text("description: x\nparams: {alpha: {float: [0, 1]}\n")
    return str(path)


def _unknown_section(tmp) -> str:
    path = tmp / "odd.yaml"
    path.write_text("description: x\nsampler: tpe\nfixed: {teachers: cnn_1}\nsearch_me: {}\n")
    return str(path)


def _dead_port(_tmp) -> str:
    return str(free_port())


def _plugin(tmp, text: str, name: str = "lkd_bad_plugin") -> str:
    path = tmp / f"{name}.py"
    path.write_text(text)
    return str(path)


def _space(tmp, text: str) -> str:
    """A space file of one's own in ``tmp`` (the study's tiny teacher: no training is reached)."""
    path = tmp / "mine.yaml"
    path.write_text("description: mine\n" + text)
    return str(path)


def _odd_folder(tmp) -> str:
    """An image folder whose images do not share one size."""
    from torchvision.io import encode_png

    for split in ("train", "test"):
        for i, size in enumerate((8, 8, 9)):
            folder = tmp / "odd" / split / f"c{i % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.png").write_bytes(encode_png(__import__("torch").zeros(3, size, size, dtype=__import__("torch").uint8)).numpy().tobytes())
    return str(tmp / "odd")


def _checkpoint(tmp, arch: str = "mlp_2") -> str:
    from models import build_model

    __import__("torch").save(build_model(arch, (1, 28, 28), 10).state_dict(), tmp / "teacher.pt")
    return str(tmp / "teacher.pt")


ONE_TENSOR_STUDENT = """from torch import nn
from models import register_model

@register_model("lkd_one_tensor", roles=("student",))
class OneTensor(nn.Module):
    def __init__(self, shape, classes):
        super().__init__()
        self.fc = nn.Linear(784, classes)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""




# (id, argv builder, expected message part). Builders get tmp_path; "{data}" is the tiny MNIST root.
STUDY_CASES = [
    ("unknown-space", lambda t: ["--space", "nope", "--dry-run"], "unknown space 'nope'"),
    ("space-file-missing", lambda t: ["--space", str(t / "none.yaml"), "--dry-run"], "does not exist"),
    ("space-bad-yaml", lambda t: ["--space", _bad_yaml(t), "--dry-run"], "is not valid YAML"),
    ("space-unknown-section", lambda t: ["--space", _unknown_section(t), "--dry-run"], "unknown section"),
    ("set-out-of-range", lambda t: ["--set", "alpha=2", "--dry-run"], "out of range"),
    ("set-unknown-key", lambda t: ["--set", "learning_rate=1", "--dry-run"], "unknown key"),
    ("set-no-equals", lambda t: ["--set", "alpha", "--dry-run"], "expects key=value"),
    ("max-epochs-0", lambda t: ["--max-epochs", "0", "--dry-run"], "--max-epochs must be >= 1"),
    ("num-samples-0", lambda t: ["--num-samples", "0", "--dry-run"], "--num-samples must be >= 1"),
    ("num-samples-over-grid", lambda t: ["--space", "kd_types", "--num-samples", "999", "--dry-run"],
     "exceeds the grid"),
    ("teacher-steps-too-few", lambda t: ["--teacher-steps", "10", "--dry-run"], ">= 50"),
    ("train-subset-negative", lambda t: ["--train-subset", "-1", "--dry-run"], "--train-subset must be >= 0"),
    ("cpus-per-trial-0", lambda t: ["--cpus-per-trial", "0", "--dry-run"], "--cpus-per-trial must be > 0"),
    ("max-failures-negative", lambda t: ["--max-failures", "-1", "--dry-run"], ">= 0"),
    ("device-cuda-no-gpu", lambda t: ["--device", "cuda", "--gpus-per-trial", "1", "--dry-run"], "no CUDA GPU"),
    ("device-unknown", lambda t: ["--device", "tpu", "--dry-run"], "is not a device"),
    ("address-malformed", lambda t: ["--address", "head-node"], "use auto, HOST:PORT"),
    ("address-not-answering", lambda t: ["--address", f"127.0.0.1:{_dead_port(t)}"], "does not answer"),
    ("tracking-server-down", lambda t: ["--tracking-uri", f"http://127.0.0.1:{_dead_port(t)}"],
     "cannot reach the MLflow tracking server"),
    ("optuna-url-malformed", lambda t: ["--optuna-storage", "not a url"], "not a database URL"),
    ("data-missing", lambda t: ["--data-root", str(t / "no-data")], "mnist not found"),
    ("val-images-negative", lambda t: ["--val-images", "-1", "--dry-run"], "--val-images must be >= 0"),
    ("bank-manifest-corrupted", lambda t: (_bank_manifest(t / "bank", "{not json"), [])[1], "corrupted manifest"),
    ("bank-from-newer-version", lambda t: (_bank_manifest(t / "bank", '{"format": 9, "snapshots": {}}'), [])[1],
     "newer leveled-kd"),
    ("resume-nothing", lambda t: ["--resume"], "nothing to resume"),
    # what a user brings (docs/byo.md): plug-ins, datasets, models, pretrained teachers
    ("import-missing", lambda t: ["--import", str(t / "my_modles.py"), "--dry-run"], "my_modles.py does not exist"),
    ("import-module-missing", lambda t: ["--import", "lkd_no_such_module", "--dry-run"],
     "plug-in module 'lkd_no_such_module' not found on sys.path"),
    ("import-fails", lambda t: ["--import", _plugin(t, "import torch\nx = nn.Linear(2, 2)\n"), "--dry-run"],
     "failed: NameError: name 'nn' is not defined (at "),
    ("import-name-taken", lambda t: ["--import", _plugin(t, "X = 1\n", "models"), "--dry-run"],
     "a module named 'models' is already imported"),
    ("dataset-unknown", lambda t: ["--dataset", "leafs", "--dry-run"],
     "unknown dataset 'leafs'; valid choices: mnist, fashion_mnist, cifar10"),
    ("dataset-folder-missing", lambda t: ["--dataset", str(t / "no-folder"), "--dry-run"], "no such folder"),
    ("dataset-sizes-differ", lambda t: ["--dataset", _odd_folder(t)], "give the image folder a resize: [H, W]"),
    ("student-one-tensor", lambda t: ["--import", _plugin(t, ONE_TENSOR_STUDENT), "--set", "student=lkd_one_tensor"],
     "model 'lkd_one_tensor' returns one tensor; its forward must return (logits, features)"),
    ("space-unknown-dataset", lambda t: ["--space", _space(t, "dataset: leafs\nfixed: {teachers: cnn_1}\n"), "--dry-run"],
     "unknown dataset 'leafs'"),
    ("space-import-missing", lambda t: ["--space", _space(t, "imports: [nope.py]\nfixed: {teachers: cnn_1}\n"),
                                        "--dry-run"], "nope.py does not exist"),
    ("robustness-unknown", lambda t: ["--robustness", "rotation,blur", "--dry-run"],
     "unknown robustness family 'blur'; valid: translation, rotation, scaling, noise"),
    ("objective-unknown-family", lambda t: ["--objective", "blur", "--dry-run"],
     "unknown robustness family 'blur'; valid: translation, rotation, scaling, noise"),
    ("pretrained-no-arch", lambda t: ["--space", _space(t, "pretrained: {mine: {checkpoint: t.pt}}\n"
                                                         "fixed: {teachers: mine}\n"), "--dry-run"], "needs arch:"),
    ("pretrained-checkpoint-missing", lambda t: ["--space", _space(t, "pretrained: {mine: {arch: tiny_cnn, checkpoint: "
                                                                    "gone.pt}}\nfixed: {teachers: mine}\n")],
     "gone.pt does not exist"),
    ("pretrained-does-not-fit", lambda t: (_checkpoint(t), ["--space", _space(
        t, "pretrained: {mine: {arch: tiny_cnn, checkpoint: teacher.pt}}\nfixed: {teachers: mine}\n")])[1],
     "does not fit its architecture built for mnist (1x28x28, 10 classes): missing keys"),
    ("pretrained-seeds", lambda t: ["--space", _space(t, "pretrained: {mine: {arch: tiny_cnn, checkpoint: t.pt}}\n"
                                                       "fixed: {teachers: mine}\nparams: {teacher_seed: {choices: [0, 1]}}\n"),
                                    "--dry-run"], "needs teacher_seed 0"),
    ("pretrained-step-not-in-series", lambda t: ["--space", _space(t, "pretrained: {mine: {arch: tiny_cnn, snapshots: "
                                                                    "{10: a.pt, 20: b.pt}}}\nfixed: {teachers: mine, "
                                                                    "teacher_step: 15}\n"), "--dry-run",
                                                   "--set", "teachers=mine"],
     "teacher_step 15 is not a snapshot step of pretrained teacher mine; valid: 10, 20"),
]

DISTILL_CASES = [
    ("alpha-out-of-range", lambda t: ["--alpha", "2"], "alpha=2.0 is out of range [0, 1]"),
    ("temperature-zero", lambda t: ["--temperature", "0"], "temperature=0.0 is out of range (0, 100]"),
    ("negative-scale", lambda t: ["--s-fm", "-1"], "s_fm=-1.0 is out of range [0, inf)"),
    ("epochs-0", lambda t: ["--epochs", "0"], "--epochs and --train-subset must be >= 1"),
    ("device-cuda-no-gpu", lambda t: ["--device", "cuda"], "no CUDA GPU"),
    ("teacher-unknown", lambda t: ["--teacher", "resnet"], "valid teachers are"),
    ("teacher-steps-mismatch", lambda t: ["--teacher", "cnn_1,cnn_2", "--teacher-step", "50"],
     "one --teacher-step per teacher"),
    ("not-a-snapshot-step", lambda t: ["--teacher-step", "75"], "not a snapshot step"),
    ("train-subset-0", lambda t: ["--train-subset", "0"], "--epochs and --train-subset must be >= 1"),
    ("data-missing", lambda t: ["--data-root", str(t / "no-data")], "mnist not found"),
    ("snapshot-corrupted", lambda t: (_corrupt_snapshot(t / "out"), ["--teacher-step", "50"])[1],
     "does not match the sha256"),
    ("import-missing", lambda t: ["--import", str(t / "nope.py")], "nope.py does not exist"),
    ("dataset-unknown", lambda t: ["--dataset", "leafs"], "unknown dataset 'leafs'"),
    ("robustness-unknown", lambda t: ["--robustness", "blur"], "unknown robustness family 'blur'"),
    ("student-one-tensor", lambda t: ["--import", _plugin(t, ONE_TENSOR_STUDENT), "--student", "lkd_one_tensor",
                                      "--teacher", "none"], "model 'lkd_one_tensor' returns one tensor"),
]


def _one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert message in err, err


@pytest.mark.parametrize("build, message", [c[1:] for c in STUDY_CASES], ids=[c[0] for c in STUDY_CASES])
def test_run_study_bad_input(build, message, tmp_path, mnist_root, capsys, forget_plugins):
    argv = ["--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path / "out"),
            "--bank-dir", str(tmp_path / "bank"), "--set", "teachers=cnn_1", "--teacher-steps", "100",
            "--num-cpus", "1", *build(tmp_path)]
    started = time.monotonic()
    code = run_cli(run_study.main, argv)
    _one_line_error(code, capsys.readouterr().err, message)
    assert time.monotonic() - started < 15
    assert not (tmp_path / "out" / "mlflow.db").exists()  # refused before anything was created


@pytest.mark.parametrize("build, message", [c[1:] for c in DISTILL_CASES], ids=[c[0] for c in DISTILL_CASES])
def test_distill_bad_input(build, message, tmp_path, mnist_root, capsys, forget_plugins):
    argv = ["--data-root", str(mnist_root), "--no-download", "--output-dir", str(tmp_path / "out"), "--epochs", "1",
            "--teacher-step", "50", *build(tmp_path)]
    started = time.monotonic()
    code = run_cli(distill.main, argv)
    _one_line_error(code, capsys.readouterr().err, message)
    assert time.monotonic() - started < 15


def test_a_bug_keeps_its_traceback(capsys):
    """A KeyError/ValueError from the project's own code is not the user's fault: full traceback, exit 1."""
    def buggy(argv):
        return {"expected": 1}["missing"]

    assert run_cli(buggy, []) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError: 'missing'" in err and "this is a bug in leveled-kd" in err


@pytest.mark.parametrize("command, message", [
    ([sys.executable, "run_study.py", "--device", "cuda", "--gpus-per-trial", "1", "--dry-run"], "no CUDA GPU"),
    ([sys.executable, "-m", "study.distill", "--device", "cuda"], "no CUDA GPU"),
    ([sys.executable, "run_study.py", "--address", "127.0.0.1:{port}", "--output-dir", "{tmp}"], "does not answer"),
], ids=["run_study-cuda", "distill-cuda", "run_study-address"])
def test_scripts_print_one_line_and_exit_2(command, message, tmp_path):
    """The real scripts: exit code 2, one line, no traceback and no Ray log lines, in seconds."""
    command = [part.format(port=free_port(), tmp=tmp_path) for part in command]
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    _one_line_error(result.returncode, result.stderr, message)
    assert result.stdout == "" and time.monotonic() - started < 30


def test_the_resume_hint_repeats_the_budget_and_set_flags(monkeypatch):
    """An interrupted study is continued with the flags it was planned with, not just its name."""
    import types

    from study.run import resume_command

    monkeypatch.setattr(sys, "argv", ["run_study.py", "--space", "inductive_bias", "--set", "seed=[0, 1]",
                                      "--teacher-steps", "2500", "--train-subset", "0"])
    study = types.SimpleNamespace(name="inductive_bias-mnist", args=types.SimpleNamespace(space="x", output_dir="runs"))
    command = resume_command(study)
    assert command == ("python run_study.py --space inductive_bias --set 'seed=[0, 1]' --teacher-steps 2500 "
                       "--train-subset 0 --study-name inductive_bias-mnist --resume")


def test_reproduce_stops_with_one_line_when_a_study_fails(tmp_path):
    """A study that stops (here: no data) ends the reproduction with a resume hint, not a traceback."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    result = subprocess.run([sys.executable, "scripts/reproduce.py", "--quick", "--spaces", "kd_types",
                             "--data-root", str(empty), "--no-download", "--output-dir", str(tmp_path / "runs"),
                             "--docs", str(tmp_path / "docs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "reproduce: study repro-kd_types-mnist-quick stopped (exit 2); run the same command again to resume it")
    assert not (tmp_path / "docs").exists()
