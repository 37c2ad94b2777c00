"""Issue 7, resume and determinism: a run killed at any moment (SIGKILL, Ctrl-C) continues
with ``--resume`` and ends with the metrics an uninterrupted run gets; two runs with one
seed agree exactly (CPU)."""

from __future__ import annotations

import json
import logging
import signal

import pytest
import torch

from relhelpers import comparable, error_line, results, run_main, start_run, wait_for, write_config

EPOCHS = 16  # f's schedule (a tiny backbone): long enough to be caught between two epochs
SEED_ARGS = ("--seed", "3", "--deterministic", "--device", "cpu")


def _config(tmp_path_factory, name: str):
    d = tmp_path_factory.mktemp(name)
    return write_config(d / "benchmark.toml", cache=d / "cache", classifier_epochs=EPOCHS,
                        backbone="test_resnet"), d


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run (its own cache, so f is trained here)."""
    cfg, d = _config(tmp_path_factory, "reference")
    p = run_main("run", "--config", cfg, "--out", d / "run", *SEED_ARGS)
    assert p.returncode == 0, p.stderr
    return results(d / "run")


def _kill_during_training(tmp_path_factory, name: str, sig: int):
    """Start a run, wait for f's first per-epoch checkpoint, send ``sig``; return what is left."""
    cfg, d = _config(tmp_path_factory, name)
    out = d / "run"
    proc = start_run("--config", cfg, "--out", out, *SEED_ARGS)
    last = out / "shared" / "classifier" / "last.pt"
    wait_for(last, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    epoch = torch.load(last, map_location="cpu", weights_only=False)["epoch"]
    assert epoch >= 1 and epoch < EPOCHS, f"not stopped mid-training (last complete epoch {epoch})"
    assert not (out / "shared" / "classifier" / "final.pt").exists()
    return out, proc.returncode, err, epoch


@pytest.mark.slow
def test_sigkill_mid_training_then_resume_equals_uninterrupted_run(tmp_path_factory, reference, caplog):
    out, rc, _, epoch = _kill_during_training(tmp_path_factory, "killed", signal.SIGKILL)
    assert rc == -signal.SIGKILL
    caplog.set_level(logging.INFO, logger="wsolbench")
    p = run_main("run", "--resume", out)  # the command in this process: no second interpreter start
    assert p.returncode == 0, p.stderr
    # it continued f from its last complete epoch instead of starting over
    assert f"classifier f: resuming after epoch {epoch} of {EPOCHS}" in caplog.text
    assert not list(out.rglob("*.tmp"))  # what the kill left half-written is cleaned up
    res = results(out)
    assert len(res["classifier"]["selection"]["history"]) == EPOCHS
    assert comparable(res) == comparable(reference)
    assert json.loads((out / "meta.json").read_text())["resumed_utc"]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_prints_the_resume_command(tmp_path_factory, reference):
    out, rc, err, epoch = _kill_during_training(tmp_path_factory, "ctrlc", signal.SIGINT)
    assert rc == 130, err
    assert f"wsolbench run --resume {out}" in err
    assert "Traceback" not in err, err
    assert (out / "config.json").is_file()
    assert not list(out.rglob("*.tmp"))  # nothing half-written
    p = run_main("run", "--resume", out)  # in this process: the command, without a new interpreter
    assert p.returncode == 0, p.stderr
    assert comparable(results(out)) == comparable(reference)


@pytest.mark.slow
def test_same_seed_gives_identical_results(tmp_path_factory, reference):
    cfg, d = _config(tmp_path_factory, "again")  # a separate cache: f is trained again
    p = run_main("run", "--config", cfg, "--out", d / "run", *SEED_ARGS)
    assert p.returncode == 0, p.stderr
    res = results(d / "run")
    assert "reused_from_cache" not in res["classifier"]
    assert comparable(res) == comparable(reference)
    meta = json.loads((d / "run" / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["deterministic"] is True
    # and --seed is really used: another seed trains another f
    p = run_main("run", "--config", cfg, "--out", d / "run4", "--seed", "4", "--device", "cpu")
    assert p.returncode == 0, p.stderr
    other = results(d / "run4")["classifier"]["selection"]["history"]
    assert [h["loss"] for h in other] != [h["loss"] for h in res["classifier"]["selection"]["history"]]


def test_resume_refuses_flags_that_would_change_the_run(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"run": {"device": "cpu"}}))
    p = run_main("run", "--resume", run, "--set", "classifier.lr=0.01")
    assert p.returncode == 2
    line = error_line(p)
    assert "--set" in line and str(run / "config.json") in line and "start a new run" in line
    p = run_main("run", "--resume", tmp_path / "nothing")
    assert p.returncode == 2 and "not a run folder" in error_line(p)
