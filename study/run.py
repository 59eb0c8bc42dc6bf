"""The study driver behind ``run_study.py``: plan, stage 1 (teachers), stage 2 (Tune), reports.

Layout of an output directory (default ``runs/``)::

    mlflow.db                 MLflow tracking store (default; --tracking-uri for a server)
    optuna.db                 Optuna studies (open with optuna-dashboard)
    teachers/                 snapshot banks + output caches (computed by the first trial that needs
                              one), shared by all studies
    studies/<study>/study.json     what was planned, MLflow parent run id, status, each invocation's
                                   times (totals add the --resume'd ones), each teacher bank's precision
    studies/<study>/tune/          Ray Tune experiment (trial checkpoints; what --resume restores)
    studies/<study>/reports/       trials.csv, trials.parquet, *.html, summary.json
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

from study.train.data import EVAL_SEED, EVAL_SUBSET, load_dataset, train_val_split
from study.train.datasets import resolve_dataset
from study.train.model_check import check_model
from study.train.plugins import import_plugins, resolve_plugins
from study.train.robustness import get_family
from study.errors import InputError, UserError, check_reachable
from study.search.space import Space, load_space
from study.teachers.bank import bank_record, teacher_bank_root
from study.teachers.pretrained import PretrainedBank, bank_for
from study.tracking.runs import Tracker, browse_hint, default_tracking_uri, study_tags

DEFAULT_SEARCH_TRIALS = 12


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Study:
    """One study: resolved space, budget, paths. Built from ``run_study.py``'s arguments."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        imports = resolve_plugins(getattr(args, "imports", None) or [])
        import_plugins(imports)  # before the space: its keys may name what the plug-ins register
        space = load_space(args.space).with_overrides(args.set or [])
        self.space: Space = space.resolve_steps(args.teacher_steps)
        #: what every Ray worker imports before it builds a model (study.train.plugins.prepare_worker)
        self.plugins: tuple[str, ...] = tuple(dict.fromkeys(imports + space.imports))
        self.pretrained = space.pretrained
        #: what every worker registers again: the space's models: entries, then its pretrained teachers
        self.registrations: tuple = (*space.models, *space.pretrained)
        # --dataset, else the space's, else mnist; a path is an image folder (registered here)
        args.dataset = resolve_dataset(getattr(args, "dataset", None) or space.dataset or "mnist")
        #: robustness families scored at the end besides translation (the objective), checked by name now
        asked = [n.strip() for n in (getattr(args, "robustness", None) or "").split(",")]
        self.robustness: tuple[str, ...] = tuple(dict.fromkeys(
            [*space.robustness, *(get_family(n).name for n in asked if n and n != "translation")]))
        self.output_dir = Path(args.output_dir).expanduser().resolve()
        self.name = args.study_name or f"{self.space.name}-{args.dataset}"
        self.dir = self.output_dir / "studies" / self.name
        self.bank_root = Path(args.bank_dir).expanduser().resolve() if args.bank_dir else \
            teacher_bank_root(self.output_dir)
        self.tracking_uri = args.tracking_uri or default_tracking_uri(self.output_dir)
        self.optuna_url = args.optuna_storage or f"sqlite:///{self.output_dir / 'optuna.db'}"
        grid = self.space.sampler == "grid"
        self.search_trials = args.num_samples if args.num_samples is not None else \
            self.space.grid_size() if grid else DEFAULT_SEARCH_TRIALS
        if grid and self.search_trials > self.space.grid_size():
            raise InputError(f"--num-samples {self.search_trials} exceeds the grid of {self.space.grid_size()} points")
        if self.search_trials < 1:
            raise InputError("--num-samples must be >= 1")
        self.baselines = [] if args.no_baseline else self.space.baseline_configs(args.seed)
        self.planned = self.search_trials + len(self.baselines)
        self.train_subset = args.train_subset or None
        self.use_asha = self.space.scheduler == "asha" and not args.no_asha
        from study.search.tuning import OBJECTIVES, objective_metric

        #: the validation metric the search maximizes (``--objective``)
        asked_objective = getattr(args, "objective", "translated")
        self.objective = objective_metric(asked_objective)
        if self.objective != OBJECTIVES["translated"] and args.multi_objective:
            raise InputError(f"--objective {asked_objective} and --multi-objective do not combine: pick one")
        if self.objective == OBJECTIVES["transfer"] and not self.baselines:
            raise InputError("--objective transfer measures students against a no-KD reference: drop --no-baseline")
        if asked_objective not in OBJECTIVES:  # a family the study is scored on: reported on test too
            self.robustness = tuple(dict.fromkeys([*self.robustness, get_family(asked_objective).name]))

    def tags(self) -> dict[str, str]:
        """MLflow tags on every run of this study (see :func:`study.tracking.runs.study_tags`)."""
        a = self.args
        budget = {"train_subset": self.train_subset or "all", "max_epochs": a.max_epochs,
                  "teacher_steps": a.teacher_steps, "planned_trials": self.planned,
                  "val_images": a.val_images or "all", "test_images": a.test_images or "all",
                  "patience": getattr(a, "patience", 0), "min_epochs": getattr(a, "min_epochs", 0)}
        return study_tags(self.name, self.space.name, a.dataset, budget)

    @property
    def state_file(self) -> Path:
        return self.dir / "study.json"

    def plan(self) -> dict[str, Any]:
        a = self.args
        return {
            "study": self.name, "space": self.space.name, "description": self.space.description,
            "sampler": self.space.sampler, "scheduler": "asha" if self.use_asha else "fifo",
            "objective": "val_clean_acc + val_translated_acc" if a.multi_objective else f"{self.objective} (max)",
            "dataset": a.dataset, "train_subset": self.train_subset or "all", "max_epochs": a.max_epochs,
            "patience": a.patience, "min_epochs": a.min_epochs,
            "search_trials": self.search_trials, "baseline_trials": len(self.baselines), "planned_trials": self.planned,
            "teachers": [s.key for s in self.space.teacher_specs(a.dataset)], "teacher_steps": a.teacher_steps,
            "eval_images": {"val": a.val_images or "all", "test": a.test_images or "all",
                            "teacher_snapshots": a.teacher_eval_images,
                            "chosen_as": f"{EVAL_SUBSET} sample, seed {EVAL_SEED}"},
            "teacher_snapshots_used": self.space.teacher_steps_used(),
            "fixed": self.space.fixed, "searched": sorted(self.space.params),
            "resources_per_trial": {"cpu": a.cpus_per_trial, "gpu": a.gpus_per_trial},
            "ray": a.address or "local (127.0.0.1)", "seed": a.seed,
            "output_dir": str(self.output_dir), "study_dir": str(self.dir), "teacher_banks": str(self.bank_root),
            "mlflow": self.tracking_uri, "optuna": self.optuna_url,
            **({"robustness": ["translation", *self.robustness]} if self.robustness else {}),
            **({"plugins": list(self.plugins)} if self.plugins else {}),
            **({"pretrained_teachers": {t.name: t.describe() for t in self.pretrained}} if self.pretrained else {}),
        }


def print_plan(plan: dict[str, Any]) -> None:
    width = max(map(len, plan))
    for key, value in plan.items():
        print(f"{key:<{width}}  {value}")


def ray_tmpdir() -> Path:
    """Point Ray at a short temp directory this user owns (``RAY_TMPDIR``, unless already set) and create it.

    Short, because Ray's socket paths must fit in 107 bytes; created up front with its ``ray/``
    child, because Ray writes ``<RAY_TMPDIR>/ray/ray_current_cluster`` without creating the folder
    when a cluster is started from Python (``ray.cluster_utils.Cluster``) on a fresh machine.
    """
    tmp = Path(os.environ.setdefault("RAY_TMPDIR", f"/tmp/lkd-ray-{os.getuid()}"))
    (tmp / "ray").mkdir(parents=True, exist_ok=True)
    return tmp


def check_ray_address(address: str | None) -> None:
    """A ``HOST:PORT`` (or ``ray://HOST:PORT``) address nobody answers on fails in seconds, in one
    line, before ``ray.init`` retries for a minute and prints its own logs. ``auto`` (find the
    cluster this machine belongs to) is left to Ray."""
    if not address or address in ("auto", "local"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"--address {address!r}: use auto, HOST:PORT (the head's GCS port, 6379 by default) "
                         f"or ray://HOST:PORT")
    check_reachable(host.strip("[]"), int(port), "the Ray cluster at")


def preflight(study: Study) -> tuple[Any, Any]:
    """Everything a user can get wrong that is cheap to check, checked before a run is created in
    MLflow or a study folder is written: the Ray address answers, the Optuna URL parses, the teacher
    banks are readable, the data is there and the training subset fits it. Returns (data, split)."""
    args = study.args
    check_ray_address(args.address)
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(study.optuna_url)
    except ArgumentError:
        raise InputError(f"--optuna-storage {study.optuna_url!r} is not a database URL "
                         f"(e.g. sqlite:///runs/optuna.db)") from None
    for spec in study.space.teacher_specs(args.dataset):
        bank = bank_for(study.bank_root, spec)
        bank.steps()  # a corrupted or foreign manifest: SnapshotError now
        if isinstance(bank, PretrainedBank):
            bank.check_owner()
    data = load_dataset(args.dataset, args.data_root, download=not args.no_download)
    try:
        split = train_val_split(data, study.train_subset, seed=args.seed)
    except ValueError as error:
        raise InputError(f"--train-subset {args.train_subset}: {error}") from None
    # every model the space names builds for this dataset and keeps the (logits, features) contract
    for role, names in (("student", study.space.students()), ("teacher", study.space.teacher_archs())):
        for name in names:
            check_model(name, data.input_shape, data.num_classes, role, dataset=args.dataset)
    for teacher in study.pretrained:  # its files are there and fit its architecture
        teacher.check(data)
    return data, split


@contextmanager
def disk_errors_as_user_errors(study: Study) -> Iterator[None]:
    """A full disk or a read-only output directory is the user's to fix: one line naming the path,
    and how to continue (everything logged before the failure is kept)."""
    try:
        yield
    except OSError as error:
        if error.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
            raise
        where = error.filename or study.dir
        raise UserError(f"cannot write {where}: {error.strerror}; free space or fix permissions under "
                        f"{study.output_dir}, then continue with --resume") from None
    except Exception as error:  # SQLite stores (MLflow's, Optuna's) report a full disk as their own error
        if "database or disk is full" not in str(error) and "No space left on device" not in str(error):
            raise
        raise UserError(f"the disk under {study.output_dir} is full ({type(error).__name__}); free space, "
                        f"then continue with --resume") from None


def init_ray(address: str | None, num_cpus: int | None, verbose: bool) -> None:
    import logging

    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if ray.is_initialized():
        return
    # Ray announces that it set up token authentication (on by default, and wanted: a local cluster must
    # not take unauthenticated jobs); --verbose still shows it
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
        logging.INFO if verbose else logging.ERROR)
    kwargs: dict[str, Any] = dict(logging_level=logging.INFO if verbose else logging.WARNING,
                                  log_to_driver=verbose, configure_logging=True)
    if address:  # already answered check_ray_address in preflight()
        try:
            ray.init(address=address, **kwargs)
        except ConnectionError as error:  # e.g. --address auto with no cluster on this machine
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise UserError(f"cannot connect to the Ray cluster at {address}: {first}") from None
    else:
        ray_tmpdir()
        # "local", not None: None would silently join any Ray instance already running on this machine
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)


def run(args: argparse.Namespace) -> int:
    study = Study(args)
    plan = study.plan()
    if args.dry_run:
        print_plan(plan)
        return 0
    if study.state_file.is_file() and not args.resume:
        raise UserError(f"study {study.name!r} already exists in {study.output_dir}; pass --resume to continue "
                        f"it, or --study-name to start another")
    if args.resume and not study.state_file.is_file():
        raise UserError(f"nothing to resume: no study {study.name!r} in {study.output_dir}")

    started = time.time()
    data, split = preflight(study)  # user errors before anything is created or logged
    with disk_errors_as_user_errors(study):
        return _run(study, plan, data, split, started)


def _run(study: Study, plan: dict[str, Any], data, split, started: float) -> int:
    args = study.args
    tracker = Tracker(study.tracking_uri, study.name)  # fails fast and cleanly when unreachable
    tracker.run_tags = study.tags()  # on every run it creates: filter across studies
    study.dir.mkdir(parents=True, exist_ok=True)
    init_ray(args.address, args.num_cpus, args.verbose)
    if args.address:  # a multi-node cluster: trials and teacher tasks write where every node must read
        from study.cluster.config import check_shared_storage

        check_shared_storage({"--output-dir": study.dir,
                              "the teacher banks (--bank-dir / $LEVELED_KD_BANK)": study.bank_root})
    parent_id = tracker.study_run(study.name, {k: v for k, v in plan.items() if k != "description"})
    state = {"plan": plan, "parent_run_id": parent_id, "experiment_id": tracker.experiment_id,
             "status": "running", "started": started, "invocations": earlier_invocations(study)}
    # what this invocation ran; its status stays "running" if the driver is killed before it can record
    invocation: dict[str, Any] = {"started": started, "status": "running", "resumed": bool(args.resume),
                                  "command": invocation_command()}
    state["invocations"].append(invocation)
    study.state_file.write_text(json.dumps(state, indent=2, default=str))
    say(f"study {study.name}: {study.planned} trials ({study.search_trials} search + {len(study.baselines)} "
        f"no-KD baseline) · MLflow {study.tracking_uri} · experiment {study.name!r}")

    from study.search.stage import run_search

    try:
        state["teachers"] = build_teachers(study, data, tracker, parent_id)
    except KeyboardInterrupt:  # the banks keep every snapshot and training state saved so far
        close_invocation(study, state, invocation, "interrupted", teachers_done=time.time())
        say(f"study {study.name} interrupted while training its teachers; their snapshots so far are kept. "
            f"Continue with: {resume_command(study)}")
        return 130
    teachers_done = time.time()
    outcome = run_search(study, data, tracker, parent_id)
    state["summary"] = outcome.get("summary")
    close_invocation(study, state, invocation, outcome["status"], teachers_done, outcome["finished"])
    timings = {k: invocation[k] for k in ("teachers_seconds", "trials_seconds")}
    if outcome["status"] != "finished":
        say(f"study {study.name} stopped with {outcome['finished']}/{study.planned} trials finished; "
            f"everything logged so far is kept. Continue with: {resume_command(study)}")
        return 130 if outcome["status"] == "interrupted" else 1
    say(f"done in {time.time() - started:.0f}s (teachers {timings['teachers_seconds']}s, trials "
        f"{timings['trials_seconds']}s) · reports in {study.dir / 'reports'} · "
        f"browse: {browse_hint(study.tracking_uri)}")
    return 0


def close_invocation(study: Study, state: dict[str, Any], invocation: dict[str, Any], status: str,
                     teachers_done: float, trials_finished: int | None = None) -> None:
    """Record how this invocation ended (its status, end, time in each stage, how many trials the
    study had finished by then) and the study's totals over every invocation whose driver lived to
    record its times, then write ``study.json``: a resumed study's cost is the sum of its runs."""
    ended = time.time()
    invocation.update(status=status, ended=ended, wall_seconds=round(ended - invocation["started"], 1),
                      teachers_seconds=round(teachers_done - invocation["started"]),
                      trials_seconds=round(ended - teachers_done))
    if trials_finished is not None:
        invocation["trials_finished"] = trials_finished
    timed = [run for run in state["invocations"] if "wall_seconds" in run]
    state.update(status=status, wall_seconds=round(sum(run["wall_seconds"] for run in timed), 1),
                 teachers_seconds=sum(run["teachers_seconds"] for run in timed),
                 trials_seconds=sum(run["trials_seconds"] for run in timed))
    study.state_file.write_text(json.dumps(state, indent=2, default=str))


def earlier_invocations(study: Study) -> list[dict[str, Any]]:
    """The invocations a resumed study already had (``study.json``'s ``invocations``), so that its
    totals add every run of the command instead of the last one's. A study written before
    invocations were recorded counts as one, with the times it recorded."""
    if not study.state_file.is_file():
        return []
    try:
        state = json.loads(study.state_file.read_text())
    except (OSError, ValueError):
        return []
    if "invocations" in state:  # one still "running" is a driver that was killed before it could record
        return [{**run, "status": "killed"} if run.get("status") == "running" else run
                for run in state["invocations"]]
    keys = ("started", "status", "wall_seconds", "teachers_seconds", "trials_seconds")
    return [{k: state[k] for k in keys if k in state}] if "started" in state else []


def invocation_command() -> str:
    """This invocation's command line, as typed (``python run_study.py ...``), for ``study.json``."""
    import shlex

    argv = sys.argv[1:] if sys.argv and sys.argv[0].endswith("run_study.py") else sys.argv
    return shlex.join(["python", "run_study.py", *argv])


def resume_command(study: Study) -> str:
    """The command that continues ``study``: its own command line (every budget and ``--set`` flag
    the plan was made with) plus ``--study-name`` and ``--resume``."""
    import shlex

    argv = [a for a in sys.argv[1:] if a != "--resume"] if sys.argv and sys.argv[0].endswith("run_study.py") else \
        ["--space", str(study.args.space), "--output-dir", str(study.args.output_dir)]
    if not any(a == "--study-name" or a.startswith("--study-name=") for a in argv):
        argv += ["--study-name", study.name]
    return shlex.join(["python", "run_study.py", *argv, "--resume"])


def teacher_precision(args) -> str:
    """The precision a new bank trains in: ``--teacher-precision``, else the students' ``--precision``."""
    return getattr(args, "teacher_precision", None) or args.precision


def build_teachers(study: Study, data, tracker: Tracker, parent_id: str) -> dict:
    """Stage 1: train or extend every teacher bank the space can use, and log each teacher's run.
    Returns per bank the precision it was trained in and its last step, which ``study.json``
    records (an existing bank keeps its precision whatever ``--precision`` says).

    No teacher-output cache is computed here: each trial takes the caches its config asks for
    from the banks, computing one on first use (:mod:`study.distill.outputs`), so a snapshot or
    a view set no trial samples costs nothing and no cache travels through the object store."""
    from study.teachers.stage import build_teacher_banks

    args = study.args
    specs = study.space.teacher_specs(args.dataset)
    # on a cluster, trials that want GPUs mean teachers should get one too, even if the (autoscaling)
    # cluster has no GPU node up yet; otherwise: a GPU when the cluster has one
    gpus = 1 if args.address and args.gpus_per_trial > 0 else None
    manifests = build_teacher_banks(specs, data, study.bank_root, args.teacher_steps, args.teacher_eval_images,
                                    cpus_per_teacher=args.cpus_per_trial, gpus_per_teacher=gpus, progress=say,
                                    precision=teacher_precision(args),
                                    plugins=study.plugins, registrations=study.registrations)
    teachers = {}
    for spec, manifest in manifests.items():
        teachers[spec.key] = bank_record(manifest)
        bank = bank_for(study.bank_root, spec)
        note = None if isinstance(bank, PretrainedBank) else bank.precision_note(teacher_precision(args))
        if note:  # here, not only in the task: a task's output reaches the terminal only with --verbose
            say(note)
        source = {f"pretrained_{k}": v for k, v in manifest.get("pretrained", {}).items()}  # where its weights came from
        tracker.teacher_run(parent_id, spec.key, {**asdict(spec), "teacher_steps": args.teacher_steps,
                                                  "eval_images": args.teacher_eval_images, **source}, manifest)
    return teachers
