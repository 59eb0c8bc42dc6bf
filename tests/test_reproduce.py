"""The reproduction's verdict rules, on trial tables built here (no study runs).

The verdicts in docs/RESULTS.md are computed, not written by hand: these tests pin
that a clear effect reads "reproduced", the opposite effect "not reproduced", and
an effect inside the seeds' noise "inconclusive".
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def reproduce():
    spec = importlib.util.spec_from_file_location("reproduce", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_separated_needs_a_gap_beyond_the_noise(reproduce):
    assert reproduce.separated(0.30, 0.01, 0.25, 0.01)
    assert not reproduce.separated(0.30, 0.06, 0.25, 0.01)  # gap 0.05 < larger std 0.06
    assert not reproduce.separated(0.25, 0.01, 0.30, 0.01)  # a is worse
    assert reproduce.separated(0.30, float("nan"), 0.25, float("nan"))  # one seed: no std, plain comparison
    assert [reproduce.verdict(True, False), reproduce.verdict(False, True), reproduce.verdict(False, False)] == \
        ["reproduced", "not reproduced", "inconclusive"]


ROW = dict(state="completed", teachers="cnn_1", temperature=4.0, s_kl=1.0, s_fm=0.0, test_clean_acc=0.95,
           val_translated_acc=0.2, teacher_label_smoothing=0.0, alpha=0.5)


def _trials(rows: list[dict], noise: float) -> pd.DataFrame:
    """Three seeds per configuration around the given translated accuracy."""
    out = []
    for i, row in enumerate(rows):
        for seed, jitter in enumerate((-noise, 0.0, noise)):
            out.append({**ROW, "trial_id": f"t{i}-{seed}", "seed": seed, "baseline": False, **row,
                        "test_translated_acc": row["acc"] + jitter})
    return pd.DataFrame(out).drop(columns="acc")


def _write(root: Path, name: str, table: pd.DataFrame) -> Path:
    (root / name / "reports").mkdir(parents=True)
    table.to_csv(root / name / "reports" / "trials.csv", index=False)
    return root / name


def _study_dirs(root: Path, kd_gain: float, fm_gain: float, early_gain: float, alpha_slope: float,
                combo_gain: float, noise: float) -> dict[str, Path]:
    base = {"variant": "no_kd", "teacher_step": 0, "baseline": True, "acc": 0.20}
    kd_types = [base] + [{"variant": v, "teacher_step": s, "acc": 0.20 + kd_gain + (fm_gain if v == "type_1" else 0)}
                         for v in ("normal_kd", "type_1", "type_2") for s in (50, 500)]
    sweep = [base] + [{"variant": "normal_kd", "teacher_step": s, "acc": 0.20 + kd_gain + early_gain * (s < 500)}
                      for s in (50, 100, 500)]
    smoothing = [base] + [{"variant": "normal_kd", "teacher_step": s, "teacher_label_smoothing": ls,
                           "acc": 0.20 + kd_gain + early_gain * (s < 500)} for s, ls in ((50, 0.0), (500, 0.0), (500, 0.1))]
    alphas = [{"variant": "normal_kd", "teacher_step": 50, "alpha": a, "acc": 0.25 + alpha_slope * a}
              for a in (0.1, 0.5, 0.9)]
    combos = [{**base, "teachers": "none"}] + [
        {"variant": "normal_kd", "teacher_step": 50, "teachers": t, "acc": 0.20 + kd_gain + gain}
        for t, gain in (("cnn_1", 0.0), ("inn_1", -0.01), ("cnn_1+inn_1", combo_gain))]
    return {"kd_types": _write(root, "kd", _trials(kd_types, noise)),
            "teacher_combinations": _write(root, "combos", _trials(combos, noise)),
            "snapshot_sweep": _write(root, "sweep", _trials(sweep, noise)),
            "label_smoothing": _write(root, "ls", _trials(smoothing, noise)),
            "alpha_sweep": _write(root, "alpha", _trials(alphas, noise)),
            "leveled_kd": _write(root, "tpe", _trials(kd_types, noise))}


def _verdicts(reproduce, monkeypatch, tmp_path, **effects) -> list[str]:
    monkeypatch.setattr(reproduce, "save_figure", lambda fig, name, docs: name)  # no Chromium in unit tests
    rows, sections = reproduce.analyse("mnist", _study_dirs(tmp_path, **effects), tmp_path, "quick")
    assert len(sections) == 6
    return [row["verdict"] for row in rows]


def test_clear_effects_read_reproduced(reproduce, monkeypatch, tmp_path):
    assert _verdicts(reproduce, monkeypatch, tmp_path, kd_gain=0.05, fm_gain=0.03, early_gain=0.02,
                     alpha_slope=-0.05, combo_gain=0.02, noise=0.002) == ["reproduced"] * 7


def test_opposite_effects_read_not_reproduced(reproduce, monkeypatch, tmp_path):
    assert _verdicts(reproduce, monkeypatch, tmp_path, kd_gain=-0.05, fm_gain=-0.03, early_gain=-0.02,
                     alpha_slope=0.05, combo_gain=-0.02, noise=0.002) == ["not reproduced"] * 7


def test_effects_inside_the_noise_read_inconclusive(reproduce, monkeypatch, tmp_path):
    verdicts = _verdicts(reproduce, monkeypatch, tmp_path, kd_gain=0.001, fm_gain=0.001, early_gain=0.001,
                         alpha_slope=-0.001, combo_gain=0.001, noise=0.01)
    assert set(verdicts) == {"inconclusive"}, verdicts


def test_index_gathers_every_result_file(reproduce, tmp_path):
    for stem, dataset, verdict, seconds in (("full-mnist", "mnist", "reproduced", 3600),
                                            ("quick-cifar10", "cifar10", "inconclusive", 1800)):
        rows = [{"finding": "1. KD makes the MLP more translation-robust", "dataset": dataset, "verdict": verdict,
                 "key numbers": "x"}]
        (tmp_path / f"{stem}.json").write_text(reproduce.json.dumps(
            {"verdicts": rows, "study_seconds": {"kd_types": seconds}, "invocation_seconds": seconds,
             "command": "python scripts/reproduce.py"}))
    text = reproduce.write_index(tmp_path).read_text()
    assert "| 1. KD makes the MLP more translation-robust | cifar10 | quick | inconclusive | x |" in text
    assert "| 1. KD makes the MLP more translation-robust | mnist | full | reproduced | x |" in text
    assert "Total study wall time: 1.50 h" in text
