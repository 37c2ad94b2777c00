"""The example plug-in (examples/plugin): its method, and the package installed the way a
user would install it, registered through the entry point and run end to end."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "examples" / "plugin"
ORIGIN = "entry point wsol_example_plugin:SpectralSaliency of wsolbench-example-plugin"


@pytest.fixture()
def saliency_cls(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))
    from wsol_example_plugin import SpectralSaliency

    return SpectralSaliency


def test_spectral_saliency_finds_the_odd_square(saliency_cls):
    from wsolbench.data.pipeline import IMAGENET_MEAN, IMAGENET_STD

    g = torch.Generator().manual_seed(0)
    img = 0.5 + 0.05 * torch.randn(2, 3, 64, 64, generator=g)
    img[0, :, 40:50, 10:20] += 0.4
    img[1, :, 5:15, 30:40] -= 0.4
    x = (img - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    m = saliency_cls().localize(x, torch.tensor([0, 1]))
    assert m.shape == (2, 64, 64) and torch.isfinite(m).all()
    for b, (ys, xs) in enumerate(((slice(40, 50), slice(10, 20)), (slice(5, 15), slice(30, 40)))):
        y, xx = divmod(int(m[b].argmax()), 64)
        assert ys.start - 2 <= y < ys.stop + 2 and xs.start - 2 <= xx < xs.stop + 2
        assert m[b, ys, xs].mean() > 2 * m[b].mean()
    small = saliency_cls(size=32).localize(x, torch.tensor([0, 1]))
    assert small.shape == (2, 32, 32)


def test_spectral_saliency_declares_its_contract(saliency_cls):
    assert saliency_cls.options == {"size": 64}
    assert saliency_cls.uses_classifier is False and saliency_cls.map_range == "raw"


# --------------------------------------------------------------------------- installed
@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory):
    """The plug-in pip-installed (no deps, no network) into a folder put on PYTHONPATH."""
    from importlib import metadata

    try:
        have = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        have = None
    major_minor = tuple(int(p) for p in (have or "0.0").split(".")[:2] if p.isdigit())
    assert major_minor >= (70, 1), (
        f"building the example plug-in without network needs setuptools>=70.1 in this environment "
        f"(found {have}); the 'test' extra of wsolbench installs it")
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    shutil.copytree(PLUGIN, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = tmp / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "-q", "--target", str(site), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(site.glob("wsolbench_example_plugin-*.dist-info"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    extra = [os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), *extra])
    return env, tmp


def _py(env, cwd, *args, timeout=300):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=timeout)


@pytest.mark.slow
def test_installed_plugin_is_registered_through_its_entry_point(plugin_env):
    env, tmp = plugin_env
    code = ("from wsolbench.methods import METHODS\n"
            "print(METHODS.origin('saliency'))\n"
            "cls = METHODS.get('saliency')\n"
            "print(cls.__module__, cls.__name__, cls.options)\n")
    proc = _py(env, tmp, "-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [ORIGIN, "wsol_example_plugin SpectralSaliency {'size': 64}"]


@pytest.mark.slow
def test_installed_plugin_is_listed_by_the_cli(plugin_env):
    env, tmp = plugin_env
    proc = _py(env, tmp, "-m", "wsolbench", "methods")
    assert proc.returncode == 0, proc.stderr
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("saliency ")]
    assert len(line) == 1 and f"[{ORIGIN}]" in line[0] and "Spectral-residual" in line[0]
    assert any(ln.startswith("cam ") for ln in proc.stdout.splitlines())  # the built-ins are still there


@pytest.mark.slow
def test_installed_plugin_runs_end_to_end(plugin_env):
    env, tmp = plugin_env
    out = tmp / "run"
    sets = ["datasets.synthetic.classes=2", "datasets.synthetic.train_per_class=6",
            "datasets.synthetic.test_per_class=3", "datasets.synthetic.size=32", "data.resize=36",
            "data.crop=32", "data.wsoleval_size=32", f"run.cache_dir={json.dumps(str(tmp / 'cache'))}",
            "model.pretrained=false"]
    args = ["-m", "wsolbench", "run", "--methods", "saliency", "--device", "cpu", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    proc = _py(env, tmp, *args, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    entry = results["methods"]["saliency"]
    assert entry["complete"] is True and entry["method"] == "saliency"
    assert entry["options"] == {"size": 64}
    assert set(entry["protocols"]) == {"paper", "wsoleval"}
    wanted = {"paper": ("gt_known_loc", "pxap"), "wsoleval": ("max_box_acc", "max_box_acc_v2", "pxap")}
    for protocol, keys in wanted.items():
        metrics = entry["protocols"][protocol]["metrics"]
        for k in keys:
            v = metrics.get(k)
            assert isinstance(v, (int, float)) and 0 <= v <= 100, (protocol, k, v)
    assert results["splits_used"]["test"] == 6
    assert (out / "table.md").read_text().count("saliency") >= 1
    # the run's figures used the fitted plug-in; `wsolbench report` works on the folder
    assert results["figures"]["boxes.png"] == "written" and (out / "figures" / "boxes.png").is_file()
    proc = _py(env, tmp, "-m", "wsolbench", "report", str(out))
    assert proc.returncode == 0, proc.stderr
    report = (out / "report.md").read_text()
    assert "![boxes.png](figures/boxes.png)" in report and "| saliency |" in report
