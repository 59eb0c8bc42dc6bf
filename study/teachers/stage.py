"""Stage 1 of a study: build every teacher bank the space can use, once, as Ray tasks.

One task per teacher (on its own GPU when the cluster has GPUs): it trains or
extends the snapshot bank. It computes no teacher-output cache: a trial computes
the one it needs on first use, under the bank's lock, and every later trial reads
it (:meth:`~study.teachers.bank.TeacherBank.outputs`), so a snapshot that no trial
samples costs nothing. Banks live under a directory every node can reach
(``--bank-dir`` / ``$LEVELED_KD_BANK`` on a cluster).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import ray

from study.train.data import ImageData
from study.train.runtime import set_cpu_threads
from study.teachers.bank import TeacherBank, TeacherSpec
from study.teachers.pretrained import bank_for
from study.train.plugins import Registration, prepare_worker


def _task_cpus() -> float | None:
    """CPUs Ray gave the running task (None outside a task)."""
    try:
        return ray.get_runtime_context().get_assigned_resources().get("CPU")
    except Exception:  # not in a Ray worker
        return None


def _build_bank(spec: TeacherSpec, data: ImageData, bank_root: str, max_steps: int, eval_images: int,
                device: str, plugins: tuple[str, ...] = (), registrations: tuple[Registration, ...] = (),
                precision: str | None = None) -> dict:
    """The bank's manifest plus ``started`` / ``finished`` (epoch seconds, measured in the task):
    the teacher's MLflow run spans its real training, not the driver's logging. A pretrained
    teacher's bank imports its snapshots instead of training (``bank_for``)."""
    started = time.time()
    prepare_worker(plugins, registrations)  # a fresh worker: the study's plug-ins, models and pretrained teachers
    # as many torch threads as the task's CPUs: more than that oversubscribes the cores other tasks use
    set_cpu_threads(_task_cpus())
    bank = bank_for(bank_root, spec, eval_images)
    bank.ensure(data, max_steps, device=device, progress=lambda msg: print(msg, flush=True), precision=precision)
    return {**bank.manifest(), "started": started, "finished": time.time()}


def build_teacher_banks(specs: Sequence[TeacherSpec], data: ImageData, bank_root: Path, max_steps: int,
                        eval_images: int, device: str = "auto",
                        cpus_per_teacher: float = 1.0, gpus_per_teacher: int | None = None,
                        progress: Callable[[str], None] = print, plugins: tuple[str, ...] = (),
                        registrations: tuple[Registration, ...] = (),
                        precision: str | None = None) -> dict[TeacherSpec, dict]:
    """Run one Ray task per teacher; returns each bank's manifest. ``precision``: a new bank's (None:
    ``$LEVELED_KD_PRECISION``, the students'); an existing bank keeps its own.

    ``gpus_per_teacher``: None = one GPU when the cluster has GPUs now. An autoscaling cluster
    may have none yet (GPU workers still booting, or min_workers 0): pass 1 to wait for one.
    """
    if not specs:
        return {}
    gpus = gpus_per_teacher if gpus_per_teacher is not None else \
        1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=cpus_per_teacher, num_gpus=gpus, max_retries=2)(_build_bank)
    data_ref = ray.put(data)
    pending = {task.remote(spec, data_ref, str(bank_root), max_steps, eval_images, device, tuple(plugins),
                           tuple(registrations), precision): spec for spec in specs}
    manifests: dict[TeacherSpec, dict] = {}
    reported = {spec: set(TeacherBank(bank_root, spec).steps()) for spec in specs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1, timeout=5.0)
        for spec in pending.values():  # the tasks write their manifests as they go: show new snapshots
            _report_new_snapshots(TeacherBank(bank_root, spec), reported[spec], max_steps, progress)
        for ref in done:
            spec = pending.pop(ref)
            manifests[spec] = ray.get(ref)
            steps = sorted(map(int, manifests[spec]["snapshots"]))
            progress(f"teacher {spec.key}: {len(steps)} snapshots (up to step {steps[-1]}) ready")
    return manifests


def _report_new_snapshots(bank: TeacherBank, reported: set[int], max_steps: int,
                          progress: Callable[[str], None]) -> None:
    try:
        manifest = bank.manifest()
    except Exception:  # being written right now: next time
        return
    snapshots = manifest["snapshots"]
    of = "" if "pretrained" in manifest else f"/{max_steps}"  # a pretrained bank has its own steps
    for step in sorted(int(s) for s in snapshots if int(s) not in reported):
        record = snapshots[str(step)]
        progress(f"teacher {bank.spec.key} step {step}{of}: clean {record['clean_acc']:.4f} "
                 f"translated {record['translated_acc']:.4f}")
        reported.add(step)
