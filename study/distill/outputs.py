"""The teacher outputs a run reads, taken from the snapshot banks on first use.

Both a study's trials and ``python -m study.distill`` call :func:`teacher_outputs`: each teacher's
cached (logits, features) on the run's training images come from its bank
(:meth:`~study.teachers.bank.TeacherBank.outputs`), which computes a cache the first time any
process asks for it, under the bank's file lock, and every later trial, study or node that
reaches the same bank directory reads it back. Nothing is precomputed for runs that never
happen, and nothing large travels through Ray's object store: a trial needs only the path of
the banks (``--bank-dir``, shared storage on a cluster).
"""
from __future__ import annotations

import os

import torch

from study.distill.spec import RunSpec, TeacherOutputs
from study.teachers.bank import TeacherBank, TeacherSpec
from study.teachers.pretrained import bank_for
from study.train.data import ImageData, Split


def teacher_bank(spec: RunSpec, arch: str, seed: int, bank_root: str | os.PathLike) -> TeacherBank:
    """The bank of one of ``spec``'s teachers (architecture, seed, the run's teacher label smoothing): a
    pretrained teacher's imported snapshots, or a bank the study trains (:func:`~study.teachers.pretrained.bank_for`)."""
    return bank_for(bank_root, TeacherSpec(spec.dataset, arch, seed, spec.teacher_label_smoothing))


def teacher_outputs(spec: RunSpec, data: ImageData, split: Split, bank_root: str | os.PathLike,
                    device: str = "auto") -> TeacherOutputs:
    """Each teacher's (logits, features) on ``split.train``, in its order, from the banks under
    ``bank_root`` (computed there on first use); empty when the run uses no teacher. With
    ``spec.views``, on each image's ``K`` views (``[N, K, ...]``, a cache per view set); a teacher
    with a trajectory: stacked over the snapshots the run's epochs use (``[N, U, ...]``, a cache each).
    Memory: ``U x K`` times a plain cache per teacher. With Jacobian matching (``spec.directions``),
    each entry also holds the teacher's derivatives along the run's directions ([N, K, classes])."""
    if not spec.uses_teachers:
        return []
    outputs: list[tuple[torch.Tensor, ...]] = []
    directions = spec.directions
    for ref in spec.teachers:
        bank = teacher_bank(spec, ref.arch, ref.seed, bank_root)
        if not ref.trajectory:
            plain = bank.outputs(ref.step, data, split.train, device=device, views=spec.views)
            if directions is not None:
                plain = (*plain, bank.directional(ref.step, data, split.train, directions, device=device))
            outputs.append(plain)
            continue
        # trajectory: one cache per snapshot the run's epochs use, stacked in trajectory order
        per_step = [bank.outputs(step, data, split.train, device=device, views=spec.views)
                    for step in ref.snapshots_used(spec.epochs)]
        outputs.append((torch.stack([logits for logits, _ in per_step], dim=1),
                        torch.stack([features for _, features in per_step], dim=1)))
    return outputs
