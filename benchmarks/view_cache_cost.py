"""What K fixed views cost in the teacher bank: a view cache's size and compute time against the plain cache.

    python -m benchmarks.view_cache_cost --data-root data --bank-dir runs/teachers --step 2500 --ks 1,4
    python -m benchmarks.view_cache_cost --data-root data --bank-dir runs/teachers --subset 5400   # a tenth

Computes, for one CNN_1 snapshot of an existing bank (a copy of it without caches, so nothing is
reused and the bank is left alone), the plain teacher-output cache of the MNIST training split
(or a seeded subset of it) and the cache of each ``--views`` set with K views per image, and
reports each file's size and the wall time to compute it. Expected: K x the plain cache's size and
about K x its time (K teacher passes, plus building the views). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import ROOT, print_table, write_result
from benchmarks.lazy_caches import fresh_banks
from study.teachers.bank import TeacherBank, TeacherSpec
from study.train.data import load_dataset, train_val_split
from study.train.views import ViewSet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="data")
    p.add_argument("--bank-dir", required=True, help="banks holding mnist/cnn_1/seed-0 up to --step")
    p.add_argument("--step", type=int, default=2500)
    p.add_argument("--views", default="mixup", help="which view set (mixup, noise, erase)")
    p.add_argument("--ks", default="1,4", help="views per image to measure, comma-separated")
    p.add_argument("--subset", type=int, default=0, help="student training images (0: the whole training split)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--label", default="default", help="the record's name in the JSON file (one per label)")
    p.add_argument("--json", default="benchmarks/results/view_cache_cost.json")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset("mnist", args.data_root, download=False)
    indices = train_val_split(data, args.subset or None, seed=0).train
    rows = []
    with tempfile.TemporaryDirectory(prefix="lkd-views-") as tmp:
        root = Path(tmp) / "banks"
        fresh_banks(Path(args.bank_dir).resolve(), root)
        bank = TeacherBank(root, TeacherSpec("mnist", "cnn_1"))
        bank.load(args.step, data)  # the snapshot exists and matches its hash, before anything is timed
        for k in [0, *map(int, args.ks.split(","))]:
            views = ViewSet.create(args.views, k=k) if k else None
            started = time.perf_counter()
            logits, features = bank.outputs(args.step, data, indices, device=args.device, views=views)
            seconds = time.perf_counter() - started
            size = bank.outputs_path(args.step, indices, views).stat().st_size
            rows.append({"cache": f"{args.views} K={k}" if k else "plain", "k": k, "images": len(indices),
                         "shape": list(logits.shape[:-1]) + [logits.shape[-1] + features.shape[-1]],
                         "mb": round(size / 2**20, 1), "seconds": round(seconds, 1)})
    plain = rows[0]
    for row in rows:
        row["size_x_plain"] = round(row["mb"] / plain["mb"], 2)
        row["time_x_plain"] = round(row["seconds"] / plain["seconds"], 2)
    print_table(rows, [("cache", "cache", "{}"), ("images", "images", "{}"), ("MB", "mb", "{:.1f}"),
                       ("x plain", "size_x_plain", "{:.2f}"), ("seconds", "seconds", "{:.1f}"),
                       ("x plain time", "time_x_plain", "{:.2f}")])
    path = ROOT / args.json
    record = json.loads(path.read_text()) if path.is_file() else {}
    record[args.label] = {"teacher": "mnist/cnn_1/seed-0", "step": args.step, "views": args.views,
                          "device": args.device, "threads": torch.get_num_threads(),
                          "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                      "load_avg": os.getloadavg()}, "rows": rows}
    write_result(record, args.json)


if __name__ == "__main__":
    main()
