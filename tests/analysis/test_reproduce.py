"""The reproduction's analysis (study.analysis.findings + study.analysis.reproduce) on studies built here:
trials tables plus per-image prediction files, no study runs.

Pinned: clear effects read "reproduced", opposite ones "contradicted", effects inside the noise
"inconclusive"; missing arms are skipped with a note; and no "best" arm is ever chosen on the
test set (the leak test builds a study whose validation and test rankings disagree).
"""
from __future__ import annotations

import json
import zlib
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from study.analysis import findings, studies
from study.analysis import reproduce
from study.analysis.findings import PRIMARY, analyse, analyse_study, choose_arm
from study.analysis.studies import normalise
from study.train.predictions import PerImage, save_predictions

SHIFTS = ((0, 0), (2, 0), (-2, 0), (0, 4), (6, 6), (8, -8))
N_IMAGES = 400
N_BOOT = 500
ROW = dict(state="completed", teachers="cnn_1", temperature=4.0, s_kl=1.0, s_fm=0.0, teacher_label_smoothing=0.0,
           alpha=0.5, baseline=False)


def per_image(p: float, rng: np.random.Generator, n: int = N_IMAGES) -> PerImage:
    """A run right on each (shift, image) with probability ``p`` (clean images with 0.9)."""
    correct = rng.random((len(SHIFTS), n)) < p
    correct[0] = rng.random(n) < 0.9
    return PerImage(SHIFTS, np.arange(n), correct)


def write_study(root: Path, name: str, configs: list[dict], seeds=(0, 1, 2), teacher_seeds=(None,)) -> Path:
    """One trial per config x seed; ``test`` and ``val`` are the probabilities behind the test
    predictions and the ``val_translated_acc`` column (so the two can be made to disagree); a
    config's own ``teacher_seeds`` replace the study's."""
    rng = np.random.default_rng(zlib.crc32(name.encode()))  # hash() of a str changes per process
    rows = []
    for i, config in enumerate(configs):
        config = dict(config)
        p_test, p_val = config.pop("test"), config.pop("val", None)
        for t in config.pop("teacher_seeds", teacher_seeds):
            for s in seeds:
                trial = f"{name}-{i}-{t}-{s}"
                row = {**ROW, "trial_id": trial, "seed": s, **config,
                       "val_translated_acc": p_test if p_val is None else p_val, "test_translated_acc": p_test}
                if t is not None:
                    row["teacher_seed"] = t
                rows.append(row)
                save_predictions(root / name / "predictions" / f"{trial}.npz",
                                 {"val": per_image(row["val_translated_acc"], rng, 100), "test": per_image(p_test, rng)})
    (root / name / "reports").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(root / name / "reports" / "trials.csv", index=False)
    return root / name


BASE = {"variant": "no_kd", "teachers": "none", "teacher_step": None, "baseline": True}


def poster_studies(root: Path, kd: float, fm: float, early: float, alpha_slope: float, combo: float) -> dict[str, Path]:
    base = {**BASE, "test": 0.30}
    kd_types = [base] + [{"variant": v, "teacher_step": s, "test": 0.30 + kd + (fm if v == "type_1" else 0)}
                         for v in ("normal_kd", "type_1", "type_2") for s in (50, 500)]
    sweep = [base] + [{"variant": "normal_kd", "teacher_step": s, "test": 0.30 + kd + early * (s < 500)}
                      for s in (50, 100, 500)]
    smoothing = [base] + [{"variant": "normal_kd", "teacher_step": s, "teacher_label_smoothing": ls,
                           "test": 0.30 + kd + early * (s < 500)} for s, ls in ((50, 0.0), (500, 0.0), (500, 0.1))]
    alphas = [{"variant": "normal_kd", "teacher_step": 50, "alpha": a, "test": 0.35 + alpha_slope * a}
              for a in (0.1, 0.5, 0.9)]
    combos = [base] + [{"variant": "normal_kd", "teacher_step": 50, "teachers": t, "test": 0.30 + kd + gain}
                       for t, gain in (("cnn_1", 0.0), ("inn_1", -0.02), ("cnn_1+inn_1", combo))]
    return {"kd_types": write_study(root, "kd", kd_types), "snapshot_sweep": write_study(root, "sweep", sweep),
            "label_smoothing": write_study(root, "ls", smoothing), "alpha_sweep": write_study(root, "alpha", alphas),
            "teacher_combinations": write_study(root, "combos", combos)}


def primary_verdicts(cells) -> list[str]:
    return [c.verdict for c in cells if c.metric == PRIMARY]


def test_clear_effects_read_reproduced(tmp_path):
    cells = analyse({"mnist": poster_studies(tmp_path, kd=0.1, fm=0.1, early=0.1, alpha_slope=-0.2, combo=0.1)},
                    n_boot=N_BOOT)
    assert primary_verdicts(cells) == ["reproduced"] * 7
    assert {c.metric for c in cells} == {"translated", "small_shift", "translated_over_clean"}
    assert {c.verdict for c in cells if c.metric != PRIMARY} == {"secondary"}


def test_opposite_effects_read_contradicted(tmp_path):
    cells = analyse({"mnist": poster_studies(tmp_path, kd=-0.1, fm=-0.1, early=-0.1, alpha_slope=0.2, combo=-0.1)},
                    n_boot=N_BOOT)
    assert primary_verdicts(cells) == ["contradicted"] * 7


def test_effects_inside_the_noise_read_inconclusive(tmp_path):
    cells = analyse({"mnist": poster_studies(tmp_path, kd=0.0, fm=0.0, early=0.0, alpha_slope=0.0, combo=0.0)},
                    n_boot=N_BOOT)
    assert set(primary_verdicts(cells)) == {"inconclusive"}
    assert all(0 < c.effect.mde < 0.1 for c in cells)


def test_holm_family_spans_every_cell_of_the_reproduction(tmp_path):
    cells = analyse({"mnist": poster_studies(tmp_path, kd=0.1, fm=0.1, early=0.1, alpha_slope=-0.2, combo=0.1)},
                    n_boot=N_BOOT)
    primary = [c for c in cells if c.metric == PRIMARY]
    # seven cells all at the p-value floor 1/N_BOOT: the smallest is multiplied by 7, and monotone after
    assert max(c.adjusted_p for c in primary) == pytest.approx(7 / N_BOOT)


def test_validation_chooses_the_snapshot_even_when_test_disagrees(tmp_path):
    """The leak test: validation ranks step 100 best of the earlier snapshots, test ranks step 250
    best. The analysis must compare step 100 with the last step; selecting on test would pick 250
    and report an effect of about +0.25 instead of +0.05."""
    sweep = [{"variant": "normal_kd", "teacher_step": 100, "val": 0.40, "test": 0.25},
             {"variant": "normal_kd", "teacher_step": 250, "val": 0.20, "test": 0.45},
             {"variant": "normal_kd", "teacher_step": 500, "val": 0.10, "test": 0.20}]
    study = write_study(tmp_path, "sweep", sweep)
    early_vs_late = next(f for f in findings.POSTER if f.space == "snapshot_sweep")
    [cell] = analyse_study(study, [early_vs_late], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    assert "teacher_step=100" in cell.comparison and "teacher_step=500" in cell.comparison, cell.comparison
    assert cell.effect.estimate == pytest.approx(0.05, abs=0.03)


def test_best_single_teacher_and_runner_up_variant_are_chosen_on_validation(tmp_path):
    combos = [{"variant": "normal_kd", "teacher_step": 50, "teachers": "cnn_1", "val": 0.3, "test": 0.2},
              {"variant": "normal_kd", "teacher_step": 50, "teachers": "inn_1", "val": 0.2, "test": 0.4},
              {"variant": "normal_kd", "teacher_step": 50, "teachers": "cnn_1+inn_1", "val": 0.25, "test": 0.3}]
    table = normalise(pd.read_csv(write_study(tmp_path, "combos", combos) / "reports" / "trials.csv"))
    two_teachers = next(f for f in findings.POSTER if f.space == "teacher_combinations")
    rows, described = choose_arm(table, two_teachers.b)
    assert set(rows["teachers"]) == {"cnn_1"} and "teachers=cnn_1" in described
    kd_types = [{"variant": v, "teacher_step": 50, "val": val, "test": test}
                for v, val, test in (("type_1", 0.3, 0.3), ("normal_kd", 0.35, 0.1), ("type_2", 0.1, 0.5))]
    table = normalise(pd.read_csv(write_study(tmp_path, "kd", kd_types) / "reports" / "trials.csv"))
    type_1_weak = next(f for f in findings.POSTER if f.claim.startswith("4.") and "weak" in f.claim)
    rows, _ = choose_arm(table, type_1_weak.b)
    assert set(rows["variant"]) == {"normal_kd"}


def test_missing_arms_and_studies_are_skipped_with_a_note(tmp_path):
    dirs = poster_studies(tmp_path, kd=0.1, fm=0.1, early=0.1, alpha_slope=-0.2, combo=0.1)
    del dirs["alpha_sweep"]
    for path in (dirs["label_smoothing"] / "predictions").glob("*.npz"):
        path.unlink()
    cells = analyse({"mnist": dirs}, n_boot=N_BOOT)
    skipped = {c.finding: c.note for c in cells if c.verdict == "skipped" and c.metric == PRIMARY}
    assert "not run" in skipped["5. Larger alpha gives a less robust student"]
    assert "no per-image results" in skipped["3. A weak teacher beats a strong one even with label smoothing"]
    assert primary_verdicts(cells).count("reproduced") == 5
    # Holm's family counts only the cells that were computed (5 at the floor)
    assert max(c.adjusted_p for c in cells if c.metric == PRIMARY and c.effect) == pytest.approx(5 / N_BOOT)


def test_teacher_seeds_default_to_zero_for_kd_and_none_for_no_kd():
    table = normalise(pd.DataFrame([{**ROW, "trial_id": "a", "seed": 1, "variant": "normal_kd", "teacher_step": 50},
                                    {**ROW, "trial_id": "b", "seed": 1, **BASE, "teacher_step": np.nan}]))
    assert table["teacher_seed"].tolist() == [0, None]
    table = normalise(pd.DataFrame([{**ROW, "trial_id": "a", "seed": 1, "variant": "normal_kd", "teacher_step": 50,
                                     "teacher_seed": 2.0},
                                    {**ROW, "trial_id": "b", "seed": 1, **BASE, "teacher_seed": np.nan}]))
    assert table["teacher_seed"].tolist() == [2, None]


def inductive_bias_study(root: Path, cnn_gain: float, mlp_gain: float) -> Path:
    configs = [{**BASE, "test": 0.30}]
    for step, arm in ((250, "cnn_early"), (2500, "cnn_weak"), (25000, "cnn_strong")):
        configs.append({"arm": arm, "variant": "normal_kd", "teachers": "cnn_1", "teacher_step": step,
                        "test": 0.30 + cnn_gain})
    for step, arm in ((2500, "mlp_weak"), (25000, "mlp_strong")):
        configs.append({"arm": arm, "variant": "normal_kd", "teachers": "mlp_1", "teacher_step": step,
                        "test": 0.30 + mlp_gain})
    configs.append({"arm": "cnn_weak_soft_only", "variant": "normal_kd", "teachers": "cnn_1", "teacher_step": 2500,
                    "alpha": 0.0, "test": 0.30 + cnn_gain})
    # the baseline has no teacher seeds; KD arms have 3 teacher seeds x 3 student seeds
    base = write_study(root, "ib", configs[:1])
    kd = write_study(root, "ib-kd", configs[1:], teacher_seeds=(0, 1, 2))
    table = pd.concat([pd.read_csv(base / "reports" / "trials.csv"), pd.read_csv(kd / "reports" / "trials.csv")])
    table.to_csv(base / "reports" / "trials.csv", index=False)
    for path in (kd / "predictions").glob("*.npz"):
        path.rename(base / "predictions" / path.name)
    return base


def test_inductive_bias_controls(tmp_path):
    study = inductive_bias_study(tmp_path, cnn_gain=0.1, mlp_gain=0.0)
    control = findings.control_findings(studies.load_trials(study))
    claims = [f.claim for f in control]
    assert sum(c.startswith("C1.") for c in claims) == 3 and sum(c.startswith("C2.") for c in claims) == 2
    assert sum(c.startswith("C3.") for c in claims) == 2 and sum(c.startswith("C5.") for c in claims) == 1
    # each earlier CNN snapshot against the last: the poster's weak (2,500) vs strong (25,000) is one of them
    assert [c for c in claims if c.startswith("C4.")] == [
        "C4. An early CNN snapshot (step 250) beats a late one (step 25000)",
        "C4. An early CNN snapshot (step 2500) beats a late one (step 25000)"]
    cells = analyse({"mnist": {findings.CONTROL_SPACE: study}}, n_boot=N_BOOT)
    verdicts = {c.finding: c.verdict for c in cells if c.metric == PRIMARY and c.space == findings.CONTROL_SPACE}
    assert all(v == "reproduced" for k, v in verdicts.items() if k.startswith(("C1.", "C3.", "C5."))), verdicts
    assert all(v == "inconclusive" for k, v in verdicts.items() if k.startswith(("C2.", "C4."))), verdicts
    c1 = next(c for c in cells if c.finding.startswith("C1.") and c.metric == PRIMARY)
    assert c1.effect.n == f"3x3x{N_IMAGES}"
    # the poster's studies were not given: their cells are skipped, not errors
    assert all(c.verdict == "skipped" for c in cells if c.space != findings.CONTROL_SPACE)
    # the result file carries the arms table too: means with both seed spreads, effects against no KD
    [(title, table)] = reproduce.arms_sections({"mnist": {findings.CONTROL_SPACE: study}}, N_BOOT).items()
    assert title == f"Arms of `{findings.CONTROL_SPACE}` on mnist"
    rows = {line.split("|")[1].split(" (")[0].strip(" *"): line for line in table.splitlines()
            if line.startswith("| ")}
    assert "| mnist" not in table and rows["no KD"].split("|")[4].strip() == "3"  # 3 no-KD students
    assert rows["cnn_weak"].split("|")[4].strip() == "9" and " ± " in rows["cnn_weak"]
    md, _ = reproduce.write_results(cells, tmp_path / "out" / "full-mnist-inductive_bias", "cmd",
                                    reproduce.BUDGETS["full"], {}, 1.0, sections={title: table})
    assert f"## {title}\n\n{table}" in md.read_text()


def test_results_files_and_index(tmp_path):
    cells = analyse({"mnist": poster_studies(tmp_path, kd=0.1, fm=0.0, early=0.0, alpha_slope=0.0, combo=0.0)},
                    n_boot=N_BOOT)
    results = tmp_path / "docs" / "results"
    md, js = reproduce.write_results(cells, results / "quick-mnist", "python scripts/reproduce.py --quick",
                                     reproduce.BUDGETS["quick"], {"kd_types/mnist": 1800.0}, 1900.0)
    text = md.read_text()
    header = ("| finding | dataset | comparison | metric | effect [95% CI] | Holm-adjusted p | verdict | MDE | "
              "n (teacher seeds x student seeds x images) |")
    assert header in text and "mean ± std" not in text
    row = next(line for line in text.splitlines() if line.startswith("| 1. KD makes"))
    cols = [c.strip() for c in row.strip("|").split("|")]
    assert cols[3] == "translated" and 0.05 < float(cols[4].split()[0]) < 0.15  # planted +0.1
    assert cols[6] == "reproduced" and cols[8] == f"1x3x{N_IMAGES}"  # KD rows without teacher_seed: seed 0
    saved = json.loads(js.read_text())
    assert {c["metric"] for c in saved["cells"]} == {"translated", "small_shift", "translated_over_clean"}
    (results / "full-mnist.json").write_text(json.dumps({"verdicts": [], "study_seconds": {}}))  # the old format
    index = reproduce.write_index(results).read_text()
    assert "| 1. KD makes the MLP more translation-robust | mnist | quick |" in index
    assert "Total study wall time: 0.50 h" in index
    assert "[full-mnist](full-mnist.md)" in index.split("Earlier result files")[1]
    (results / "kd-methods-mnist.json").write_text(json.dumps({"trials": 18, "arms": []}))  # a study's summary.json
    index = reproduce.write_index(results).read_text()
    studies, earlier = index.split("## Controlled studies")[1].split("## Earlier result files")
    assert "[kd-methods-mnist](kd-methods-mnist.md)" in studies and "kd-methods" not in earlier


def test_cli_analyses_reused_studies(tmp_path, monkeypatch):
    """main() runs nothing for finished studies, and writes the result pair and the index."""
    dirs = poster_studies(tmp_path / "runs" / "raw", kd=0.1, fm=0.1, early=0.1, alpha_slope=-0.2, combo=0.1)
    studies = tmp_path / "runs" / "studies"
    for space, path in dirs.items():
        target = studies / f"repro-{space}-mnist-quick"
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
        (target / "study.json").write_text(json.dumps({"status": "finished", "wall_seconds": 60}))
    # the teacher banks' precision: from study.json, or (older studies) from the banks' manifests
    banks = tmp_path / "banks"
    (banks / "mnist/mlp_1/seed-0").mkdir(parents=True)
    (banks / "mnist/mlp_1/seed-0/manifest.json").write_text(json.dumps(
        {"precision": "fp32", "snapshots": {"50": {}, "500": {}}}))
    (studies / "repro-kd_types-mnist-quick" / "study.json").write_text(json.dumps(
        {"status": "finished", "wall_seconds": 60, "teachers": {"mnist/cnn_1/seed-0": {"precision": "bf16", "steps": 500}}}))
    (studies / "repro-snapshot_sweep-mnist-quick" / "study.json").write_text(json.dumps(
        {"status": "finished", "wall_seconds": 60,
         "plan": {"teachers": ["mnist/mlp_1/seed-0"], "teacher_banks": str(banks)}}))
    monkeypatch.setattr(reproduce.subprocess, "run", lambda *a, **k: pytest.fail("a finished study was re-run"))
    assert reproduce.main(["--quick", "--output-dir", str(tmp_path / "runs"), "--docs", str(tmp_path / "docs"),
                           "--n-boot", str(N_BOOT)]) == 0
    text = (tmp_path / "docs" / "results" / "quick-mnist.md").read_text()
    assert text.count("| reproduced |") == 7
    assert ("Teacher banks, by the precision they were trained in: bf16: mnist/cnn_1/seed-0 (500 steps); "
            "fp32: mnist/mlp_1/seed-0 (500 steps).") in text
    assert json.loads((tmp_path / "docs" / "results" / "quick-mnist.json").read_text())["teacher_banks"] == {
        "mnist/cnn_1/seed-0": {"precision": "bf16", "steps": 500}, "mnist/mlp_1/seed-0": {"precision": "fp32", "steps": 500}}
    assert (tmp_path / "docs" / "results" / "index.md").is_file()


def test_a_study_to_run_is_run_study_in_the_current_directory(tmp_path, monkeypatch):
    """run_space runs ``python -m run_study`` where reproduce runs, so a relative --output-dir is the
    same folder to both (the study directory it returns is where run_study.py writes)."""
    calls = []
    def run(cmd, **kwargs):
        calls.append((cmd, kwargs))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(reproduce.subprocess, "run", run)
    monkeypatch.chdir(tmp_path)
    args = SimpleNamespace(budget_name="quick", output_dir="runs", data_root="data", existing={}, set=["seed=[0]"],
                           bank_dir=None, no_download=True)
    study_dir, _ = reproduce.run_space("kd_types", "mnist", reproduce.BUDGETS["quick"], args)
    [(cmd, kwargs)] = calls
    assert cmd[:3] == [sys.executable, "-m", "run_study"] and "cwd" not in kwargs
    assert cmd[cmd.index("--output-dir") + 1] == "runs" and cmd[cmd.index("--study-name") + 1] == study_dir.name
    assert study_dir == Path("runs") / "studies" / "repro-kd_types-mnist-quick-seed_0"
    assert "--set=seed=[0]" in cmd and "--no-download" in cmd and "--resume" not in cmd


def test_a_finished_study_is_reused_only_by_the_same_overrides():
    """Other --set values (more seeds) make another study, not a silent reuse of the finished one."""
    name = reproduce.study_name
    assert name("kd_types", "mnist", "full", None) == name("kd_types", "mnist", "full", []) == "repro-kd_types-mnist-full"
    assert name("kd_types", "mnist", "full", ["seed=[0,1,2]"]) == "repro-kd_types-mnist-full-seed_0_1_2"
    assert name("kd_types", "mnist", "full", ["seed=[0]"]) != name("kd_types", "mnist", "full", ["seed=[0,1]"])
    assert name("x", "mnist", "full", ["b=1", "a=0.5"]) == name("x", "mnist", "full", ["a=0.5", "b=1"])
    # and so is its result file pair
    stem = reproduce.results_stem
    assert stem("docs", "full", ["mnist"], None, None) == Path("docs/results/full-mnist")
    assert stem("d", "full-25000", ["mnist"], ["inductive_bias"], ["seed=[0,1,2]"]) == \
        Path("d/results/full-25000-mnist-inductive_bias-seed_0_1_2")


def test_script_is_the_same_command_from_any_directory(tmp_path):
    script = Path(reproduce.__file__).resolve().parents[2] / "scripts" / "reproduce.py"
    for command in ([sys.executable, str(script), "--help"], [sys.executable, "-m", "study.analysis.reproduce", "--help"]):
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and "--quick" in result.stdout, result.stderr[-2000:]


def test_a_configuration_listed_twice_counts_each_unit_once(tmp_path):
    """A grid that runs one configuration twice (e.g. two arms that resolve to the same values)
    gives two trials per (teacher seed, student seed): each unit is used once, and the cell says so."""
    twice = {"variant": "normal_kd", "teacher_step": 50, "test": 0.40}
    study = write_study(tmp_path, "kd", [{**BASE, "test": 0.30}, twice, dict(twice)])
    kd_vs_none = next(f for f in findings.POSTER if f.space == "kd_types")
    [cell] = analyse_study(study, [kd_vs_none], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    assert cell.effect.n_units == 3 and cell.note == "3 replicate trial(s) of a unit left out"
    assert cell.effect.estimate == pytest.approx(0.10, abs=0.03)


def test_arm_report_finds_planted_effects_and_keeps_students_apart(tmp_path, capsys):
    """arm_tables.arm_effects on a study with arms: a planted +0.10 arm is found, a flat arm is not,
    each student is compared with its own no-KD runs, and the chosen arm is the validation best."""
    from study.analysis import arms as arm_tables, reports

    arms = [{**BASE, "student": "mlp_1", "test": 0.30}, {**BASE, "student": "vit_1", "test": 0.50},
            {"arm": "strong", "student": "mlp_1", "variant": "normal_kd", "test": 0.40, "val": 0.35},
            {"arm": "flat", "student": "mlp_1", "variant": "type_1", "test": 0.30, "val": 0.36},
            {"arm": "vit", "student": "vit_1", "variant": "normal_kd", "test": 0.50, "val": 0.30}]
    study = write_study(tmp_path, "arms", arms)
    frame = arm_tables.arm_effects(normalise(pd.read_csv(study / "reports" / "trials.csv")), study, n_boot=N_BOOT)
    by_arm = frame.set_index("arm")
    assert 0.07 < by_arm.loc["strong", "effect"] < 0.13 and by_arm.loc["strong", "ci_low"] > 0
    assert by_arm.loc["flat", "ci_low"] < 0 < by_arm.loc["flat", "ci_high"]
    assert abs(by_arm.loc["vit", "effect"]) < 0.03  # against the ViT baseline (0.50), not the MLP one (0.30)
    assert by_arm["chosen"].tolist().count(True) == 1 and by_arm.loc["flat", "chosen"]  # validation, not test
    references = frame[frame["reference"]]  # each student's own no-KD students, never chosen
    assert references["arm"].tolist() == ["no KD", "no KD"] and set(references["student"]) == {"mlp_1", "vit_1"}
    assert references["test_translated_acc"].tolist() == pytest.approx([0.30, 0.50]) and not references["chosen"].any()
    assert (frame["trials"] == 3).all() and references["effect"].isna().all()
    assert "| no KD | mlp_1 |  | 3 |" in arm_tables.arms_markdown(frame)
    assert reports.main([str(study), "--versus", "flat", "--n-boot", str(N_BOOT)]) == 0
    table = capsys.readouterr().out
    assert "vs flat [95% CI]" in table and "| vit |" not in table  # another student is not compared


def test_arm_means_spreads_over_teacher_and_student_seeds():
    """The arms table's spreads: ± is the std of the teacher seeds' means, the student-seed std is
    the std within a teacher seed, averaged; epochs and metrics are plain means."""
    from study.analysis.arms import arm_means

    trials = pd.DataFrame({"teacher_seed": [0, 0, 1, 1], "test_translated_acc": [0.30, 0.32, 0.34, 0.38],
                           "epochs_done": [6, 8, 7, 7], "test_small_shift_acc": [0.5, 0.5, 0.6, 0.6]})
    row = arm_means(trials)
    assert row["trials"] == 4 and row["epochs_done"] == 7 and row["test_small_shift_acc"] == pytest.approx(0.55)
    assert row["teacher_seed_std"] == pytest.approx(np.std([0.31, 0.36], ddof=1))
    assert row["student_seed_std"] == pytest.approx((np.std([0.30, 0.32], ddof=1) + np.std([0.34, 0.38], ddof=1)) / 2)
    one_teacher = arm_means(trials.drop(columns="teacher_seed"))  # no-KD students: no teacher spread
    assert np.isnan(one_teacher["teacher_seed_std"]) and one_teacher["student_seed_std"] > 0


def test_arms_table_reads_each_arms_teachers_from_their_banks(tmp_path):
    """The teacher column is the mean, over the arm's teacher seeds, of the distilled snapshot's
    accuracies in the banks' manifests; no-KD rows and missing banks leave it empty."""
    from study.analysis import arms as arm_tables

    arms = [{**BASE, "test": 0.30}, {"arm": "cnn", "variant": "normal_kd", "teachers": "cnn_1", "teacher_step": 50,
                                     "test": 0.40}]
    study = write_study(tmp_path, "teach", arms, teacher_seeds=(0, 1))
    banks = tmp_path / "banks"
    for seed, (clean, translated) in enumerate([(0.90, 0.50), (0.96, 0.60)]):
        bank = banks / "mnist" / "cnn_1" / f"seed-{seed}"
        bank.mkdir(parents=True)
        (bank / "manifest.json").write_text(json.dumps(
            {"scoring": {"subset": "stratified", "seed": 0},
             "snapshots": {"50": {"clean_acc": clean, "translated_acc": translated}, "100": {"clean_acc": 0.0,
                                                                                       "translated_acc": 0.0}}}))
    (study / "study.json").write_text(json.dumps({"plan": {"teacher_banks": str(banks), "dataset": "mnist"}}))
    table = normalise(pd.read_csv(study / "reports" / "trials.csv"))
    frame = arm_tables.arm_effects(table, study, n_boot=N_BOOT).set_index("arm")
    assert frame.loc["cnn", "teacher_clean_acc"] == pytest.approx(0.93)
    assert frame.loc["cnn", "teacher_translated_acc"] == pytest.approx(0.55)
    assert np.isnan(frame.loc["no KD", "teacher_clean_acc"])
    assert "| 0.930 / 0.550* |" in arm_tables.arms_markdown(frame.reset_index())  # *: the bank's scoring images
    # a mean over teachers, not over trials: a teacher seed with more students does not weigh more
    unbalanced = table[~((table["teacher_seed"] == 1) & (table["seed"] > 0))]
    assert arm_tables.teacher_accuracies(unbalanced[unbalanced["arm"] == "cnn"], study)["teacher_clean_acc"] == \
        pytest.approx(0.93)
    (study / "study.json").write_text(json.dumps({"plan": {"teacher_banks": str(tmp_path / "gone"), "dataset": "mnist"}}))
    assert "teacher_clean_acc" not in arm_tables.arm_effects(table, study, n_boot=N_BOOT)


def test_a_cell_with_one_run_per_arm_says_its_interval_is_image_noise_only(tmp_path):
    kd_vs_none = next(f for f in findings.POSTER if f.space == "kd_types")
    one = write_study(tmp_path, "one", [{**BASE, "test": 0.30}, {"variant": "normal_kd", "teacher_step": 50,
                                                                  "test": 0.40}], seeds=(0,))
    [cell] = analyse_study(one, [kd_vs_none], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    assert cell.effect.n_units == 1 and "test-image noise only" in cell.note
    three = write_study(tmp_path, "three", [{**BASE, "test": 0.30}, {"variant": "normal_kd", "teacher_step": 50,
                                                                      "test": 0.40}])
    [cell] = analyse_study(three, [kd_vs_none], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    assert cell.effect.n_units == 3 and cell.note == ""


def seed_split_studies(root: Path, plan_b: dict | None = None) -> tuple[Path, Path, Path]:
    """The kd_types design run twice, seed 0 (study ``a``) then seeds 1 and 2 (study ``b``), and the
    same trials in one study (``all``): what pooling ``a`` with ``b`` must be equivalent to."""
    configs = [{**BASE, "test": 0.30}, {"variant": "normal_kd", "teacher_step": 50, "test": 0.36}]
    a, b = write_study(root, "a", configs, seeds=(0,)), write_study(root, "b", configs, seeds=(1, 2))
    plan = {"space": "kd_types", "dataset": "mnist", "train_subset": "all", "max_epochs": 10, "teacher_steps": 2500}
    (a / "study.json").write_text(json.dumps({"status": "finished", "wall_seconds": 100, "plan": plan}))
    (b / "study.json").write_text(json.dumps({"status": "finished", "wall_seconds": 200,
                                              "plan": {**plan, **(plan_b or {})}}))
    return a, b, merged_study(root / "all", [a, b])


def merged_study(whole: Path, parts: list[Path]) -> Path:
    """One study holding every trial and per-image result of ``parts``: what pooling them must equal."""
    (whole / "reports").mkdir(parents=True)
    pd.concat([pd.read_csv(d / "reports" / "trials.csv") for d in parts]).to_csv(
        whole / "reports" / "trials.csv", index=False)
    (whole / "predictions").mkdir()
    for d in parts:
        for path in (d / "predictions").glob("*.npz"):
            (whole / "predictions" / path.name).write_bytes(path.read_bytes())
    return whole


def test_pooled_studies_are_analysed_as_one_study_with_all_their_seeds(tmp_path):
    """Seeds added later (--pool) give exactly the cell that one study with every seed gives."""
    a, b, whole = seed_split_studies(tmp_path)
    kd_vs_none = next(f for f in findings.POSTER if f.space == "kd_types")
    [pooled] = analyse_study([a, b], [kd_vs_none], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    [single] = analyse_study(whole, [kd_vs_none], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    [seed_0] = analyse_study(a, [kd_vs_none], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    assert pooled.effect.n_units == 3 and seed_0.effect.n_units == 1
    assert vars(pooled.effect) == vars(single.effect)
    assert pooled.effect.estimate == pytest.approx(0.06, abs=0.03)


def test_studies_of_another_design_are_not_pooled(tmp_path):
    a, b, _ = seed_split_studies(tmp_path, plan_b={"max_epochs": 3})
    kd_vs_none = next(f for f in findings.POSTER if f.space == "kd_types")
    [cell] = analyse_study([a, b], [kd_vs_none], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    assert cell.verdict == "" and cell.effect is None
    assert "cannot pool b with a: they differ in max_epochs (3 vs 10)" in cell.note
    with pytest.raises(SystemExit, match="cannot pool b with a"):
        reproduce.pool(a, [b])


def test_teacher_seeds_added_later_are_pooled_with_the_student_seeds_of_the_first_teacher(tmp_path):
    """A study of teacher seeds 1 and 2 (student seed 0, ``teacher_seed`` searched) pools with the
    teacher-seed-0 study that never named the key: the cell has 3 teacher seeds and 5 KD units,
    the no-KD student of seed 0, which both studies trained, counts once (and the cell says so),
    and the cell is the one a single study holding every trial gives."""
    configs = [{**BASE, "test": 0.30}, {"variant": "normal_kd", "teacher_step": 50, "test": 0.36}]
    a = write_study(tmp_path, "a", configs, seeds=(0, 1, 2))
    b = write_study(tmp_path, "b", [configs[0], {**configs[1], "teacher_seeds": (1, 2)}], seeds=(0,))
    plan = {"space": "kd_types", "dataset": "mnist", "train_subset": "all", "max_epochs": 10, "teacher_steps": 2500,
            "fixed": {"student": "mlp_1", "teachers": "cnn_1", "alpha": 0.5}, "searched": ["seed", "teacher_step"]}
    (a / "study.json").write_text(json.dumps({"status": "finished", "plan": plan}))
    (b / "study.json").write_text(json.dumps({"status": "finished", "plan": {
        **plan, "searched": ["seed", "teacher_seed", "teacher_step"]}}))
    whole = merged_study(tmp_path / "all", [a, b])

    kd_vs_none = next(f for f in findings.POSTER if f.space == "kd_types")
    [pooled] = analyse_study([a, b], [kd_vs_none], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    [single] = analyse_study(whole, [kd_vs_none], "mnist", metrics=[PRIMARY], n_boot=N_BOOT)
    assert (pooled.effect.n_teacher_seeds, pooled.effect.n_student_seeds, pooled.effect.n_units) == (3, 3, 5)
    assert pooled.effect.n == f"3x3x{N_IMAGES} (5 runs)"  # not a 3 x 3 grid of runs
    assert pooled.note == "1 replicate trial(s) of a unit left out"
    assert vars(pooled.effect) == vars(single.effect)
    assert pooled.effect.estimate == pytest.approx(0.06, abs=0.03)

    (b / "study.json").write_text(json.dumps({"status": "finished", "plan": {
        **plan, "searched": ["seed", "teacher_seed", "teacher_step"], "fixed": {**plan["fixed"], "alpha": 0.9}}}))
    with pytest.raises(SystemExit, match="cannot pool b with a: they differ in fixed"):
        reproduce.pool(a, [b])


def test_cli_pools_a_finished_study_into_the_one_it_runs(tmp_path, monkeypatch):
    """``--pool kd_types=A`` adds A's seeds to the kd_types study of the command: the result file
    (``-pooled``, never the unpooled run's name) has every seed, names both studies and counts
    both studies' compute; a --pool that is not a finished study of that space is one line."""
    a, b, _ = seed_split_studies(tmp_path)
    monkeypatch.setattr(reproduce.subprocess, "run", lambda *a, **k: pytest.fail("a finished study was re-run"))
    docs = tmp_path / "docs"
    common = ["--spaces", "kd_types", "--docs", str(docs), "--n-boot", str(N_BOOT), "--output-dir", str(tmp_path)]
    assert reproduce.main([*common, "--study", f"kd_types={b}", "--pool", f"kd_types={a}"]) == 0
    text = (docs / "results" / "full-mnist-kd_types-pooled.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| 1. KD makes"))
    assert row.rstrip(" |").endswith(f"1x3x{N_IMAGES}")
    assert "Pooled studies of `kd_types/mnist` (same design and budget, other seeds): `b`, `a`." in text
    saved = json.loads((docs / "results" / "full-mnist-kd_types-pooled.json").read_text())
    assert saved["studies"] == {"kd_types/mnist": ["b", "a"]}
    assert saved["study_seconds"] == {"kd_types/mnist": 200, "kd_types/mnist+a": 100}
    assert f"--pool kd_types={a}" in saved["command"]
    assert not (docs / "results" / "full-mnist-kd_types.md").exists()

    (tmp_path / "running").mkdir()
    (tmp_path / "running" / "study.json").write_text(json.dumps(
        {"status": "running", "plan": {"space": "kd_types", "dataset": "mnist"}}))
    for pool, message in ((f"kd_types={tmp_path / 'nowhere'}", "no study at"),
                          (f"alpha_sweep={a}", "that study ran space 'kd_types', not 'alpha_sweep'"),
                          (f"kd_types={tmp_path / 'running'}", "is 'running', not finished; resume it first"),
                          ("kd_types", "--pool wants SPACE=DIR")):
        with pytest.raises(SystemExit, match=message):
            reproduce.main([*common, "--study", f"kd_types={b}", "--pool", pool])
    with pytest.raises(SystemExit, match="names a study of a space this command does not run: kd_types on mnist"):
        reproduce.main([*common[:1], "alpha_sweep", *common[2:], "--study", f"alpha_sweep={b}", "--pool", f"kd_types={a}"])


def test_a_finding_studys_configurations_are_tabled_by_teacher_seed(tmp_path, capsys):
    """A finding's study has no named arms: its result file lists each configuration of the searched
    parameters (seeds aside) with every teacher seed's mean, no KD first, steps in numeric order,
    and a unit that pooled studies both trained counted once."""
    from study.analysis.arms import config_means

    nan = float("nan")
    table = pd.DataFrame([
        {"variant": "no_kd", "teacher_step": nan, "teacher_seed": None, "seed": s, "test_translated_acc": a}
        for s, a in ((0, 0.28), (1, 0.30))] + [
        {"variant": "normal_kd", "teacher_step": step, "teacher_seed": t, "seed": s, "test_translated_acc": a}
        for step, t, s, a in ((1000, 0, 0, 0.31), (1000, 0, 1, 0.33), (250, 0, 0, 0.34), (250, 0, 1, 0.36),
                              (250, 1, 0, 0.41), (250, 0, 0, 0.99))])  # the last: a replicate of a unit
    frame = config_means(table.assign(state="completed"), ["teacher_step"])
    assert frame["config"].tolist() == ["no KD", "teacher_step=250", "teacher_step=1000"]
    assert frame["trials"].tolist() == [2, 3, 2]
    step_250 = frame.iloc[1]
    assert step_250["by_teacher_seed"] == {0: pytest.approx(0.35), 1: pytest.approx(0.41)}
    assert step_250["test_translated_acc"] == pytest.approx((0.34 + 0.36 + 0.41) / 3)  # every run weighs the same
    assert step_250["teacher_seed_std"] == pytest.approx(np.std([0.35, 0.41], ddof=1))
    assert not isinstance(frame.iloc[0].get("by_teacher_seed"), dict)  # no KD has no teacher

    configs = [{**BASE, "test": 0.30}, {"variant": "normal_kd", "teacher_step": 250, "test": 0.36},
               {"variant": "normal_kd", "teacher_step": 1000, "test": 0.33}]
    a = write_study(tmp_path, "a", configs, seeds=(0, 1, 2))
    b = write_study(tmp_path, "b", [configs[0]] + [{**c, "teacher_seeds": (1, 2)} for c in configs[1:]], seeds=(0,))
    plan = {"space": "snapshot_sweep", "dataset": "mnist", "searched": ["seed", "teacher_step"]}
    (a / "study.json").write_text(json.dumps({"status": "finished", "plan": plan}))
    (b / "study.json").write_text(json.dumps({"status": "finished", "plan": {
        **plan, "searched": ["seed", "teacher_seed", "teacher_step"]}}))
    [(title, text)] = reproduce.arms_sections({"mnist": {"snapshot_sweep": [a, b]}}, N_BOOT).items()
    assert title == "Configurations of `snapshot_sweep` on mnist"
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| configuration")]
    assert [(r[0], r[1]) for r in rows] == [("no KD", "3"), ("teacher_step=250", "5"), ("teacher_step=1000", "5")]
    assert rows[1][5] == "0: 0.3600 · 1: 0.3600 · 2: 0.3600"
    from study.analysis import reports  # the same table from the command line, for studies outside a reproduction
    assert reports.main([str(a), str(b)]) == 0 and capsys.readouterr().out == text
    assert reports.main([str(a), str(tmp_path / "missing")]) == 2  # one line, not a traceback


def test_a_named_budget_runs_its_flags_and_names_its_files(tmp_path, monkeypatch):
    """``--budget pilot`` (a KD scheme's first look): the study it runs gets the pilot's flags, and
    the study and result files carry the budget's name."""
    ran = []

    def fake_run(cmd, **kwargs):
        ran.append(cmd)
        name = cmd[cmd.index("--study-name") + 1]
        study = tmp_path / "runs" / "studies" / name
        write_study(tmp_path / "runs" / "studies", name, [{**BASE, "test": 0.3}, {"arm": "kd", "variant": "normal_kd",
                                                                                  "test": 0.4}])
        (study / "study.json").write_text(json.dumps({"status": "finished", "wall_seconds": 1}))
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(reproduce.subprocess, "run", fake_run)
    assert reproduce.main(["--budget", "pilot", "--spaces", "transfer", "--output-dir", str(tmp_path / "runs"),
                           "--docs", str(tmp_path / "docs"), "--n-boot", str(N_BOOT)]) == 0
    (cmd,) = ran
    flags = {a: b for a, b in zip(cmd, cmd[1:]) if a.startswith("--") and not b.startswith("--")}
    assert flags["--study-name"] == "repro-transfer-mnist-pilot" and flags["--train-subset"] == "10000"
    assert flags["--max-epochs"] == "20" and flags["--patience"] == "0" and flags["--test-images"] == "0"
    text = (tmp_path / "docs" / "results" / "pilot-mnist-transfer.md").read_text()
    assert "--budget pilot" in text and "T0. Normal KD beats no KD" in text


def test_the_recorded_command_keeps_the_min_epochs_floor(tmp_path, monkeypatch):
    """A result file made with ``--min-epochs 8`` is named for it and its command says so: the command
    is how a reader re-makes the file, and without the floor it would make another study."""
    _, b, _ = seed_split_studies(tmp_path)
    monkeypatch.setattr(reproduce.subprocess, "run", lambda *a, **k: pytest.fail("a finished study was re-run"))
    docs = tmp_path / "docs"
    assert reproduce.main(["--spaces", "kd_types", "--docs", str(docs), "--n-boot", str(N_BOOT), "--output-dir",
                           str(tmp_path), "--study", f"kd_types={b}", "--min-epochs", "8"]) == 0
    saved = json.loads((docs / "results" / "full-min8-mnist-kd_types.json").read_text())
    assert " --min-epochs 8" in saved["command"] and saved["budget"]["min_epochs"] == 8
