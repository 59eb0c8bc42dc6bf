"""The "Adding a KD method" example of docs/extending.md (linked from the README), run as written:
one module registers a method, and the run configuration, the loss, the CLI flags and the bounds
all pick it up."""
from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "docs" / "extending.md").read_text()
    section = text[text.index("## Adding a KD method"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_example_method_is_one_module_and_everything_reads_it(tmp_path):
    code = readme_example()
    assert 20 <= len(code.splitlines()) <= 40  # "a ~30-line example"
    (tmp_path / "logit_mse.py").write_text(code)
    check = textwrap.dedent("""
        import sys
        import torch
        import logit_mse  # registers the term, as `from . import logit_mse` in losses/__init__.py would
        from losses import LeveledKDConfig, LeveledKDLoss, kd_terms
        from study.distill.config import ConfigError, check_value, validate_run
        from study.distill.cli import parse_args
        from study.analysis.tables import kd_columns

        assert "logit_mse" in kd_terms()
        run = validate_run({"teachers": "cnn_1", "step_cnn_1": 50, "s_kl": 0.0, "s_logit_mse": 1.0})
        assert run.s_logit_mse == 1.0 and run.logit_mse_clip == 50.0
        try:
            check_value("logit_mse_clip", 2000)
            sys.exit("the bound was not enforced")
        except ConfigError as error:
            assert str(error) == "logit_mse_clip=2000 is out of range [1, 1000]", str(error)
        args = parse_args(["--s-kl", "0", "--s-logit-mse", "1", "--logit-mse-clip", "20"])
        assert args.s_logit_mse == 1.0 and args.logit_mse_clip == 20.0
        assert {"s_logit_mse", "logit_mse_clip"} <= set(kd_columns())
        config = LeveledKDConfig(alpha=0.0, scales={"kl": 0.0, "logit_mse": 1.0})
        assert config.variant == "logit_mse"
        z_s, z_t = torch.randn(4, 10, requires_grad=True), torch.randn(4, 10)
        out = LeveledKDLoss(config, 16, [16])((z_s, torch.randn(4, 16)), torch.zeros(4, dtype=torch.long),
                                               [z_t], [torch.randn(4, 16)])
        torch.testing.assert_close(out["total"], ((z_s - z_t) ** 2).mean())
        out["total"].backward()
        assert z_s.grad is not None
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]
