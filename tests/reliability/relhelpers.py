"""Helpers of the reliability tests (issue 7): configs, datasets, and the command line.

``run_main`` drives ``wsolbench.cli.main`` in this process (the same parser and handlers a
user's ``wsolbench ...`` goes through, without paying torch's import per test);
``tests.conftest.run_cli`` starts a real process where the process boundary matters
(signals, tracebacks on stderr).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from tests.conftest import REPO, TINY_TOML

PY = sys.executable


def write_config(path: Path, *, methods=("cam", "center"), cache: Path, classifier_epochs: int = 2,
                 dataset: str = "synthetic", backbone: str | None = None, extra: str = "") -> Path:
    """The tiny test configuration (tests/conftest.py) with a chosen f schedule, backbone
    (timm's ``test_resnet``, 0.5 M parameters, makes epochs and checkpoints cheap) and dataset."""
    text = TINY_TOML.format(methods="[" + ", ".join(f'"{m}"' for m in methods) + "]", cache=str(cache))
    text = text.replace("[datasets.synthetic.classifier]\nepochs = 2",
                        f"[datasets.synthetic.classifier]\nepochs = {classifier_epochs}")
    if backbone:
        text += f'\n[datasets.synthetic.model]\nbackbone = "{backbone}"\npretrained = false\n'
    if dataset != "synthetic":
        text = text.replace("[datasets.synthetic", f"[datasets.{dataset}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + extra)
    return path


def run_main(*args: str, figures: bool = False) -> SimpleNamespace:
    """``wsolbench ARGS`` in this process: returncode, stdout, stderr (like run_cli).

    Figures (matplotlib, seconds per run; tested in tests/report) are left out unless asked.
    """
    from unittest import mock

    import torch

    from wsolbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    no_figures = mock.patch("wsolbench.report.figures.write_run_figures", lambda runner: {})
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                (contextlib.nullcontext() if figures else no_figures):
            code = main([str(a) for a in args])
    finally:  # a run sets process-wide torch state; later tests must not inherit it
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det)
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def error_line(p) -> str:
    """The single ``error: ...`` line of a failed command (asserting there is exactly one)."""
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, p.stderr
    assert "Traceback" not in p.stderr, p.stderr
    return lines[0]


def make_synth(root: Path, *, classes: int = 2, train: int = 6, test: int = 3, size: int = 32) -> Path:
    p = run_main("synth", "--out", root, "--classes", classes, "--train-per-class", train,
                 "--test-per-class", test, "--size", size)
    assert p.returncode == 0, p.stderr
    return root


def copy_dataset(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def image_rows(root: Path) -> list[tuple[str, str]]:
    """(image_id, relative path) rows of a CUB-layout images.txt."""
    return [tuple(line.split()) for line in (root / "images.txt").read_text().splitlines() if line.strip()]


def split_of(root: Path) -> dict[str, str]:
    return dict(line.split() for line in (root / "train_test_split.txt").read_text().splitlines()
                if line.strip())


def results(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "results.json").read_text())


def comparable(res: dict) -> dict:
    """What must be equal between two runs of one configuration: every metric of every
    method and protocol, each method's selection, and f's training history (no timings,
    paths or host facts)."""
    out = {"splits_used": res["splits_used"], "skipped_images": res.get("skipped_images")}
    for label, entry in res["methods"].items():
        out[label] = {"selection": entry.get("selection"),
                      "protocols": {p: v["metrics"] for p, v in entry["protocols"].items()}}
    out["classifier"] = (res.get("classifier") or {}).get("selection")
    return out


def start_run(*args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m wsolbench run ARGS`` in the background, SIGINT handled as in a terminal."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    full_env.pop("WORLD_SIZE", None)
    return subprocess.Popen(
        [PY, "-m", "wsolbench", "run", *map(str, args)], cwd=REPO, env=full_env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # a background process may inherit SIGINT as ignored; a user's terminal delivers it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    """Poll until ``path`` exists (the process must still be running)."""
    t0 = time.monotonic()
    while not path.exists():
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {path} appeared:\n{err}")
        if time.monotonic() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout} s")
        time.sleep(0.02)
