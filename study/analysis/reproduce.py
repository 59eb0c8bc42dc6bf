"""Re-run the seed poster's findings with the study's named spaces and write their verdicts.

    python scripts/reproduce.py --quick             # MNIST, small budget, under 30 minutes on 2 CPU cores
    python scripts/reproduce.py                     # the budget docs/RESULTS.md reports
    python scripts/reproduce.py --datasets mnist fashion_mnist --teacher-steps 25000   # the poster's scale
    python scripts/reproduce.py --quick --controls  # also the inductive_bias control study (teachers to 25,000 steps)

(``python -m study.analysis.reproduce`` is the same command; ``scripts/reproduce.py`` only calls :func:`main`.)
Every number comes from ``run_study.py`` studies (3 seeds per configuration, a no-KD baseline per
seed), run as ``python -m run_study`` from the current directory, so relative paths mean the same to
both; finished studies are reused, so an interrupted reproduction continues where it stopped.
The analysis is :mod:`study.analysis.findings`: "best" arms are chosen on validation, effects are paired
differences on the test images with a hierarchical bootstrap (:mod:`study.analysis.stats`), and verdicts
use Holm's correction over every cell of the invocation. Output: docs/results/<budget>-<datasets>.{md,json}
and docs/results/index.md; docs/RESULTS.md is the hand-written page that discusses them.

Seeds can be added later without re-running the ones that ran: ``--set 'seed=[1,2]' --pool
SPACE=DIR`` pools the trials of the finished study DIR (say, the ``seed=[0]`` run) with the ones
this command runs, once their plans show the same design and budget; teacher seeds the same way
(``--set 'seed=[0]' --set 'teacher_seed=[1,2]' --pool SPACE=DIR``).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from study.analysis import findings, studies
from study.analysis.findings import PRIMARY, SECONDARY, SELECT_ON
from study.teachers.bank import TeacherBank, TeacherSpec, bank_record

#: ``full`` trains students to convergence on the whole training split (at most 10 epochs, stopped
#: after 2 without a gain in validation clean accuracy) and tests on all 10,000 test images, in fp32
#: (bf16 parity is shown for teachers, not for students). ``quick`` is a smoke-sized rehearsal.
BUDGETS = {
    "quick": dict(teacher_steps=500, teacher_eval_images=100, train_subset=2000, max_epochs=2, patience=0, min_epochs=0,
                  val_images=500, test_images=1000, precision="fp32"),
    #: a KD scheme's first look (the ``transfer`` space): 10,000 training images, every student trained the
    #: same 20 epochs (patient schedules are arms, so no early stopping), all test images
    "pilot": dict(teacher_steps=2500, teacher_eval_images=300, train_subset=10000, max_epochs=20, patience=0,
                  min_epochs=0, val_images=2000, test_images=0, precision="fp32"),
    #: a pilot's best schemes at the poster's scale (``--set arm=[...]``): the whole training split, every
    #: student the same 10 epochs (4,220 steps, 2.7 times the pilot's 1,560; no early stopping), all test
    #: images; new teacher banks in bf16 where the CPU has it, as the earlier seeds' banks were trained
    "scale": dict(teacher_steps=2500, teacher_eval_images=300, train_subset=0, max_epochs=10, patience=0,
                  min_epochs=0, val_images=2000, test_images=0, precision="fp32", teacher_precision="auto"),
    "full": dict(teacher_steps=2500, teacher_eval_images=300, train_subset=0, max_epochs=10, patience=2, min_epochs=0,
                 val_images=2000, test_images=0, precision="fp32"),
}
FINDING_SPACES = list(dict.fromkeys(f.space for f in findings.POSTER))
CONTROL_SPACES = [findings.CONTROL_SPACE]


def override_tags(overrides: list[str] | None) -> list[str]:
    """The ``--set`` overrides spelled for file names, sorted: ``seed=[0,1,2]`` -> ``seed_0_1_2``."""
    import re

    return [re.sub(r"[^A-Za-z0-9.]+", "_", item).strip("_") for item in sorted(overrides or [])]


def study_name(space: str, dataset: str, budget_name: str, overrides: list[str] | None) -> str:
    """``repro-<space>-<dataset>-<budget>``, plus the ``--set`` overrides (``-seed_0_1_2``): a
    finished study is reused only by the same command, never by one that asks for other seeds
    or values."""
    return "-".join([f"repro-{space}-{dataset}-{budget_name}", *override_tags(overrides)])


def results_stem(docs: str, budget_name: str, datasets: list[str], spaces: list[str] | None,
                 overrides: list[str] | None) -> Path:
    """``DOCS/results/<budget>-<datasets>[-<spaces>][-<overrides>]``: one file pair per command, so
    a quick run never overwrites the full run's tables, nor a 1-seed run the 3-seed run's."""
    parts = [budget_name, *datasets, *(spaces or []), *override_tags(overrides)]
    return Path(docs) / "results" / "-".join(parts)


def run_space(space: str, dataset: str, budget: dict, args) -> tuple[Path, float]:
    """Run (or resume, or reuse when finished) one study; returns its directory and wall seconds."""
    name = study_name(space, dataset, args.budget_name, args.set)
    study_dir = Path(args.output_dir) / "studies" / name
    if space in args.existing:  # --study SPACE=DIR: analyse a study that already ran
        study_dir = Path(args.existing[space])
        state = studies.study_state(study_dir)
        print(f"[reproduce] {space}: using {study_dir} (status {state.get('status')})", flush=True)
        return study_dir, float(state.get("wall_seconds", 0))
    cmd = [sys.executable, "-m", "run_study", "--space", space, "--dataset", dataset, "--study-name", name,
           "--output-dir", args.output_dir, "--data-root", args.data_root, "--quiet",
           "--teacher-steps", str(budget["teacher_steps"]), "--train-subset", str(budget["train_subset"]),
           "--max-epochs", str(budget["max_epochs"]), "--val-images", str(budget["val_images"]),
           "--test-images", str(budget["test_images"]), "--teacher-eval-images", str(budget["teacher_eval_images"]),
           "--patience", str(budget["patience"]), "--min-epochs", str(budget.get("min_epochs", 0)),
           "--precision", budget["precision"]]
    if budget.get("teacher_precision"):
        cmd += ["--teacher-precision", budget["teacher_precision"]]
    cmd += [f"--set={item}" for item in args.set or []]
    if args.bank_dir:
        cmd += ["--bank-dir", args.bank_dir]
    if args.no_download:
        cmd.append("--no-download")
    if (study_dir / "study.json").is_file():
        state = studies.study_state(study_dir)
        if state.get("status") == "finished":
            print(f"[reproduce] {name}: finished earlier, reused", flush=True)
            return study_dir, float(state.get("wall_seconds", 0))
        cmd.append("--resume")
    print(f"[reproduce] {' '.join(cmd)}", flush=True)
    started = time.time()
    try:  # in this directory: relative paths mean the same to run_study.py
        code = subprocess.run(cmd).returncode
    except KeyboardInterrupt:
        code = 130
    if code != 0:  # the study already said why; what it logged stays, and the same command resumes it
        raise SystemExit(f"reproduce: study {name} stopped (exit {code}); run the same command again to resume it")
    return study_dir, time.time() - started


def teacher_banks(study_dir: Path) -> dict[str, dict]:
    """Each teacher bank a study used, with the precision it was trained in and its last step:
    ``study.json``'s record, else the banks' own manifests (studies from before it recorded them).
    The budget's ``precision`` is the students'; an existing bank keeps its own."""
    state = studies.study_state(study_dir)
    if state.get("teachers"):
        return state["teachers"]
    plan = state.get("plan") or {}
    banks = {}
    for key in plan.get("teachers", []):
        bank = TeacherBank(plan.get("teacher_banks", ""), TeacherSpec.from_key(key))
        if bank.manifest_path.is_file():
            banks[key] = bank_record(bank.manifest())
    return banks


def pooled_studies(items: list[str], datasets: list[str]) -> dict[tuple[str, str], list[Path]]:
    """``--pool SPACE=DIR`` items as ``{(space, dataset): [DIR, ...]}``, the dataset read from each
    study's plan. Exits with one line when a DIR is not a finished study of SPACE on one of
    ``datasets``: a pooled study must be complete, or its missing trials would pass unnoticed."""
    pools: dict[tuple[str, str], list[Path]] = {}
    for item in items:
        space, sep, folder = item.partition("=")
        if not sep or not space or not folder:
            raise SystemExit(f"reproduce: --pool wants SPACE=DIR, got {item!r}")
        study_dir = Path(folder)
        try:
            state = studies.study_state(study_dir)
        except (OSError, ValueError):
            raise SystemExit(f"reproduce: --pool {item}: no study at {study_dir} (no readable study.json)") from None
        plan = state.get("plan") or {}
        if plan.get("space") != space:
            raise SystemExit(f"reproduce: --pool {item}: that study ran space {plan.get('space')!r}, not {space!r}")
        if plan.get("dataset") not in datasets:
            raise SystemExit(f"reproduce: --pool {item}: that study is on {plan.get('dataset')!r}, "
                             f"not on {' / '.join(datasets)}")
        if state.get("status") != "finished":
            raise SystemExit(f"reproduce: --pool {item}: that study is {state.get('status')!r}, not finished; "
                             "resume it first")
        pools.setdefault((space, plan["dataset"]), []).append(study_dir)
    return pools


def pool(study_dir: Path, extra: list[Path]) -> Path | list[Path]:
    """``study_dir`` alone, or with the studies pooled into it, once :func:`studies.check_poolable`
    agrees (else exit with its reason: pooled studies may differ in their seeds only)."""
    if not extra:
        return study_dir
    dirs = [study_dir, *extra]
    try:
        studies.check_poolable(dirs)
    except studies.Skip as why:
        raise SystemExit(f"reproduce: {why}") from None
    return dirs


def banks_text(banks: dict[str, dict]) -> str:
    """``bf16: mnist/cnn_1/seed-0 (25000 steps), ...`` grouped by precision."""
    by_precision: dict[str, list[str]] = {}
    for key, bank in sorted(banks.items()):
        by_precision.setdefault(bank["precision"], []).append(f"{key} ({bank['steps']} steps)")
    return "; ".join(f"{precision}: {', '.join(keys)}" for precision, keys in sorted(by_precision.items()))


def arms_sections(dirs: dict[str, dict[str, Path | list[Path]]], n_boot: int) -> dict[str, str]:
    """For each study with arms (the control), its arms table (:func:`study.analysis.arms.arm_effects`:
    means over seeds with their spreads, and each arm's paired effect against no KD); for each
    finding's study, the means of its configurations by teacher seed
    (:func:`study.analysis.arms.config_means`). Titled by space and dataset, so that a result file holds
    every number a results page quotes."""
    from study.analysis.arms import study_section

    sections = {}
    for dataset, spaces in dirs.items():
        for space, study_dir in spaces.items():
            section = study_section(studies.load_trials(study_dir), study_dir, n_boot)  # one study or pooled ones
            if section is not None:
                kind, text = section
                sections[f"{kind} of `{space}` on {dataset}"] = text
    return sections


def md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


METHOD = f"""Effects are arm A minus arm B of the named metric on the **test** images, as paired differences
with a hierarchical bootstrap (teacher seeds, student seeds within them, then one image resample
shared by every run; `study/analysis/stats.py`), with a 95% percentile interval. Every "best" arm (earlier
snapshot, other KD variant, single teacher) is chosen on validation (`{SELECT_ON}`, seed mean) before
any test number is read. The primary metric, `{PRIMARY}` (mean accuracy over the 32 non-zero shifts),
carries the verdicts, with Holm's correction over all its cells in this file: *reproduced* when the
corrected test rejects no difference in the claimed direction, *contradicted* when it rejects it the
other way, otherwise *inconclusive* (read the MDE: the effect the cell had 80% power to detect at
alpha 0.05 before correction). Secondary metrics ({", ".join(f"`{m}`" for m in SECONDARY)}) have their
own Holm family each and no verdicts. n is teacher seeds x student seeds x test images, with the
number of paired runs when the seeds are not a full grid (more student seeds for one teacher seed):
every run weighs the same, in the estimate and in the bootstrap."""


def write_results(cells: list, stem: Path, command: str, budget: dict, walls: dict[str, float],
                  total: float, banks: dict[str, dict] | None = None,
                  sections: dict[str, str] | None = None,
                  studies: dict[str, list[str]] | None = None) -> tuple[Path, Path]:
    table = findings.verdict_table(cells)
    primary, secondary = table[table["metric"] == PRIMARY], table[table["metric"] != PRIMARY]
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, md_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps({"budget": budget, "cells": findings.cells_json(cells), "study_seconds": walls,
                                     "invocation_seconds": round(total), "command": command,
                                     "teacher_banks": banks or {}, "studies": studies or {}}, indent=2))
    md_path.write_text(
        f"<!-- generated by: {command} -->\n\n## Verdicts (primary metric: `{PRIMARY}`)\n\n{md_table(primary)}\n\n"
        f"## Secondary metrics\n\n{md_table(secondary)}\n\n"
        + "".join(f"## {title}\n\n{text}\n" for title, text in (sections or {}).items())
        + f"## Method\n\n{METHOD}\n\n"
        f"Budget (students; `precision` is theirs): {json.dumps(budget)}; "
        f"study wall times (s): {json.dumps({k: round(v) for k, v in walls.items()})}; "
        f"this invocation: {total:.0f}s.\n"
        + (f"\nTeacher banks, by the precision they were trained in: {banks_text(banks)}.\n" if banks else "")
        + "".join(f"\nPooled studies of `{key}` (same design and budget, other seeds): "
                  f"{', '.join(f'`{name}`' for name in names)}.\n"
                  for key, names in (studies or {}).items() if len(names) > 1))
    return md_path, json_path


def write_index(results: Path) -> Path:
    """docs/results/index.md: every result file's primary verdicts in one table, with compute times.
    Files from before the bootstrap analysis (no ``cells``) are listed, not re-read as verdicts."""
    runs = [(path, json.loads(path.read_text())) for path in sorted(results.glob("*.json"))]
    current = [(path, run) for path, run in runs if "cells" in run]
    studies = [path for path, run in runs if "cells" not in run and "arms" in run]  # a study's summary.json
    earlier = [path for path, run in runs if "cells" not in run and "arms" not in run]
    rows = [{"finding": c["finding"], "dataset": c["dataset"], "budget": path.stem.split("-")[0],
             "comparison": c["comparison"],
             "effect [95% CI]": "" if "estimate" not in c else
             f"{c['estimate']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
             "verdict": c["verdict"] if c["verdict"] != "skipped" else f"skipped: {c['note']}",
             "tables": f"[{path.stem}]({path.stem}.md)"}
            for path, run in current for c in run["cells"] if c["metric"] == PRIMARY]
    index = results / "index.md"
    verdicts = pd.DataFrame(rows)
    text = "<!-- generated by scripts/reproduce.py from the JSON files beside it -->\n\n# All verdicts\n\n"
    if not verdicts.empty:
        order = {f: i for i, f in enumerate(dict.fromkeys(verdicts["finding"]))}
        verdicts = verdicts.assign(order=verdicts["finding"].map(order)).sort_values(
            ["order", "dataset"], kind="stable").drop(columns="order")
        compute = pd.DataFrame([{"result file": f"[{p.stem}]({p.stem}.md)", "command": f"`{r['command']}`",
                                 "studies": len(r["study_seconds"]),
                                 "study wall time (min)": f"{sum(r['study_seconds'].values()) / 60:.1f}",
                                 "this invocation (min)": f"{r['invocation_seconds'] / 60:.1f}"} for p, r in current])
        total = sum(sum(r["study_seconds"].values()) for _, r in current) / 3600
        text += (f"Primary metric `{PRIMARY}`, Holm-corrected within each result file.\n\n{md_table(verdicts)}\n\n"
                 f"## Compute\n\n{md_table(compute)}\n\n"
                 f"Total study wall time: {total:.2f} h (a reused study counts with its original wall time).\n")
    else:
        text += "No result file of the bootstrap analysis yet.\n"
    if studies:
        text += ("\n## Controlled studies (per-arm paired effects with 95% CIs; design and command in each file)\n\n"
                 + "\n".join(f"- [{p.stem}]({p.stem}.md)" for p in studies) + "\n")
    if earlier:
        text += ("\n## Earlier result files (mean ± std rule, superseded; not verdicts)\n\n"
                 + "\n".join(f"- [{p.stem}]({p.stem}.md)" for p in earlier) + "\n")
    index.write_text(text)
    return index


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small budget: under 30 minutes on 2 CPU cores")
    p.add_argument("--budget", choices=sorted(BUDGETS), default=None,
                   help="a named budget (quick; pilot: 10,000 images and 20 epochs for a KD scheme's first look; "
                        "scale: the whole split, 10 epochs each, no early stopping; full; default full, or quick with --quick)")
    p.add_argument("--datasets", nargs="+", default=["mnist"])
    p.add_argument("--teacher-steps", type=int, default=None, help="override the budget's teacher steps")
    p.add_argument("--min-epochs", type=int, default=None,
                   help="never stop a student before this many epochs (the budget's patience still applies after)")
    p.add_argument("--controls", action="store_true",
                   help=f"also run the {findings.CONTROL_SPACE} space (CNN vs MLP teachers; its arms use "
                        "snapshots up to 25,000 steps) and report its control cells")
    p.add_argument("--spaces", nargs="+", default=None, help="only these spaces (default: every finding's)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="passed to every study, e.g. --set 'seed=[0,1]' for two student seeds")
    p.add_argument("--study", action="append", default=[], metavar="SPACE=DIR",
                   help="analyse this existing study directory for SPACE instead of running it")
    p.add_argument("--pool", action="append", default=[], metavar="SPACE=DIR",
                   help="pool the finished study DIR (same design and budget, other seeds) with SPACE's")
    p.add_argument("--bank-dir", default=None, help="teacher banks (default: OUTPUT_DIR/teachers)")
    p.add_argument("--n-boot", type=int, default=10_000, help="bootstrap replicates per cell")
    p.add_argument("--data-root", default="data")
    p.add_argument("--no-download", action="store_true")
    p.add_argument("--output-dir", default="runs")
    p.add_argument("--docs", default="docs", help="where results/ goes")
    args = p.parse_args(argv)
    args.existing = dict(item.split("=", 1) for item in args.study)
    pools = pooled_studies(args.pool, args.datasets)
    args.budget_name = args.budget or ("quick" if args.quick else "full")
    budget = dict(BUDGETS[args.budget_name])
    if args.teacher_steps:
        budget["teacher_steps"] = args.teacher_steps
        args.budget_name += f"-{args.teacher_steps}"
    if args.min_epochs:
        budget["min_epochs"] = args.min_epochs
        args.budget_name += f"-min{args.min_epochs}"
    started = time.time()
    dirs: dict[str, dict[str, Path | list[Path]]] = {}
    walls: dict[str, float] = {}
    for dataset in args.datasets:
        dirs[dataset] = {}
        for space in args.spaces or FINDING_SPACES + (CONTROL_SPACES if args.controls else []):
            study_dir, walls[f"{space}/{dataset}"] = run_space(space, dataset, budget, args)
            extra = pools.pop((space, dataset), [])
            dirs[dataset][space] = pool(study_dir, extra)
            for other in extra:  # the pooled studies' compute is part of what the results cost
                walls[f"{space}/{dataset}+{other.name}"] = float(studies.study_state(other).get("wall_seconds", 0))
    if pools:
        raise SystemExit("reproduce: --pool names a study of a space this command does not run: "
                         + ", ".join(f"{space} on {dataset}" for space, dataset in pools))
    cells = findings.analyse(dirs, n_boot=args.n_boot, only_given=bool(args.spaces),
                             controls=args.controls or findings.CONTROL_SPACE in (args.spaces or []))
    total = time.time() - started
    command = "python scripts/reproduce.py" + (" --quick" if args.quick else "") + \
        (f" --budget {args.budget}" if args.budget else "") + \
        (f" --datasets {' '.join(args.datasets)}" if args.datasets != ["mnist"] else "") + \
        (f" --teacher-steps {args.teacher_steps}" if args.teacher_steps else "") + \
        (f" --min-epochs {args.min_epochs}" if args.min_epochs else "") + \
        (" --controls" if args.controls else "") + \
        (f" --spaces {' '.join(args.spaces)}" if args.spaces else "") + \
        "".join(f" --set '{item}'" for item in args.set or []) + \
        "".join(f" --study {item}" for item in args.study) + \
        "".join(f" --pool {item}" for item in args.pool)
    table = findings.verdict_table(cells)
    print(table[table["metric"] == PRIMARY].to_string(index=False))
    stem = results_stem(args.docs, args.budget_name, args.datasets, args.spaces, args.set)
    if args.pool:  # never overwrites the unpooled run's file
        stem = stem.with_name(stem.name + "-pooled")
    banks = {key: bank for spaces in dirs.values() for study_dirs in spaces.values()
             for study_dir in studies.as_dirs(study_dirs) for key, bank in teacher_banks(study_dir).items()}
    names = {f"{space}/{dataset}": [d.name for d in studies.as_dirs(study_dirs)]
             for dataset, spaces in dirs.items() for space, study_dirs in spaces.items()}
    md_path, json_path = write_results(cells, stem, command, budget, walls, total, banks,
                                       arms_sections(dirs, args.n_boot), names)
    print(f"wrote {md_path}, {json_path} and {write_index(stem.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
