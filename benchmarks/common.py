"""What the benchmarks share: the student-side ones' flags and MNIST with the cached outputs of one CNN_1
snapshot; printing a table; writing the JSON record."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from study.train.data import ImageData, Split, load_dataset, train_val_split
from study.teachers.bank import TeacherBank, TeacherSpec, teacher_bank_root

ROOT = Path(__file__).resolve().parents[1]


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


#: A table column: (header, the row's key or a function of the row, a ``str.format`` template for the value).
Column = tuple[str, str | Callable[[dict], Any], str]


def format_table(rows: Iterable[dict], columns: Sequence[Column], sep: str = "  ") -> str:
    """``rows`` as text: a header line, a rule, a line per row. Each column is as wide as its header or
    its widest cell; the first column is left-aligned when it holds text, every other one right-aligned."""
    values = [[value(row) if callable(value) else row[value] for _, value, _ in columns] for row in rows]
    cells = [[fmt.format(v) for v, (_, _, fmt) in zip(vs, columns)] for vs in values]
    widths = [max([len(header), *(len(texts[i]) for texts in cells)]) for i, (header, _, _) in enumerate(columns)]
    left = bool(values) and all(isinstance(vs[0], str) for vs in values)
    aligns = ["<" if i == 0 and left else ">" for i in range(len(columns))]

    def join(texts: Sequence[str]) -> str:
        return sep.join(f"{text:{align}{width}}" for text, align, width in zip(texts, aligns, widths)).rstrip()

    head = join([header for header, _, _ in columns])
    return "\n".join([head, "-" * len(head), *(join(texts) for texts in cells)])


def print_table(rows: Iterable[dict], columns: Sequence[Column], sep: str = "  ") -> None:
    """Print :func:`format_table` of ``rows``."""
    print(format_table(rows, columns, sep))


def alternate_epochs(trainers: dict, rounds: int) -> dict[str, list[float]]:
    """Seconds of one student epoch of each trainer, for ``rounds`` rounds: the trainers take turns,
    an epoch each, so a load that drifts (other jobs on the machine) hits all of them alike."""
    import time

    times: dict[str, list[float]] = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, trainer in trainers.items():
            trainer.config.max_steps = trainer.step + trainer.steps_per_epoch
            started = time.perf_counter()
            trainer.fit()
            times[name].append(time.perf_counter() - started)
    return times
