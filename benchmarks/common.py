"""What the student-side benchmarks share: their flags, and MNIST with the cached outputs of one CNN_1 snapshot."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from study.data import ImageData, Split, load_dataset, train_val_split  # noqa: E402
from study.teachers import TeacherBank, TeacherSpec, teacher_bank_root  # noqa: E402


def student_benchmark_parser(doc: str, json_default: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--output-dir", default="runs", help="the CNN_1 bank is built or reused under OUTPUT_DIR/teachers")
    p.add_argument("--teacher-step", type=int, default=2500)
    p.add_argument("--student", default="mlp_1")
    p.add_argument("--json", default=json_default)
    return p


def mnist_with_teacher_outputs(args: argparse.Namespace) -> tuple[ImageData, Split, list]:
    """MNIST, its seeded train/val split and [(logits, features)] of CNN_1 at ``--teacher-step`` on the
    training images: trained and cached the first time, read back afterwards."""
    data = load_dataset("mnist", args.data_root, download=False)
    split = train_val_split(data)
    bank = TeacherBank(teacher_bank_root(args.output_dir), TeacherSpec("mnist", "cnn_1"))
    bank.ensure(data, args.teacher_step)
    return data, split, [bank.outputs(args.teacher_step, data, split.train)]


def write_result(record: dict, path: str | Path) -> Path:
    """Write a benchmark's JSON record (``path`` relative to the repository root) and say where."""
    out = ROOT / path
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return out
