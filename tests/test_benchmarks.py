"""The GPU check's tiny CPU mode: the script the GPU session will run must at least run here.

Not a timing test: it asserts that every section ran and wrote its JSON, never how fast.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_mode_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    command = [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    for section in ("environment", "autocast", "teacher_steps", "teacher_bank", "student", "sharing"):
        assert report[section]["status"] == "ok", report[section].get("traceback")
    assert report["ok"] and report["autocast"]["ok"]
    assert report["teacher_bank"]["precision"] in ("fp32", "bf16")
    assert report["student"]["eager_epoch_s"] > 0 and "graphs_epoch_s" not in report["student"]  # graphs: CUDA only
    assert [r["processes"] for r in report["sharing"]["rows"]] == [2]


TINY_SPACE = """
description: leveled KD with one teacher (a cheap stand-in for leveled_kd in tests)
sampler: tpe
scheduler: asha
fixed: {student: mlp_1, teachers: cnn_1}
params:
  alpha: {float: [0.0, 1.0]}
  s_kl: {float: [0.1, 4.0], log: true, or_zero: true}
  teacher_step: {choices: bank}
"""


@pytest.mark.slow
def test_search_efficiency_tiny_mode_runs_both_arms_against_one_target(tmp_path, mnist_root, bank_dir):
    import pandas as pd

    out = tmp_path / "search_efficiency.json"
    space = tmp_path / "one_teacher.yaml"
    space.write_text(TINY_SPACE)
    command = [sys.executable, "-m", "benchmarks.search_efficiency", "--tiny", "--space", str(space),
               "--data-root", str(mnist_root), "--bank-dir", str(bank_dir), "--output-dir", str(tmp_path / "runs"),
               "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    runs = {run["arm"]: run for run in report["runs"]}
    assert sorted(runs) == ["random", "tpe_asha"] and len(report["runs"]) == 2 and set(report["summary"]) == set(runs)
    assert (runs["tpe_asha"]["sampler"], runs["tpe_asha"]["scheduler"]) == ("tpe", "asha")
    assert (runs["random"]["sampler"], runs["random"]["scheduler"]) == ("random", "fifo")
    tables = {}
    for arm, run in runs.items():
        assert run["trials"] == run["completed"] + run["pruned"] == 2 and run["failed"] == 0  # --no-baseline
        tables[arm] = pd.read_csv(Path(report["output_dir"]) / run["study"] / "studies" / run["study"] / "reports"
                                  / "trials.csv")
        assert len(tables[arm]) == 2 and not tables[arm]["baseline"].any() and tables[arm]["ended_at"].notna().all()
    assert runs["random"]["pruned"] == 0
    assert report["target"] == max(float(t["val_translated_acc"].max()) for t in tables.values())
    holder = max(runs.values(), key=lambda run: run["best_val_translated"])
    assert holder["time_to_target_s"] is not None and 0 <= holder["time_to_target_s"] <= holder["search_s"]
    assert report["summary"][holder["arm"]]["reached"] == 1.0


def test_scheme_cost_builds_each_arm_as_the_space_does():
    """benchmarks/scheme_cost.py times the arms' own configurations: the same runs the grid samples."""
    import optuna

    from benchmarks.scheme_cost import arm_configs
    from study.distill.config import run_spec
    from study.search.space import load_space

    configs = arm_configs("transfer", None, 2500)
    space = load_space("transfer").resolve_steps(2500)
    assert list(configs) == ["no_kd", *space.arms]
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(space.grid(), seed=0))
    seen = []

    def objective(trial):
        constants = space.suggest(trial)
        config = {**trial.params, **constants}
        ours = run_spec(configs[config["arm"]], dataset="mnist", epochs=20, train_subset=None)
        assert ours == run_spec(config, dataset="mnist", epochs=20, train_subset=None), config["arm"]
        seen.append(config["arm"])
        return 0.0

    study.optimize(objective, n_trials=space.grid_size(), catch=())
    assert sorted(seen) == sorted(space.arms)
    assert not run_spec(configs["no_kd"], dataset="mnist", epochs=20, train_subset=None).uses_teachers
    with pytest.raises(SystemExit, match="unknown arm"):
        arm_configs("transfer", ["fm_blur"], 2500)
