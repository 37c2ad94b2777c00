"""Shared fixtures: a tiny synthetic benchmark configuration that runs in seconds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

TINY_TOML = """
[run]
methods = {methods}
cache_dir = "{cache}"
eval_batch_size = 16
threads = 1

[evaluation]
cam_curve_interval = 0.01

[datasets.synthetic]
classes = 2
train_per_class = 10
test_per_class = 4
size = 32

[datasets.synthetic.data]
resize = 36
crop = 32
wsoleval_size = 32
val_fraction = 0.2

[datasets.synthetic.classifier]
epochs = 2
batch_size = 8
lr = 0.05
lr_step = 10

[datasets.synthetic.methods.ours1]
epochs = 2
batch_size = 8
lr = 0.01

[datasets.synthetic.methods.ours2]
epochs = 2
batch_size = 8
lr = 0.01
siamese_epochs = 1
siamese_batch_size = 8
"""


@pytest.fixture
def tiny_config(tmp_path_factory):
    """Write a tiny config; ``tiny_config(methods)`` returns its path."""

    def make(methods=("cam", "center"), cache: Path | None = None) -> Path:
        d = tmp_path_factory.mktemp("cfg")
        cache = cache or tmp_path_factory.getbasetemp() / "wsolbench-cache"
        path = d / "benchmark.toml"
        path.write_text(TINY_TOML.format(methods="[" + ", ".join(f'"{m}"' for m in methods) + "]",
                                         cache=str(cache)))
        return path

    return make


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m wsolbench ARGS`` as a user would; returns the completed process."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("WORLD_SIZE", None)
    return subprocess.run([sys.executable, "-m", "wsolbench", *args], cwd=cwd or REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
