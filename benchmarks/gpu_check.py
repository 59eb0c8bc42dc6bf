"""The whole GPU check of issue 12 in one script: a few minutes on a GPU, seconds with ``--tiny``.

    python benchmarks/gpu_check.py [--data-root /path/to/data] [--processes 1 2 4 8] [--json PATH]
    python benchmarks/gpu_check.py --device cpu --tiny          # the same code paths on a CPU (tests use it)

Sections (each one is recorded even when another fails, with its error):

1. ``environment``: torch, CUDA, the device, bf16 support, what ``precision=auto`` resolves to.
2. ``autocast``: a matmul and a convolution under bf16 autocast give bf16 results close to fp32.
3. ``teacher_steps``: CNN_1 ms per step at batch 128, fp32 vs bf16 (the trainer's own step).
4. ``teacher_bank``: a real snapshot bank (TeacherBank.ensure to 50 steps, its 33-shift scoring,
   then the output cache), in a temporary folder.
5. ``student``: MLP_1 epoch time with cached teacher outputs, ``step_mode`` eager vs graphs (CUDA
   graphs; eager only on a CPU), and a correctness check: with dropout off, N graphed steps must
   give the weights N eager steps give (up to bf16 rounding).
6. ``sharing``: N processes training a student at once on the one device: epoch time each sees
   and student epochs per hour all together (what ``--gpus-per-trial 1/N`` buys).

Data: real MNIST from ``--data-root`` when given, else random images of MNIST's shape (timings
do not depend on pixel values). Prints a summary and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from losses import LeveledKDConfig, LeveledKDLoss
from models import build_model
from study.train.data import ImageData, load_dataset, train_val_split
from study.distill.spec import RunSpec, TeacherRef, build_trainer
from study.train.runtime import autocast_context, cpu_flags, resolve_precision
from study.teachers.bank import TeacherBank, TeacherSpec
from study.train.trainer import TrainConfig, Trainer, seed_everything, select_device

ROOT = Path(__file__).resolve().parents[1]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_data(args: argparse.Namespace) -> ImageData:
    """Real MNIST (``--data-root``) or random images of its shape; ``--tiny`` keeps 1,200 / 200."""
    if args.data_root:
        data = load_dataset("mnist", args.data_root, download=False)
    else:
        g = torch.Generator().manual_seed(0)
        data = ImageData("mnist", torch.randn(60000, 1, 28, 28, generator=g),
                         torch.randint(0, 10, (60000,), generator=g), torch.randn(10000, 1, 28, 28, generator=g),
                         torch.randint(0, 10, (10000,), generator=g), 10, (0.1307,), (0.3081,))
    if args.tiny:
        data = ImageData(data.name, data.train_x[:1200], data.train_y[:1200], data.test_x[:200], data.test_y[:200],
                         data.num_classes, data.mean, data.std)
    return data


# -- sections ------------------------------------------------------------------------------
def environment(args: argparse.Namespace, device: torch.device) -> dict:
    info = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "device": str(device),
            "cuda_version": torch.version.cuda, "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "cpu_bf16_flags": sorted({"avx512_bf16", "amx_bf16"} & cpu_flags()),
            "precision_auto": resolve_precision("auto", device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, capability=f"{props.major}.{props.minor}", memory_gib=props.total_memory / 2**30,
                    bf16_supported=torch.cuda.is_bf16_supported())
    return info


def autocast_check(args: argparse.Namespace, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(256, 256, generator=g).to(device), torch.randn(256, 256, generator=g).to(device)
    x, w = torch.randn(8, 16, 14, 14, generator=g).to(device), torch.randn(32, 16, 3, 3, generator=g).to(device)
    with autocast_context(device, "bf16"):
        mm, conv = a @ b, torch.nn.functional.conv2d(x, w, padding=1)
    ref_mm, ref_conv = a @ b, torch.nn.functional.conv2d(x, w, padding=1)
    err = lambda got, ref: float((got.float() - ref).abs().max() / ref.abs().max())  # noqa: E731
    out = {"matmul_dtype": str(mm.dtype), "conv_dtype": str(conv.dtype),
           "matmul_rel_err": err(mm, ref_mm), "conv_rel_err": err(conv, ref_conv)}
    out["ok"] = mm.dtype == conv.dtype == torch.bfloat16 and out["matmul_rel_err"] < 0.05 and out["conv_rel_err"] < 0.05
    return out


def teacher_steps(args: argparse.Namespace, device: torch.device, data: ImageData) -> dict:
    steps = 3 if args.tiny else 30
    rows = {}
    for precision in ("fp32", "bf16"):
        seed_everything(0)
        trainer = Trainer(build_model("cnn_1", data.input_shape, 10), LeveledKDLoss(LeveledKDConfig(alpha=1.0)),
                          {"x": data.train_x, "y": data.train_y},
                          TrainConfig(epochs=10**6, seed=0, device=str(device), precision=precision))
        trainer.config.max_steps = 2  # warm-up: cuDNN autotuning, oneDNN primitives
        trainer.fit()
        synchronize(device)
        started = time.perf_counter()
        trainer.config.max_steps = 2 + steps
        trainer.fit()
        synchronize(device)
        rows[precision] = {"ms_per_step": 1000 * (time.perf_counter() - started) / steps,
                           "loss": trainer.last_losses.get("total")}
    rows["speedup_bf16"] = rows["fp32"]["ms_per_step"] / rows["bf16"]["ms_per_step"]
    return rows


def teacher_bank(args: argparse.Namespace, device: torch.device, data: ImageData) -> dict:
    with tempfile.TemporaryDirectory(prefix="lkd-gpu-check-") as root:
        bank = TeacherBank(root, TeacherSpec("mnist", "cnn_1"), eval_images=100 if args.tiny else 1000)
        started = time.perf_counter()
        bank.ensure(data, 50, device=str(device))
        trained = time.perf_counter() - started
        split = train_val_split(data)
        logits, features = bank.outputs(50, data, split.train, device=str(device))
        record = bank.record(50)
        return {"train_and_score_s": trained, "cache_s": time.perf_counter() - started - trained,
                "precision": bank.manifest().get("precision"), "clean_acc": record["clean_acc"],
                "translated_acc": record["translated_acc"], "cache_shapes": [list(logits.shape), list(features.shape)],
                "ok": bool(torch.isfinite(logits).all() and torch.isfinite(features).all())}


def student_trainer(data: ImageData, device: torch.device, step_mode: str, seed: int = 0) -> Trainer:
    split = train_val_split(data)
    g = torch.Generator().manual_seed(1)
    n = len(split.train)
    outputs = [(torch.randn(n, 10, generator=g), torch.rand(n, 256, generator=g))]
    spec = RunSpec(student="mlp_1", teachers=(TeacherRef("cnn_1", 50),), loss=LeveledKDConfig(s_kl=1.0, s_fm=0.0),
                   epochs=10**6, seed=seed)
    trainer = build_trainer(spec, data, split, outputs, device=str(device))
    trainer.config.step_mode = step_mode  # graphs: the first full batch captures (study/train/cuda_graphs.py)
    return trainer


def time_epochs(trainer: Trainer, epochs: int) -> list[float]:
    times = []
    for _ in range(epochs):
        trainer.config.max_steps = trainer.step + trainer.steps_per_epoch
        synchronize(trainer.device)
        started = time.perf_counter()
        trainer.fit()
        synchronize(trainer.device)
        times.append(time.perf_counter() - started)
    return times


def graphs_match_eager(data: ImageData, device: torch.device, steps: int) -> dict:
    """With dropout off, ``steps`` graphed steps must reproduce ``steps`` eager ones (same batches)."""
    weights = {}
    for mode in ("eager", "graphs"):
        trainer = student_trainer(data, device, mode)
        for module in trainer.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        trainer.config.max_steps = steps
        trainer.fit()
        weights[mode] = torch.cat([p.detach().float().flatten() for p in trainer.model.parameters()])
    diff = float((weights["graphs"] - weights["eager"]).abs().max())
    scale = float(weights["eager"].abs().max())
    return {"steps": steps, "max_abs_diff": diff, "rel_diff": diff / scale, "ok": diff / scale < 1e-2}


def student(args: argparse.Namespace, device: torch.device, data: ImageData) -> dict:
    epochs = 1 if args.tiny else 3
    modes = ["eager", "graphs"] if device.type == "cuda" else ["eager"]
    out: dict = {"epochs_timed": epochs, "steps_per_epoch": None, "modes": {}}
    trainers = {mode: student_trainer(data, device, mode) for mode in modes}
    for mode, trainer in trainers.items():
        time_epochs(trainer, 1)  # warm-up epoch (and the graph capture)
        out["steps_per_epoch"] = trainer.steps_per_epoch
    for _ in range(epochs):  # alternate, so drifting load hits both
        for mode, trainer in trainers.items():
            out["modes"].setdefault(mode, []).extend(time_epochs(trainer, 1))
    for mode in modes:
        out[f"{mode}_epoch_s"] = statistics.median(out["modes"][mode])
    if "graphs" in modes:
        out["graphs_speedup"] = out["eager_epoch_s"] / out["graphs_epoch_s"]
        out["graphs_match_eager"] = graphs_match_eager(data, device, 3 + 5)
    return out


def _share_worker(args: argparse.Namespace, seed: int, step_mode: str, start, results) -> None:
    torch.set_num_threads(1)
    device = select_device(args.device)
    data = make_data(args)
    trainer = student_trainer(data, device, step_mode, seed)
    time_epochs(trainer, 1)
    start.wait()
    times = time_epochs(trainer, 1 if args.tiny else 2)
    peak = torch.cuda.max_memory_reserved(device) / 2**20 if device.type == "cuda" else 0.0
    results.put({"epoch_s": statistics.mean(times), "peak_reserved_mib": peak})


def sharing(args: argparse.Namespace, device: torch.device, data: ImageData) -> dict:
    # the installed module's worker, also when this file runs as __main__: workers unpickle it by that name
    from benchmarks.gpu_check import _share_worker

    step_mode = "graphs" if device.type == "cuda" else "eager"
    ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
    rows = []
    for n in args.processes:
        start, results = ctx.Barrier(n + 1), ctx.Queue()
        procs = [ctx.Process(target=_share_worker, args=(args, seed, step_mode, start, results)) for seed in range(n)]
        for p in procs:
            p.start()
        start.wait(timeout=600)
        got = [results.get(timeout=900) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        epoch_s = statistics.mean(r["epoch_s"] for r in got)
        rows.append({"processes": n, "step_mode": step_mode, "mean_epoch_s": epoch_s,
                     "epochs_per_hour_total": 3600 * n / epoch_s,
                     "peak_reserved_mib": max(r["peak_reserved_mib"] for r in got)})
    for r in rows:
        r["throughput_vs_1"] = r["epochs_per_hour_total"] / rows[0]["epochs_per_hour_total"]
    return {"rows": rows}


# -- driver --------------------------------------------------------------------------------
def run_section(name: str, fn: Callable[[], dict]) -> dict:
    started = time.perf_counter()
    try:
        result = {"status": "ok", **fn()}
    except Exception as error:  # keep going: one broken section must not hide the others
        result = {"status": "error", "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    result["seconds"] = time.perf_counter() - started
    print(f"[{result['status']:>5}] {name} ({result['seconds']:.1f}s)", file=sys.stderr, flush=True)
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cuda or cpu")
    p.add_argument("--tiny", action="store_true", help="seconds, not minutes: 1,200 images, few steps (tests)")
    p.add_argument("--data-root", default=None, help="MNIST root; default: random images of MNIST's shape")
    p.add_argument("--processes", type=int, nargs="+", default=None, help="default: 1 2 4 8 (tiny: 2)")
    p.add_argument("--json", default="benchmarks/results/gpu_check.json")
    args = p.parse_args(argv)
    args.processes = args.processes or ([2] if args.tiny else [1, 2, 4, 8])
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = select_device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    data = make_data(args)
    command = ["benchmarks/gpu_check.py", *(sys.argv[1:] if argv is None else argv)]
    report = {"benchmark": "gpu_check", "command": "python " + " ".join(command),
              "tiny": args.tiny, "load_avg": os.getloadavg()}
    report["environment"] = run_section("environment", lambda: environment(args, device))
    report["autocast"] = run_section("autocast", lambda: autocast_check(args, device))
    report["teacher_steps"] = run_section("teacher_steps", lambda: teacher_steps(args, device, data))
    report["teacher_bank"] = run_section("teacher_bank", lambda: teacher_bank(args, device, data))
    report["student"] = run_section("student", lambda: student(args, device, data))
    report["sharing"] = run_section("sharing", lambda: sharing(args, device, data))
    report["ok"] = all(report[k]["status"] == "ok" and report[k].get("ok", True) for k in
                       ("environment", "autocast", "teacher_steps", "teacher_bank", "student", "sharing"))
    out = Path(args.json)
    out = out if out.is_absolute() else ROOT / out
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    summarize(report)
    print(f"wrote {out}")
    return report


def summarize(report: dict) -> None:
    env, steps, stu = report["environment"], report["teacher_steps"], report["student"]
    print(f"device {env.get('name', env.get('device'))}; precision auto -> {env.get('precision_auto')}; "
          f"all sections ok: {report['ok']}")
    if steps["status"] == "ok":
        print(f"CNN_1 step: fp32 {steps['fp32']['ms_per_step']:.1f} ms, bf16 {steps['bf16']['ms_per_step']:.1f} ms "
              f"({steps['speedup_bf16']:.2f}x)")
    if stu["status"] == "ok":
        line = f"MLP_1 KD epoch ({stu['steps_per_epoch']} steps): eager {stu['eager_epoch_s']:.2f}s"
        if "graphs_epoch_s" in stu:
            line += (f", CUDA graphs {stu['graphs_epoch_s']:.2f}s ({stu['graphs_speedup']:.2f}x; graphed = eager "
                     f"weights: {stu['graphs_match_eager']['ok']})")
        print(line)
    if report["sharing"]["status"] == "ok":
        for r in report["sharing"]["rows"]:
            print(f"{r['processes']} process(es): epoch {r['mean_epoch_s']:.2f}s each, throughput "
                  f"{r['throughput_vs_1']:.2f}x of one, peak {r['peak_reserved_mib']:.0f} MiB")
    for name in ("environment", "autocast", "teacher_steps", "teacher_bank", "student", "sharing"):
        if report[name]["status"] != "ok":
            print(f"{name} FAILED: {report[name]['error']}")


if __name__ == "__main__":
    sys.exit(0 if main()["ok"] else 1)
