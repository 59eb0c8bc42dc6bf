"""The GPU check's tiny CPU mode: the script the GPU session will run must at least run here.

Not a timing test: it asserts that every section ran and wrote its JSON, never how fast.
"""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_tiny_mode_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    command = [sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--tiny", "--json", str(out)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(out.read_text())
    for section in ("environment", "autocast", "teacher_steps", "teacher_bank", "student", "sharing"):
        assert report[section]["status"] == "ok", report[section].get("traceback")
    assert report["ok"] and report["autocast"]["ok"]
    assert report["teacher_bank"]["precision"] in ("fp32", "bf16")
    assert report["student"]["eager_epoch_s"] > 0 and "graphs_epoch_s" not in report["student"]  # graphs: CUDA only
    assert [r["processes"] for r in report["sharing"]["rows"]] == [2]
