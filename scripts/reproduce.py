"""Re-run the seed poster's findings with the study's named spaces and write docs/RESULTS.md.

    python scripts/reproduce.py --quick             # MNIST, small budget, under 30 minutes on 2 CPU cores
    python scripts/reproduce.py                     # the budget docs/RESULTS.md reports
    python scripts/reproduce.py --datasets mnist fashion_mnist --teacher-steps 25000   # the poster's scale

Tables and figures go to docs/results/<budget>-<datasets>.{md,json} and docs/figures/;
docs/RESULTS.md is the hand-written page that discusses them. Every number comes from ``run_study.py`` studies (3 seeds per configuration, a no-KD
baseline per seed); finished studies are reused, so an interrupted reproduction
continues where it stopped. Verdicts are computed by the rules printed next to
them (a difference counts only when it exceeds the seeds' standard deviations).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import plotly.express as px

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from study.data import shift_grid, shift_name  # noqa: E402

METRIC = "test_translated_acc"

BUDGETS = {
    "quick": dict(teacher_steps=500, teacher_eval_images=100, train_subset=2000, max_epochs=2, val_images=500,
                  test_images=1000),
    "full": dict(teacher_steps=2500, teacher_eval_images=500, train_subset=10000, max_epochs=3, val_images=1000,
                 test_images=2000),
}
FINDING_SPACES = ["kd_types", "snapshot_sweep", "label_smoothing", "alpha_sweep", "teacher_combinations", "leveled_kd"]


def run_space(space: str, dataset: str, budget: dict, args) -> tuple[Path, float]:
    name = f"repro-{space}-{dataset}-{args.budget_name}"
    study_dir = Path(args.output_dir) / "studies" / name
    cmd = [sys.executable, "run_study.py", "--space", space, "--dataset", dataset, "--study-name", name,
           "--output-dir", args.output_dir, "--data-root", args.data_root, "--quiet",
           "--teacher-steps", str(budget["teacher_steps"]), "--train-subset", str(budget["train_subset"]),
           "--max-epochs", str(budget["max_epochs"]), "--val-images", str(budget["val_images"]),
           "--test-images", str(budget["test_images"]), "--teacher-eval-images", str(budget["teacher_eval_images"])]
    if args.no_download:
        cmd.append("--no-download")
    if space == "leveled_kd":
        cmd += ["--num-samples", str(args.tpe_trials)]
    state = study_dir / "study.json"
    if state.is_file():
        if json.loads(state.read_text()).get("status") == "finished":
            print(f"[reproduce] {name}: finished earlier, reused", flush=True)
            return study_dir, float(json.loads(state.read_text()).get("wall_seconds", 0))
        cmd.append("--resume")
    print(f"[reproduce] {' '.join(cmd)}", flush=True)
    started = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    return study_dir, time.time() - started


SMALL_SHIFT = "test_acc_2px"  # a supplementary column: the verdicts use METRIC, declared before the runs


def load_trials(study_dir: Path) -> pd.DataFrame:
    table = pd.read_csv(study_dir / "reports" / "trials.csv")
    # mean test accuracy over the 8 shifts of 2 px, where an MLP is not yet at chance and effects show most
    two_px = [c for c in (f"test_acc_shift/{shift_name(s)}" for s in shift_grid([2])[1:]) if c in table.columns]
    if two_px:
        table[SMALL_SHIFT] = table[two_px].mean(axis=1)
    return table[table["state"] == "completed"]


def mean_std(table: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    columns = [METRIC, SMALL_SHIFT, "test_clean_acc"] if SMALL_SHIFT in table else [METRIC, "test_clean_acc"]
    groups = table.groupby(by, dropna=False)
    agg = groups[columns].agg(["mean", "std"])
    agg.columns = [f"{m}_{s}" for m, s in agg.columns]
    agg["n"] = groups.size()
    return agg.reset_index()


def separated(a_mean: float, a_std: float, b_mean: float, b_std: float) -> bool:
    """a is better than b beyond noise: the gap exceeds the larger of the two standard deviations."""
    noise = max(x for x in (a_std, b_std, 0.0) if not math.isnan(x))
    return a_mean - b_mean > noise


def verdict(better: bool, worse: bool) -> str:
    return "reproduced" if better else ("not reproduced" if worse else "inconclusive")


def fmt(m: float, s: float) -> str:
    return f"{m:.4f} ± {0.0 if math.isnan(s) else s:.4f}"


def beats(a: pd.Series, b: pd.Series) -> bool:
    """Row a (of a mean_std table) is better than row b on METRIC beyond noise."""
    return separated(a[f"{METRIC}_mean"], a[f"{METRIC}_std"], b[f"{METRIC}_mean"], b[f"{METRIC}_std"])


def compare(claimed_better: pd.Series, other: pd.Series) -> str:
    """The verdict on "claimed_better beats other"."""
    return verdict(beats(claimed_better, other), beats(other, claimed_better))


def score(row: pd.Series) -> str:
    return fmt(row[f"{METRIC}_mean"], row[f"{METRIC}_std"])


def _cell(value) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else str(int(value)) if value.is_integer() and abs(value) >= 1 else f"{value:.4f}"
    return str(value)


def md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def with_baseline(trials: pd.DataFrame) -> pd.DataFrame:
    trials = trials.copy()
    trials.loc[trials["baseline"], "variant"] = "no_kd"
    trials.loc[trials["baseline"], "teacher_step"] = 0
    return trials


def save_figure(fig, name: str, docs: Path) -> str:
    """PNG via headless Chromium when available (HTML beside it always); returns the markdown link."""
    html = docs / "figures" / f"{name}.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(html, include_plotlyjs="cdn")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium:
        png = html.with_suffix(".png")
        with tempfile.TemporaryDirectory() as tmp:
            full = Path(tmp) / "fig.html"
            fig.write_html(full, include_plotlyjs=True)
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--no-first-run", "--disable-background-networking", "--disable-component-update",
                            f"--user-data-dir={tmp}/profile", "--window-size=1000,560", "--virtual-time-budget=4000",
                            f"--screenshot={png}", full.as_uri()], capture_output=True, timeout=120)
        if png.is_file():
            return f"![{name}](../figures/{png.name}) ([interactive](../figures/{html.name}))"
    return f"[{name} (interactive)](../figures/{html.name})"


def analyse(dataset: str, dirs: dict[str, Path], docs: Path, budget_name: str) -> tuple[list[dict], list[str]]:
    rows, sections = [], []
    suffix = f"_{dataset}_{budget_name}"

    # F1 + F4: kd_types (variants x weak/strong, baselines per seed)
    kd = with_baseline(load_trials(dirs["kd_types"]))
    steps = sorted(s for s in kd["teacher_step"].unique() if s > 0)
    weak, strong = steps[0], steps[-1]
    agg = mean_std(kd, ["variant", "teacher_step"])
    base = agg[agg["variant"] == "no_kd"].iloc[0]
    normal_weak = agg[(agg["variant"] == "normal_kd") & (agg["teacher_step"] == weak)].iloc[0]
    rows.append({"finding": "1. KD makes the MLP more translation-robust", "dataset": dataset,
                 "verdict": compare(normal_weak, base),
                 "key numbers": f"normal KD (weak, step {int(weak)}) {score(normal_weak)} vs no KD {score(base)}"})
    for step in (weak, strong):
        ranked = agg[(agg["teacher_step"] == step) | (agg["variant"] == "no_kd")].sort_values(
            f"{METRIC}_mean", ascending=False)
        top, second = ranked.iloc[0], ranked.iloc[1]
        is_t1 = top["variant"] == "type_1"
        t1 = ranked[ranked["variant"] == "type_1"].iloc[0]
        rows.append({"finding": f"4. Type 1 (FM only) is the most robust ({'weak' if step == weak else 'strong'} teacher)",
                     "dataset": dataset,
                     "verdict": verdict(is_t1 and beats(top, second), not is_t1 and beats(top, t1)),
                     "key numbers": f"type_1 (best) {score(top)} vs runner-up {second['variant']} {score(second)}"
                     if is_t1 else f"best {top['variant']} {score(top)}; type_1 {score(t1)}"})
    fig = px.bar(agg.assign(teacher=agg["teacher_step"].map(lambda s: "none" if s == 0 else f"step {s}")),
                 x="variant", y=f"{METRIC}_mean", error_y=f"{METRIC}_std", color="teacher", barmode="group",
                 title=f"{dataset}: translated test accuracy by KD type and teacher snapshot (mean ± std, 3 seeds)")
    sections.append(f"### KD types ({dataset})\n\n{md_table(agg)}\n\n{save_figure(fig, 'kd_types' + suffix, docs)}\n")

    # F2: snapshot sweep
    sweep = with_baseline(load_trials(dirs["snapshot_sweep"]))
    agg = mean_std(sweep, ["variant", "teacher_step"])
    kd_rows = agg[agg["variant"] != "no_kd"].sort_values("teacher_step")
    last = kd_rows.iloc[-1]
    # the best *earlier* snapshot against the last one, so that "the last is best" reads as a comparison too
    best = kd_rows.iloc[:-1].sort_values(f"{METRIC}_mean", ascending=False).iloc[0]
    rows.append({"finding": "2. An early teacher snapshot beats a late, strong one", "dataset": dataset,
                 "verdict": compare(best, last),
                 "key numbers": f"best earlier step {int(best['teacher_step'])} {score(best)}"
                                f" vs last step {int(last['teacher_step'])} {score(last)}"})
    fig = px.line(kd_rows, x="teacher_step", y=f"{METRIC}_mean", error_y=f"{METRIC}_std", markers=True, log_x=True,
                  title=f"{dataset}: translated test accuracy vs teacher snapshot step (normal KD, mean ± std)")
    base = agg[agg["variant"] == "no_kd"]
    if not base.empty:
        fig.add_hline(y=float(base[f"{METRIC}_mean"].iloc[0]), line_dash="dot", annotation_text="no KD")
    sections.append(f"### Snapshot sweep ({dataset})\n\n{md_table(agg)}\n\n{save_figure(fig, 'snapshot_sweep' + suffix, docs)}\n")

    # F3: label smoothing (CNN_2 -> MLP_2)
    ls = with_baseline(load_trials(dirs["label_smoothing"]))
    agg = mean_std(ls, ["variant", "teacher_step", "teacher_label_smoothing"])
    kd_rows = agg[agg["variant"] != "no_kd"]
    w = kd_rows[(kd_rows["teacher_step"] == kd_rows["teacher_step"].min()) & (kd_rows["teacher_label_smoothing"] == 0)].iloc[0]
    s = kd_rows[(kd_rows["teacher_step"] == kd_rows["teacher_step"].max()) & (kd_rows["teacher_label_smoothing"] > 0)].iloc[0]
    rows.append({"finding": "3. A weak teacher beats a strong one even with label smoothing", "dataset": dataset,
                 "verdict": compare(w, s),
                 "key numbers": f"weak (step {int(w['teacher_step'])}) {score(w)} vs "
                                f"strong+LS (step {int(s['teacher_step'])}) {score(s)}"})
    fig = px.bar(agg.assign(setting=agg.apply(lambda r: "no KD" if r["variant"] == "no_kd" else
                                              f"step {int(r['teacher_step'])}, LS {r['teacher_label_smoothing']:g}", axis=1)),
                 x="setting", y=f"{METRIC}_mean", error_y=f"{METRIC}_std",
                 title=f"{dataset}: CNN_2 -> MLP_2, weak vs strong teacher with/without label smoothing")
    sections.append(f"### Label smoothing ({dataset})\n\n{md_table(agg)}\n\n{save_figure(fig, 'label_smoothing' + suffix, docs)}\n")

    # F5: alpha sweep
    al = load_trials(dirs["alpha_sweep"])
    al = al[~al["baseline"]]
    agg = mean_std(al, ["alpha"]).sort_values("alpha")
    rho = agg["alpha"].corr(agg[f"{METRIC}_mean"], method="spearman")
    lo, hi = agg.iloc[0], agg.iloc[-1]
    rows.append({"finding": "5. Larger alpha gives a less robust student", "dataset": dataset,
                 "verdict": verdict(rho <= -0.8 and beats(lo, hi), rho >= 0.8 and beats(hi, lo)),
                 "key numbers": f"Spearman rho(alpha, translated) = {rho:.2f}; a={lo['alpha']:g} {score(lo)}"
                                f" vs a={hi['alpha']:g} {score(hi)}"})
    fig = px.line(agg, x="alpha", y=f"{METRIC}_mean", error_y=f"{METRIC}_std", markers=True,
                  title=f"{dataset}: translated test accuracy vs alpha (normal KD, weak teacher, mean ± std)")
    sections.append(f"### Alpha sweep ({dataset})\n\n{md_table(agg)}\n\n{save_figure(fig, 'alpha_sweep' + suffix, docs)}\n")

    # F6 (beyond the poster, as in CiT): a convolution and an involution teacher together vs each alone
    combos = with_baseline(load_trials(dirs["teacher_combinations"]))
    combos.loc[combos["baseline"], "teachers"] = "none"
    agg = mean_std(combos, ["teachers"]).sort_values(f"{METRIC}_mean", ascending=False)
    both = agg[agg["teachers"].str.contains("+", regex=False)].iloc[0]
    single = agg[~agg["teachers"].str.contains("+", regex=False) & (agg["teachers"] != "none")].iloc[0]
    rows.append({"finding": "6. Two teachers (convolution + involution) beat the best single one", "dataset": dataset,
                 "verdict": compare(both, single),
                 "key numbers": f"{both['teachers']} {score(both)} vs best single {single['teachers']} {score(single)}"})
    fig = px.bar(agg, x="teachers", y=f"{METRIC}_mean", error_y=f"{METRIC}_std",
                 title=f"{dataset}: translated test accuracy by teacher combination (normal KD, weak snapshots, mean ± std)")
    sections.append(f"### Teacher combinations ({dataset})\n\n{md_table(agg)}\n\n"
                    f"{save_figure(fig, 'teacher_combinations' + suffix, docs)}\n")

    # The full search: what it found beyond the poster
    tpe = load_trials(dirs["leveled_kd"])
    search = tpe[~tpe["baseline"]]
    by_teachers = search.groupby("teachers")["val_translated_acc"].agg(["mean", "max", "count"]).reset_index()
    top = search.sort_values("val_translated_acc", ascending=False).head(5)[
        ["trial_id", "variant", "teachers", "teacher_step", "alpha", "temperature", "s_kl", "s_fm",
         "val_translated_acc", "test_clean_acc", "test_translated_acc"]]
    sections.append(f"### Full leveled-KD search ({dataset}, TPE, {len(search)} completed trials)\n\nTop 5 by validation "
                    f"translated accuracy:\n\n{md_table(top)}\n\nBy teacher combination (validation translated "
                    f"accuracy):\n\n{md_table(by_teachers)}\n")
    return rows, sections


def write_index(results: Path) -> Path:
    """docs/results/index.md: every result file's verdicts in one table, grouped by finding, with compute times."""
    runs = [(path, json.loads(path.read_text())) for path in sorted(results.glob("*.json"))]
    verdicts = pd.DataFrame([{**row, "budget": path.stem.split("-")[0], "tables": f"[{path.stem}]({path.stem}.md)"}
                             for path, run in runs for row in run["verdicts"]])
    if verdicts.empty:
        return results / "index.md"
    order = {finding: i for i, finding in enumerate(dict.fromkeys(verdicts["finding"]))}  # as analyse() lists them
    verdicts = verdicts.assign(order=verdicts["finding"].map(order)).sort_values(["order", "dataset"], kind="stable")[
        ["finding", "dataset", "budget", "verdict", "key numbers", "tables"]]
    compute = pd.DataFrame([{"result file": f"[{path.stem}]({path.stem}.md)", "command": f"`{run['command']}`",
                             "studies": len(run["study_seconds"]),
                             "study wall time (min)": f"{sum(run['study_seconds'].values()) / 60:.1f}",
                             "this invocation (min)": f"{run['invocation_seconds'] / 60:.1f}"} for path, run in runs])
    total = sum(sum(run["study_seconds"].values()) for _, run in runs) / 3600
    index = results / "index.md"
    index.write_text("<!-- generated by scripts/reproduce.py from the JSON files beside it -->\n\n"
                     f"# All verdicts\n\n{md_table(verdicts)}\n\n## Compute\n\n{md_table(compute)}\n\n"
                     f"Total study wall time: {total:.2f} h (a reused study counts with its original wall time).\n")
    return index


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small budget: under 30 minutes on 2 CPU cores")
    p.add_argument("--datasets", nargs="+", default=["mnist"])
    p.add_argument("--teacher-steps", type=int, default=None, help="override the budget's teacher steps")
    p.add_argument("--tpe-trials", type=int, default=12)
    p.add_argument("--data-root", default="data")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--docs", default="docs", help="where RESULTS.md and figures/ go")
    args = p.parse_args()
    args.budget_name = "quick" if args.quick else "full"
    budget = dict(BUDGETS[args.budget_name])
    if args.teacher_steps:
        budget["teacher_steps"] = args.teacher_steps
        args.budget_name += f"-{args.teacher_steps}"
    docs = Path(args.docs)
    started = time.time()
    verdicts, sections, walls = [], [], {}
    for dataset in args.datasets:
        dirs = {}
        for space in FINDING_SPACES:
            dirs[space], walls[f"{space}/{dataset}"] = run_space(space, dataset, budget, args)
        rows, secs = analyse(dataset, dirs, docs, args.budget_name)
        verdicts += rows
        sections += secs
    total = time.time() - started
    command = "python scripts/reproduce.py" + (" --quick" if args.quick else "") + \
        (f" --datasets {' '.join(args.datasets)}" if args.datasets != ["mnist"] else "") + \
        (f" --teacher-steps {args.teacher_steps}" if args.teacher_steps else "")
    table = pd.DataFrame(verdicts)
    print(table.to_string(index=False))
    # one file pair per (budget, datasets): a quick run never overwrites the full run's tables
    stem = docs / "results" / f"{args.budget_name}-{'-'.join(args.datasets)}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps({"budget": budget, "verdicts": verdicts, "study_seconds": walls,
                                                     "invocation_seconds": round(total), "command": command}, indent=2))
    stem.with_suffix(".md").write_text(
        f"<!-- generated by: {command} -->\n\n## Verdicts\n\n{md_table(table)}\n\n"
        f"Budget: {json.dumps(budget)}; study wall times (s): {json.dumps({k: round(v) for k, v in walls.items()})}; "
        f"this invocation: {total:.0f}s.\n\n" + "\n".join(sections))
    print(f"wrote {stem.with_suffix('.md')}, {stem.with_suffix('.json')} and {write_index(stem.parent)}")


if __name__ == "__main__":
    main()
