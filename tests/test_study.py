"""End-to-end studies on a tiny budget: MLflow contents, reports, resume after an interrupt, a real
``mlflow server``. Each study runs ``run_study.py`` in a subprocess with a local Ray on 127.0.0.1."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, run_study, stop_server, study_args

from study.testing import free_port, runs_of, wait_until_healthy

pytestmark = pytest.mark.slow

TRIAL_PARAMS = {"alpha", "temperature", "s_kl", "s_fm", "teachers", "teacher_0", "teacher_0_step", "student",
                "dataset", "seed", "variant"}


@pytest.fixture(scope="module")
def tiny_study(mnist_root, bank_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    result = run_study(*study_args(mnist_root, bank_dir, out, "--num-samples", "3", "--max-epochs", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_mlflow_holds_study_teacher_and_trial_runs(tiny_study):
    out, _ = tiny_study
    client, runs = runs_of(f"sqlite:///{out / 'mlflow.db'}", "leveled_kd-mnist")
    (parent,) = runs["study"]
    (teacher,) = runs["teacher"]
    trials = runs["trial"]
    assert len(trials) == 4  # 3 search trials + the no-KD baseline
    assert sum(t.data.params.get("baseline") == "True" for t in trials) == 1
    assert not [k for t in trials for k in t.data.params if k.startswith("config/")]  # one name per hyperparameter
    for run in [parent, teacher, *trials]:  # filterable across studies
        assert run.data.tags["leveled_kd.study"] == "leveled_kd-mnist" and run.data.tags["leveled_kd.space"] == "leveled_kd"
    # the run spans the bank task's real time: training when the bank is new, next to nothing when an earlier
    # test of the session trained it (stage 1 computes no caches: trials do)
    assert teacher.info.end_time >= teacher.info.start_time
    parent_id = parent.info.run_id
    assert teacher.data.tags["mlflow.parentRunId"] == parent_id
    assert sorted(m.step for m in client.get_metric_history(teacher.info.run_id, "clean_acc")) == [50, 100]
    for trial in trials:
        assert trial.data.tags["mlflow.parentRunId"] == parent_id
        assert TRIAL_PARAMS <= set(trial.data.params) or trial.data.params["teachers"] == "none"
        assert {"val_clean_acc", "val_translated_acc", "loss_ce", "loss_total", "test_translated_acc",
                "val_acc_shift/dx_2_dy_0"} <= set(trial.data.metrics)
        assert trial.data.tags["state"] == "completed" and trial.info.status == "FINISHED"
        if trial.data.params["variant"] != "no_kd":  # a KD trial: its teacher on its test images, its transfer
            assert "teacher_test_translated_acc" in trial.data.metrics  # (the ratio too, where the teacher beats no KD)
    artifacts = {a.path for a in client.list_artifacts(parent_id, "reports")}
    assert {"reports/trials.csv", "reports/optimization_history.html", "reports/param_importances.html"} <= artifacts
    models = client.search_logged_models([parent.info.experiment_id])
    assert models and {m.source_run_id for m in models} <= {t.info.run_id for t in trials}
    (version,) = client.search_model_versions("name = 'leveled-kd-leveled_kd-mnist'")
    assert version.run_id in {m.source_run_id for m in models} and "test_translated_acc" in version.tags


def test_reports_are_written_and_summary_printed(tiny_study):
    out, result = tiny_study
    reports = out / "studies" / "leveled_kd-mnist" / "reports"
    for name in ("trials.csv", "trials.parquet", "optimization_history.html", "parallel_coordinates.html",
                 "param_importances.html", "translated_vs_teacher_step.html", "accuracy_vs_shift.html"):
        assert (reports / name).stat().st_size > 100, name
    import pandas as pd

    table = pd.read_csv(reports / "trials.csv")
    assert len(table) == 4 and set(table["state"]) == {"completed"}
    # every KD trial's teacher was scored on the students' own test images, and its transfer ratio kept
    from study.analysis.studies import TEACHER_PREDICTIONS, teacher_predictions_name
    from study.train.predictions import load_predictions

    kd = table[table["variant"] != "no_kd"]
    assert not kd.empty and kd["teacher_test_translated_acc"].notna().all()
    student = load_predictions(out / "studies" / "leveled_kd-mnist" / "predictions" / f"{kd['trial_id'].iloc[0]}.npz")
    for _, row in kd.iterrows():
        teacher = load_predictions(out / "studies" / "leveled_kd-mnist" / "predictions" / TEACHER_PREDICTIONS /
                                   teacher_predictions_name("cnn_1", 0.0, 0, int(row["teacher_step"])))["test"]
        assert teacher.accuracy("translated") == pytest.approx(row["teacher_test_translated_acc"])
        assert list(teacher.indices) == list(student["test"].indices)
    assert "test_transfer_translated" in table
    assert "gain over no KD" in result.stdout and "best (by validation" in result.stdout
    state = json.loads((out / "studies" / "leveled_kd-mnist" / "study.json").read_text())
    assert state["status"] == "finished"


def test_rerunning_a_finished_study_without_resume_is_refused(tiny_study, mnist_root, bank_dir):
    out, _ = tiny_study
    result = run_study(*study_args(mnist_root, bank_dir, out, "--num-samples", "3", "--max-epochs", "1"), timeout=120)
    assert result.returncode == 2 and "--resume" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_interrupted_study_resumes_without_duplicates(mnist_root, bank_dir, tmp_path):
    args = study_args(mnist_root, bank_dir, tmp_path, "--num-samples", "4", "--max-epochs", "2", "--no-asha")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    driver = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tune_dir = tmp_path / "studies" / "leveled_kd-mnist" / "tune"
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        if any(p.stat().st_size > 0 for p in tune_dir.glob("trial_*/result.json")):
            break
        time.sleep(0.5)
    assert driver.poll() is None, "the study finished before it could be interrupted"
    driver.send_signal(signal.SIGINT)
    output, _ = driver.communicate(timeout=180)
    assert driver.returncode != 0, output[-2000:]
    assert "--resume" in output

    resumed = run_study(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _, runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "leveled_kd-mnist")
    trials = runs["trial"]
    ids = [t.data.tags["leveled_kd.trial_id"] for t in trials]
    assert len(ids) == 5 and len(set(ids)) == 5  # 4 search + 1 baseline, each logged once
    assert len(runs["study"]) == 1 and len(runs["teacher"]) == 1
    assert all(t.data.tags["state"] == "completed" for t in trials)
    # the study's times add both invocations, not only the last one's
    state = json.loads((tmp_path / "studies" / "leveled_kd-mnist" / "study.json").read_text())
    first, second = state["invocations"]
    assert first["status"] == "interrupted" and second["status"] == "finished" == state["status"]
    assert state["wall_seconds"] == pytest.approx(first["wall_seconds"] + second["wall_seconds"])
    assert state["trials_seconds"] == first["trials_seconds"] + second["trials_seconds"]
    # each invocation says when it ran and what: its own command line, and the trials finished by its end
    assert first["started"] < first["ended"] <= second["started"] < second["ended"]
    assert not first["resumed"] and second["resumed"] and second["command"].endswith("--resume")
    assert first["command"].startswith("python run_study.py") and "--resume" not in first["command"]
    assert first["trials_finished"] < second["trials_finished"] == 5
    assert set(state["teachers"]) == {"mnist/cnn_1/seed-0"} and state["teachers"]["mnist/cnn_1/seed-0"]["precision"]


def test_ctrl_c_while_teachers_train_stops_the_study_and_keeps_their_snapshots(mnist_root, tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) during stage 1 stops the study within
    seconds with the resume command; the teacher's snapshots so far stay in its bank. (Ray's
    ``ray.wait`` used to swallow the KeyboardInterrupt: the teachers kept training.)"""
    banks = tmp_path / "banks"
    args = study_args(mnist_root, banks, tmp_path, "--teacher-steps", "5000", "--num-samples", "1")
    # as from a terminal: SIGINT at its default even when this test runs in a background job (a
    # shell starts those with SIGINT ignored, and a child inherits that)
    driver = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    manifest = banks / "mnist" / "cnn_1" / "seed-0" / "manifest.json"
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None and not manifest.is_file():
        time.sleep(0.5)
    assert driver.poll() is None and manifest.is_file(), "the teacher never saved its first snapshot"
    os.killpg(driver.pid, signal.SIGINT)
    try:
        output, _ = driver.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(driver.pid, signal.SIGKILL)
        pytest.fail("the study kept running after Ctrl-C")
    assert driver.returncode == 130, output[-2000:]
    assert "interrupted while training its teachers" in output and "--resume" in output
    steps = json.loads(manifest.read_text())["snapshots"]
    assert "50" in steps and "5000" not in steps
    state = json.loads((tmp_path / "studies" / "leveled_kd-mnist" / "study.json").read_text())
    assert state["status"] == "interrupted" and state["invocations"][-1]["status"] == "interrupted"
    assert state["wall_seconds"] == state["invocations"][-1]["wall_seconds"] > 0 and state["trials_seconds"] == 0


def test_logs_to_a_real_mlflow_server(tiny_study, mnist_root, bank_dir, tmp_path):
    """Also: the tiny study's bank exists, and this study asks for the other precision: the study
    says the bank keeps its own, and records it."""
    bank_precision = json.loads((bank_dir / "mnist" / "cnn_1" / "seed-0" / "manifest.json").read_text())["precision"]
    other = "bf16" if bank_precision == "fp32" else "fp32"
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen([str(mlflow_bin), "server", "--host", "127.0.0.1", "--port", str(port),
                               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
                               "--artifacts-destination", str(tmp_path / "artifacts"), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        if not wait_until_healthy(uri, timeout=90):
            pytest.fail("mlflow server did not start")
        result = run_study(*study_args(mnist_root, bank_dir, tmp_path / "out", "--num-samples", "1", "--max-epochs",
                                       "1", "--tracking-uri", uri, "--keep-best", "1", "--precision", other))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"trained in {bank_precision} and keeps it" in result.stderr and f"{other} was asked for" in result.stderr
        state = json.loads((tmp_path / "out" / "studies" / "leveled_kd-mnist" / "study.json").read_text())
        assert state["teachers"]["mnist/cnn_1/seed-0"] == {"precision": bank_precision, "steps": 100}
        client, runs = runs_of(uri, "leveled_kd-mnist")
        assert len(runs["study"]) == 1 and len(runs["teacher"]) == 1 and len(runs["trial"]) == 2
        parent = runs["study"][0].info.run_id
        assert any(a.path == "reports/trials.csv" for a in client.list_artifacts(parent, "reports"))
        # quiet: no "View run ... at <url>" line per run; the hint fits a server (no `mlflow ui` to start)
        assert "View run" not in result.stdout + result.stderr
        assert f"browse: open {uri}" in result.stderr and "mlflow ui" not in result.stderr
    finally:
        stop_server(server)


def test_unreachable_tracking_server_is_one_line_error(mnist_root, bank_dir, tmp_path):
    result = run_study(*study_args(mnist_root, bank_dir, tmp_path, "--tracking-uri", f"http://127.0.0.1:{free_port()}"),
                       timeout=120)
    assert result.returncode == 2 and "cannot reach the MLflow tracking server" in result.stderr
    assert result.stderr.strip().count("\n") == 0


def test_asha_pruned_trials_are_pruned_in_optuna_and_mlflow(mnist_root, bank_dir, tmp_path):
    """The default (ASHA) study: a trial ASHA stops is PRUNED in Optuna, with its per-epoch objective
    as intermediate values, and ``state=pruned`` in MLflow; a trial that ran its course is COMPLETE
    with its final value. (Ray's own OptunaSearch told stopped trials to Optuna as COMPLETE.)"""
    import optuna

    max_epochs = 3
    result = run_study(*study_args(mnist_root, bank_dir, tmp_path, "--num-samples", "6", "--max-epochs",
                                   str(max_epochs)))
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="leveled_kd-mnist", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    states = [t.state for t in study.trials]
    assert len(states) == 6 and set(states) <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert states.count(optuna.trial.TrialState.PRUNED) >= 1, "ASHA (grace 1, reduction 2) pruned nothing"
    assert states.count(optuna.trial.TrialState.COMPLETE) >= 1

    client, runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "leveled_kd-mnist")
    by_trial = {r.data.tags["leveled_kd.trial_id"]: r for r in runs["trial"]}
    for trial in study.trials:
        run = by_trial[trial.user_attrs["tune_trial_id"]]
        history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_translated_acc")}
        if trial.state == optuna.trial.TrialState.PRUNED:
            assert run.data.tags["state"] == "pruned"
            assert trial.intermediate_values == history  # every epoch it ran, the stopping one included
            assert max(history) < max_epochs and "test_translated_acc" not in run.data.metrics
            assert trial.value == trial.intermediate_values[max(history)]
        else:
            assert run.data.tags["state"] == "completed"
            assert trial.value == history[max(history)] and "test_translated_acc" in run.data.metrics
    baseline = [r for r in runs["trial"] if r.info.run_name.startswith("baseline")]
    assert [r.data.tags["state"] for r in baseline] == ["completed"]  # never stopped by ASHA

    import pandas as pd

    table = pd.read_csv(tmp_path / "studies" / "leveled_kd-mnist" / "reports" / "trials.csv")
    assert dict(zip(table["trial_id"].astype(str), table["state"])) == {
        tid: r.data.tags["state"] for tid, r in by_trial.items()}


def test_kd_methods_study_reports_each_arm_against_no_kd(mnist_root, bank_dir, tmp_path):
    """The registered methods through run_study.py: one arm each, a per-arm report with paired
    effects, and each method's scale and hyperparameters as MLflow params."""
    result = run_study(*study_args(mnist_root, bank_dir, tmp_path, "--space", "kd_methods", "--set", "seed=[0]",
                                   "--max-epochs", "1"))
    assert result.returncode == 0, result.stderr[-3000:]
    arms = (tmp_path / "studies" / "kd_methods-mnist" / "reports" / "arms.md").read_text()
    for arm in ("kl", "fm", "dkd", "dist", "rkd"):
        assert f"| {arm} |" in arms or f"| **{arm}** (chosen on val) |" in arms
    assert arms.count("(chosen on val)") == 1
    _, runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "kd_methods-mnist")
    by_variant = {t.data.params["variant"]: t for t in runs["trial"]}
    assert set(by_variant) == {"no_kd", "normal_kd", "type_1", "dkd", "dist", "rkd"}
    dkd = by_variant["dkd"]
    assert float(dkd.data.params["s_dkd"]) == 1.0 and float(dkd.data.params["s_kl"]) == 0.0
    assert {"dkd_beta", "dkd_alpha", "temperature"} <= set(dkd.data.params)
    assert dkd.data.metrics["loss_dkd"] > 0 and by_variant["rkd"].data.metrics["loss_rkd"] > 0


def test_transfer_study_runs_every_scheme_through_ray(mnist_root, bank_dir, tmp_path):
    """The transfer space end to end on a tiny budget (its arms' snapshot set to the tiny bank's last):
    every arm completes, the trials computed the caches they needed in the banks (views, trajectory
    snapshots, the MLP teacher's), and the table says which scheme each trial ran."""
    import pandas as pd

    args = [sys.executable, "run_study.py", "--space", "transfer", "--data-root", str(mnist_root), "--no-download",
            "--output-dir", str(tmp_path), "--bank-dir", str(bank_dir), "--set", "teacher_step=100",
            "--teacher-steps", "100", "--teacher-eval-images", "50", "--train-subset", "300", "--val-images", "100",
            "--test-images", "200", "--num-cpus", "2", "--quiet", "--max-epochs", "2", "--patience", "0",
            "--keep-best", "1"]
    result = run_study(*args, timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    study = tmp_path / "studies" / "transfer-mnist"
    table = pd.read_csv(study / "reports" / "trials.csv")
    assert len(table) == 19 and set(table["state"]) == {"completed"}  # 18 arms + the no-KD baseline
    arms = table.dropna(subset=["arm"]).set_index("arm")
    assert len(arms) == 18
    assert arms.loc["jacobian", "loss_jacobian"] > 0 and arms.loc["jacobian", "variant"] == "kl+jacobian"
    for arm in ("fm_mixup", "fm_noise", "fm_erase", "mlp_teacher_mixup", "mlp_teacher_erase"):
        assert arms.loc[arm, "loss_kl"] > 0 and arms.loc[arm, "views"] == arm.split("_")[-1] and arms.loc[arm, "alpha"] == 0
    for arm in ("aug_mixup", "aug_noise", "aug_erase"):
        assert arms.loc[arm, "loss_kl"] == 0 and arms.loc[arm, "views"] == arm.split("_")[-1]
        assert arms.loc[arm, "teachers"] == "none" and arms.loc[arm, "variant"] == "no_kd"
    assert arms.loc["fm_erase_features", "loss_fm"] > 0 and arms.loc["fm_erase", "loss_fm"] == 0  # features on views
    assert arms.loc["fm_erase_k16", "views_k"] == 16 and arms.loc["fm_erase_large", "erase_max"] == 0.6
    assert arms.loc["trajectory", "trajectory"] == "50,100" and arms.loc["kd_cosine", "lr_schedule"] == "cosine"
    assert (arms["epochs_done"] == 2).all()
    cnn = bank_dir / "mnist" / "cnn_1" / "seed-0"
    from study.train.views import ViewSet

    for view in ("mixup", "noise", "erase"):
        assert len(list(cnn.glob(f"step-000100.outputs-*-{ViewSet.create(view).tag}.pt"))) == 1, view
    assert list(cnn.glob("step-000050.outputs-*.pt"))  # the trajectory's first snapshot
    assert len(list(cnn.glob("step-000100.outputs-*-jvp*.pt"))) == 1  # the teacher's derivatives (jacobian)
    mlp = bank_dir / "mnist" / "mlp_1" / "seed-0"
    assert list(mlp.glob(f"step-000100.outputs-*-{ViewSet.create('mixup').tag}.pt"))
    assert list(mlp.glob(f"step-000100.outputs-*-{ViewSet.create('erase').tag}.pt"))
    assert arms.loc["kd_maxpool", "teachers"] == "cnn_1_maxpool" and arms.loc["fm_mixup_maxpool", "views"] == "mixup"
    report = (study / "reports" / "arms.md").read_text()
    assert all(f"| {arm} |" in report or f"| **{arm}** (chosen on val) |" in report for arm in arms.index)


def test_a_study_can_maximize_the_transfer_ratio(mnist_root, bank_dir, tmp_path):
    """``--objective transfer``: each KD trial reports its validation transfer ratio against its teacher
    and a no-KD reference student, trained once on first use; the reference is the baseline trial's
    own student (same configuration, seed and budget), so its score is that trial's last validation
    number, and the searcher and the summary choose on the ratio."""
    import pandas as pd

    result = run_study(*study_args(mnist_root, bank_dir, tmp_path, "--num-samples", "2", "--max-epochs", "2",
                                   "--patience", "0", "--objective", "transfer", "--set", "s_kl=1.0",
                                   "--set", "teacher_step=100"))
    assert result.returncode == 0, result.stderr[-3000:]
    study = tmp_path / "studies" / "leveled_kd-mnist"
    (reference,) = list((study / "references").glob("*.json"))
    table = pd.read_csv(study / "reports" / "trials.csv")
    baseline = table[table["baseline"]].iloc[0]
    assert json.loads(reference.read_text())["val_translated_acc"] == pytest.approx(baseline["val_translated_acc"])
    kd = table[~table["baseline"]]
    assert kd["val_transfer_translated"].notna().all() and (baseline["val_transfer_translated"] == 0)
    state = json.loads((study / "study.json").read_text())
    assert state["plan"]["objective"] == "val_transfer_translated (max)"
    assert "best (by validation transfer ratio)" in result.stdout
    refused = run_study(*study_args(mnist_root, bank_dir, tmp_path / "x", "--objective", "transfer", "--no-baseline"))
    assert refused.returncode == 2 and "--no-baseline" in refused.stderr

