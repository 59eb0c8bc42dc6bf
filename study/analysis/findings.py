"""The poster's findings as data, and the analysis that turns finished studies into verdicts.

A finding is a claim about two *arms* of one study (each arm: row filters on the study's trials
table, plus how one configuration is chosen when several match) and the claimed direction. The
analysis scores each cell with :func:`study.analysis.stats.paired_effect` on the **test** per-image results
(``<study>/predictions/<trial_id>.npz``) and decides with Holm's correction over all cells of a
reproduction.

No choice looks at the test set. Every "best" (the best earlier snapshot, the best other KD
variant, the best single teacher) is picked on the validation column ``SELECT_ON`` of the trials
table (the study's own objective), averaged over seeds; only then is the chosen arm scored on
test images. Fixed choices (weakest / strongest step, lowest / highest alpha) use the design only.
The arms are chosen once, on the primary metric's validation column, and the same arms are
scored on every metric, so a cell means the same comparison in every row.

Metrics: ``PRIMARY`` (``translated``, accuracy over the 32 non-zero shifts) was declared before any
run and alone carries verdicts, with one Holm family over every cell of the reproduction (all
findings, all datasets). ``small_shift`` (2-4 px) and ``translated_over_clean`` (robustness net of
clean accuracy, so a student that merely learned faster does not count as more robust) are
secondary: each gets its own Holm family and is reported with its adjusted p, without a verdict.

A cell whose arms are missing (a study not run, no per-image results, an arm with no rows) is
skipped with a note, never an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from study.analysis.stats import Effect, format_p, holm, paired_effect, verdict
from study.analysis.studies import Predictions, Skip, load_trials

PRIMARY = "translated"
SECONDARY = ("small_shift", "translated_over_clean")
SELECT_ON = "val_translated_acc"


# ---------------------------------------------------------------------------------------------
# Row conditions: a value in ``ArmSpec.where`` is either a plain value (equality) or one of these.

@dataclass(frozen=True)
class Cond:
    """A condition on one column, given the whole KD part of that column (for min / max)."""

    name: str
    test: Callable[[pd.Series, pd.Series], pd.Series] = field(compare=False)

    def __call__(self, column: pd.Series, kd_column: pd.Series) -> pd.Series:
        return self.test(column, kd_column)

    def __repr__(self) -> str:
        return self.name


def ne(value: Any) -> Cond:
    return Cond(f"!= {value}", lambda c, _: c != value)


def weakest() -> Cond:
    """The smallest value among KD rows (the weak snapshot of a weak/strong design)."""
    return Cond("weakest", lambda c, kd: np.isclose(c.astype(float), kd.astype(float).min()))


def strongest() -> Cond:
    return Cond("strongest", lambda c, kd: np.isclose(c.astype(float), kd.astype(float).max()))


def below_max() -> Cond:
    """Every value but the largest among KD rows (the "earlier" snapshots)."""
    return Cond("< max", lambda c, kd: c.astype(float) < kd.astype(float).max())


def has(text: str) -> Cond:
    return Cond(f"contains {text!r}", lambda c, _: c.astype(str).str.contains(text, regex=False))


def lacks(text: str) -> Cond:
    return Cond(f"lacks {text!r}", lambda c, _: ~c.astype(str).str.contains(text, regex=False))


# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ArmSpec:
    """One arm: ``where`` filters rows (column -> value or :class:`Cond`); ``config`` names the
    columns that tell configurations apart; ``choose`` picks one: ``only`` (exactly one matches),
    ``best_val`` (highest seed-mean ``SELECT_ON``), ``min:<col>`` / ``max:<col>`` (by design)."""

    label: str
    where: Mapping[str, Any]
    config: tuple[str, ...] = ()
    choose: str = "only"


NO_KD = ArmSpec("no KD", {"variant": "no_kd"})


@dataclass(frozen=True)
class Finding:
    """A claim: arm ``a`` beats arm ``b`` (``direction`` +1) or loses to it (-1), in study ``space``."""

    claim: str
    space: str
    a: ArmSpec
    b: ArmSpec
    direction: int = 1


POSTER: tuple[Finding, ...] = (
    Finding("1. KD makes the MLP more translation-robust", "kd_types",
            ArmSpec("normal KD, weak teacher", {"variant": "normal_kd", "teacher_step": weakest()}), NO_KD),
    Finding("2. An early teacher snapshot beats a late, strong one", "snapshot_sweep",
            ArmSpec("best earlier step (validation)", {"variant": "normal_kd", "teacher_step": below_max()},
                    ("teacher_step",), "best_val"),
            ArmSpec("last step", {"variant": "normal_kd"}, ("teacher_step",), "max:teacher_step")),
    Finding("3. A weak teacher beats a strong one even with label smoothing", "label_smoothing",
            ArmSpec("weak, no LS", {"variant": "normal_kd", "teacher_step": weakest(), "teacher_label_smoothing": 0.0}),
            ArmSpec("strong + LS", {"variant": "normal_kd", "teacher_step": strongest(),
                                     "teacher_label_smoothing": ne(0.0)}, ("teacher_label_smoothing",),
                    "max:teacher_label_smoothing")),
    *(Finding(f"4. Type 1 (FM only) is the most robust ({name} teacher)", "kd_types",
              ArmSpec("type_1", {"variant": "type_1", "teacher_step": step()}),
              ArmSpec("best other KD variant (validation)", {"variant": ne("type_1"), "teacher_step": step()},
                      ("variant",), "best_val"))
      for name, step in (("weak", weakest), ("strong", strongest))),
    Finding("5. Larger alpha gives a less robust student", "alpha_sweep",
            ArmSpec("lowest alpha", {"variant": "normal_kd"}, ("alpha",), "min:alpha"),
            ArmSpec("highest alpha", {"variant": "normal_kd"}, ("alpha",), "max:alpha")),
    Finding("6. Two teachers (convolution + involution) beat the best single one", "teacher_combinations",
            ArmSpec("two teachers", {"variant": "normal_kd", "teachers": has("+")}, ("teachers",), "best_val"),
            ArmSpec("best single teacher (validation)", {"variant": "normal_kd", "teachers": lacks("+")},
                    ("teachers",), "best_val")),
)

CONTROL_SPACE = "inductive_bias"


def control_findings(table: pd.DataFrame, space: str = CONTROL_SPACE) -> list[Finding]:
    """The inductive-bias controls for whatever CNN / MLP teacher steps the study has (a=0.5 arms):
    a KD gain is evidence of transferred inductive bias only if the CNN teacher beats the MLP one."""
    kd = table[table["variant"] != "no_kd"]
    main = kd[np.isclose(kd["alpha"].astype(float), 0.5)]

    def steps(teacher: str) -> list[int]:
        return sorted(int(s) for s in main.loc[main["teachers"] == teacher, "teacher_step"].dropna().unique())

    def arm(teacher: str, step: int, alpha: float = 0.5) -> ArmSpec:
        name = {"cnn_1": "CNN", "mlp_1": "MLP"}.get(teacher, teacher)
        soft = " soft-only" if alpha == 0 else ""
        return ArmSpec(f"{name}@{step}{soft}", {"teachers": teacher, "teacher_step": step, "alpha": alpha})

    cnn, mlp = steps("cnn_1"), steps("mlp_1")
    out = [Finding(f"C1. KD from a CNN teacher (step {s}) beats no KD", space, arm("cnn_1", s), NO_KD) for s in cnn]
    out += [Finding(f"C2. KD from an MLP teacher (step {s}) beats no KD", space, arm("mlp_1", s), NO_KD) for s in mlp]
    out += [Finding(f"C3. A CNN teacher beats an MLP teacher (step {s}): inductive bias, not KD alone", space,
                    arm("cnn_1", s), arm("mlp_1", s)) for s in cnn if s in mlp]
    # every earlier snapshot against the last one: with steps 250 / 2,500 / 25,000 this includes the
    # poster's own comparison, its weak teacher (~2,500) against its strong one (25,000)
    out += [Finding(f"C4. An early CNN snapshot (step {s}) beats a late one (step {cnn[-1]})", space,
                    arm("cnn_1", s), arm("cnn_1", cnn[-1])) for s in cnn[:-1]]
    soft = kd[np.isclose(kd["alpha"].astype(float), 0.0) & (kd["teachers"] == "cnn_1")]
    for s in sorted(int(x) for x in soft["teacher_step"].dropna().unique()):
        out.append(Finding(f"C5. Soft labels alone (a=0, CNN step {s}) beat no KD", space, arm("cnn_1", s, 0.0), NO_KD))
    return out


TRANSFER_SPACE = "transfer"


def transfer_findings(table: pd.DataFrame, space: str = TRANSFER_SPACE) -> list[Finding]:
    """The questions of a study of KD schemes (the ``transfer`` space), from its arm names: every
    scheme against normal KD (``kd``); a scheme on views (``fm_<view>``) against its augmentation
    control (``aug_<view>``: the same views and schedule, true labels, no teacher), so that a gain
    counts as the teacher's only if the views alone do not give it; and against the same views from
    an MLP teacher (``mlp_teacher_<view>``), so that a scheme that helps with any teacher is told
    apart from one that carries the CNN's bias. ``kd`` itself is compared with the no-KD baselines. An arm
    named after another scheme plus a suffix (``fm_erase_k16``, ``fm_mixup_maxpool``) varies that scheme
    in one respect, and is also compared with it: the paired test of whether the change helps."""
    arms = set(table["arm"].dropna().astype(str)) if "arm" in table else set()

    def arm(name: str) -> ArmSpec:
        return ArmSpec(name, {"arm": name})

    out = []
    if "kd" in arms:
        out.append(Finding("T0. Normal KD beats no KD", space, arm("kd"), ArmSpec("no KD", {"baseline": True})))
    schemes = sorted(a for a in arms if a not in ("kd", "no_kd") and not a.startswith(("aug_", "mlp_")))
    if "kd" in arms:
        out += [Finding(f"T1. {s} beats normal KD", space, arm(s), arm("kd")) for s in schemes]
    for s in schemes:
        view = s.removeprefix("fm_")
        if s.startswith("fm_") and f"aug_{view}" in arms:
            out.append(Finding(f"T2. {s} beats its augmentation control (same views, no teacher)", space, arm(s),
                               arm(f"aug_{view}")))
        if s.startswith("fm_") and f"mlp_teacher_{view}" in arms:
            out.append(Finding(f"T3. {s}: a CNN teacher beats an MLP teacher on the same views", space, arm(s),
                               arm(f"mlp_teacher_{view}")))
        base = max((b for b in schemes if b != s and s.startswith(b + "_")), key=len, default=None)
        if base is not None:  # a variation of another scheme (fm_erase_k16 of fm_erase): does the change help?
            out.append(Finding(f"T4. {s} beats {base}, the scheme it varies", space, arm(s), arm(base)))
    return out


#: Spaces whose findings come from the study's own arms: (function, label of a skipped cell).
DERIVED = {CONTROL_SPACE: (control_findings, "C. inductive-bias controls"),
           TRANSFER_SPACE: (transfer_findings, "T. KD schemes for transfer")}


# ---------------------------------------------------------------------------------------------
# Arms

def _matches(table: pd.DataFrame, where: Mapping[str, Any]) -> pd.Series:
    mask = pd.Series(True, index=table.index)
    kd = table[table["variant"] != "no_kd"]
    for column, value in where.items():
        if column not in table:
            raise Skip(f"no column {column!r} in the trials table")
        col = table[column]
        if isinstance(value, Cond):
            mask &= pd.Series(value(col, kd[column]), index=table.index).fillna(False).astype(bool)
        elif isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
            mask &= pd.Series(np.isclose(pd.to_numeric(col, errors="coerce").astype(float), value), index=table.index)
        else:
            mask &= col == value
    return mask


def choose_arm(table: pd.DataFrame, spec: ArmSpec) -> tuple[pd.DataFrame, str]:
    """The rows of the one configuration ``spec`` picks, and a description of that pick. Never
    reads a ``test_*`` column: ``best_val`` ranks on ``SELECT_ON`` only."""
    rows = table[_matches(table, spec.where)]
    if rows.empty:
        raise Skip(f"no completed trials for arm {spec.label!r}")
    if not spec.config:
        return rows, spec.label
    groups = rows.groupby(list(spec.config), dropna=False)
    if spec.choose == "only":
        if groups.ngroups != 1:
            raise Skip(f"arm {spec.label!r} matches {groups.ngroups} configurations")
        key = next(iter(groups.groups))
    elif spec.choose == "best_val":
        if SELECT_ON not in rows:
            raise Skip(f"no {SELECT_ON} column to choose {spec.label!r} on")
        key = groups[SELECT_ON].mean().idxmax()
    elif spec.choose.startswith(("min:", "max:")):
        column = spec.choose[4:]
        values = groups[column].first().astype(float)
        key = values.idxmin() if spec.choose.startswith("min:") else values.idxmax()
    else:
        raise ValueError(f"unknown choice rule {spec.choose!r}")
    key = key if isinstance(key, tuple) else (key,)
    chosen = rows[_matches(rows, dict(zip(spec.config, key)))]
    picked = ", ".join(f"{c}={_short(k)}" for c, k in zip(spec.config, key))
    return chosen, f"{spec.label} [{picked}]"


def _short(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


# ---------------------------------------------------------------------------------------------
# Cells, verdicts, tables

@dataclass
class Cell:
    """One finding x dataset x metric: its effect (or why there is none) and, later, its verdict."""

    finding: str
    dataset: str
    space: str
    comparison: str
    metric: str
    direction: int
    effect: Effect | None = None
    note: str = ""
    adjusted_p: float = math.nan
    verdict: str = ""


def single_run_note(effect: Effect) -> str:
    """With one run per arm the bootstrap can only resample test images: its interval says these
    two students differ, not that the configurations do. The verdict says so."""
    return "one run per arm: the CI covers test-image noise only, not seed-to-seed variation" \
        if effect.n_units == 1 else ""


def analyse_study(study_dir: Path | Sequence[Path], findings: Iterable[Finding], dataset: str,
                  metrics: Sequence[str] = (PRIMARY, *SECONDARY), n_boot: int = 10_000, seed: int = 0) -> list[Cell]:
    """Effects of ``findings`` (all of one study, or of pooled studies of one design) on every
    metric, scored on test per-image results."""
    findings = list(findings)
    try:
        table = load_trials(study_dir)
    except Skip as why:
        return [Cell(f.claim, dataset, f.space, f"{f.a.label} vs {f.b.label}", m, f.direction, note=str(why))
                for f in findings for m in metrics]
    predictions = Predictions(study_dir, "test")
    cells = []
    for finding in findings:
        comparison = f"{finding.a.label} vs {finding.b.label}"
        try:
            rows_a, desc_a = choose_arm(table, finding.a)
            rows_b, desc_b = choose_arm(table, finding.b)
            comparison = f"{desc_a} vs {desc_b}"
            (arm_a, dropped_a), (arm_b, dropped_b) = predictions.arm(rows_a), predictions.arm(rows_b)
            note = f"{dropped_a + dropped_b} replicate trial(s) of a unit left out" if dropped_a + dropped_b else ""
            for metric in metrics:
                effect = paired_effect(arm_a, arm_b, metric, n_boot=n_boot, seed=seed)
                cells.append(Cell(finding.claim, dataset, finding.space, comparison, metric, finding.direction, effect,
                                  note="; ".join(filter(None, [note, single_run_note(effect)]))))
        except (Skip, ValueError) as why:
            cells += [Cell(finding.claim, dataset, finding.space, comparison, m, finding.direction, note=str(why))
                      for m in metrics]
    return cells


def analyse(study_dirs: Mapping[str, Mapping[str, Path | Sequence[Path]]], n_boot: int = 10_000, seed: int = 0,
            controls: bool = True, only_given: bool = False) -> list[Cell]:
    """All cells of a reproduction: ``study_dirs[dataset][space]`` (a study, or pooled studies) -> cells with Holm-adjusted p
    (one family per metric, across every finding and dataset) and verdicts on ``PRIMARY``.

    A finding whose study is missing is a skipped cell, or left out with ``only_given`` (a run
    that chose its spaces)."""
    cells: list[Cell] = []
    for dataset, dirs in study_dirs.items():
        for space in dict.fromkeys(f.space for f in POSTER):
            findings = [f for f in POSTER if f.space == space]
            if space not in dirs:
                if only_given:
                    continue
                cells += [Cell(f.claim, dataset, space, f"{f.a.label} vs {f.b.label}", m, f.direction,
                               note=f"study {space!r} not run") for f in findings for m in (PRIMARY, *SECONDARY)]
                continue
            cells += analyse_study(dirs[space], findings, dataset, n_boot=n_boot, seed=seed)
        for space, (derive, label) in DERIVED.items():
            if space not in dirs or (space == CONTROL_SPACE and not controls):
                continue
            try:
                derived = derive(load_trials(dirs[space]))
            except Skip as why:
                cells.append(Cell(label, dataset, space, "", PRIMARY, 1, note=str(why)))
            else:
                cells += analyse_study(dirs[space], derived, dataset, n_boot=n_boot, seed=seed)
    return decide(cells)


def decide(cells: list[Cell]) -> list[Cell]:
    """Holm within each metric's family; verdicts for the primary metric only."""
    out = list(cells)
    for metric in dict.fromkeys(c.metric for c in cells):
        family = [i for i, c in enumerate(out) if c.metric == metric and c.effect is not None]
        adjusted = holm([out[i].effect.p_value for i in family])
        for i, p in zip(family, adjusted):
            cell = out[i]
            label = verdict(cell.effect, float(p), cell.direction) if metric == PRIMARY else "secondary"
            out[i] = replace(cell, adjusted_p=float(p), verdict=label)
    for i, cell in enumerate(out):
        if cell.effect is None:
            out[i] = replace(cell, verdict="skipped")
    return out


def verdict_table(cells: Sequence[Cell]) -> pd.DataFrame:
    """finding, comparison, metric, effect [95% CI], Holm-adjusted p, verdict, MDE, n."""
    rows = []
    for c in cells:
        e = c.effect
        rows.append({"finding": c.finding, "dataset": c.dataset, "comparison": c.comparison, "metric": c.metric,
                     "effect [95% CI]": "" if e is None else e.format(digits=4).rsplit(",", 1)[0],
                     "Holm-adjusted p": "" if e is None else format_p(c.adjusted_p).replace("= ", ""),
                     "verdict": (c.verdict + (f" ({c.note})" if c.note else "")) if e is not None
                     else f"skipped: {c.note}",
                     "MDE": "" if e is None else f"{e.mde:.4f}",
                     "n (teacher seeds x student seeds x images)": "" if e is None else e.n})
    return pd.DataFrame(rows)


def cells_json(cells: Sequence[Cell]) -> list[dict]:
    """Every number of every cell, for the JSON beside the markdown."""
    out = []
    for c in cells:
        row = {"finding": c.finding, "dataset": c.dataset, "space": c.space, "comparison": c.comparison,
               "metric": c.metric, "direction": c.direction, "verdict": c.verdict, "note": c.note,
               "adjusted_p": None if math.isnan(c.adjusted_p) else c.adjusted_p}
        if c.effect is not None:
            row.update({k: v for k, v in vars(c.effect).items() if k != "metric"})
        out.append(row)
    return out
