"""The ``wsolbench`` command line.

Every subcommand reports a problem the user can fix as one line (``error: ...``) with
exit status 2 and no traceback (``--debug`` shows it); Ctrl-C stops cleanly and says how
to resume.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Callable

from wsolbench import __version__
from wsolbench.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def _add_run(sub) -> None:
    p = sub.add_parser("run", help="train, select checkpoints on train/val, evaluate test, write a run folder",
                       description="Train what the methods need, select checkpoints without test labels, "
                                   "evaluate the test split and write results.json, tables and figures.")
    p.add_argument("--dataset", help="dataset name (default: synthetic, generated on first use)")
    p.add_argument("--methods", help="comma-separated methods, e.g. ours1,ours2,cam or ours2[inner=false]")
    p.add_argument("--protocols", help="comma-separated: paper,wsoleval")
    p.add_argument("--config", type=Path, help="benchmark.toml to use (default: ./benchmark.toml if present)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration value, e.g. classifier.epochs=3 (repeatable)")
    p.add_argument("--seed", type=int, help="random seed (default from config: 0)")
    p.add_argument("--seeds", help="comma-separated seeds: the whole comparison once per seed, "
                                   "sharing nothing; tables show mean ± std")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--out", type=Path, help="the run folder to create (default: results/runs/<dataset>/<UTC time>-<methods>)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue an interrupted run folder")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="leave out unreadable images (their ids are recorded in results.json)")
    p.add_argument("--deterministic", action="store_true", help="ask torch for deterministic algorithms")
    p.add_argument("--nproc", type=int, help="start this many processes on this machine through torchrun")
    p.set_defaults(handler=cmd_run)


def _resolve_run_config(args: argparse.Namespace) -> dict:
    from wsolbench.config import default_config_file, resolve

    sets = list(args.sets)
    for flag, key in (("methods", "run.methods"), ("protocols", "run.protocols"), ("seed", "run.seed"),
                      ("device", "run.device")):
        value = getattr(args, flag, None)
        if value is not None:
            if flag in ("methods", "protocols"):
                from wsolbench.methods.spec import split_specs

                items = split_specs(value)
                sets.append(f"{key}=[{', '.join(_toml_str(i) for i in items)}]")
            elif flag == "device":
                sets.append(f"{key}={_toml_str(value)}")
            else:
                sets.append(f"{key}={value}")
    if args.skip_bad_images:
        sets.append("run.skip_bad_images=true")
    if args.deterministic:
        sets.append("run.deterministic=true")
    cfg = resolve(args.config or default_config_file(), sets, dataset=args.dataset)
    if args.out is not None:
        cfg["run"]["run_dir"] = str(args.out)
    return cfg


def _toml_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def cmd_run(args: argparse.Namespace) -> int:

    if args.nproc and args.nproc > 1 and "WORLD_SIZE" not in os.environ:
        return _exec_torchrun(args.nproc)
    from wsolbench.runner import RunState, Runner

    if args.resume is not None:
        _check_resume_flags(args)
    if args.resume is not None and not (args.resume / "config.json").is_file() \
            and any(args.resume.glob("seed-*/config.json")):
        return _run_seeds(args)
    if args.resume is not None:
        cfg_path = args.resume / "config.json"
        if not cfg_path.is_file():
            raise UserError(f"{args.resume} is not a run folder (no config.json); give the folder "
                            "printed by the interrupted run")
        cfg = _load_saved_config(cfg_path)
        _resume_overrides(cfg, args)
    else:
        cfg = _resolve_run_config(args)
    if args.seeds or (args.resume is not None and not (args.resume / "config.json").exists()):
        return _run_seeds(args)
    state = RunState()
    try:
        run_dir = Runner(cfg, state, resume=args.resume).run()
    except KeyboardInterrupt:
        if state.run_dir is not None:
            print(f"\ninterrupted during '{state.stage}'; everything finished so far is kept in "
                  f"{state.run_dir}\nresume with: wsolbench run --resume {state.run_dir}", file=sys.stderr)
        else:
            print("\ninterrupted before the run folder was created; nothing to resume", file=sys.stderr)
        return 130
    except UserError as exc:
        if state.run_dir is not None and getattr(exc, "diverged", False):
            exc.args = (f"{exc.args[0]} [run folder: {state.run_dir}; what finished is kept there]",)
        elif state.run_dir is not None:
            exc.args = (f"{exc.args[0]} [run folder: {state.run_dir}; after fixing, resume with "
                        f"--resume {state.run_dir}]",)
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"run folder: {run_dir}")
        table = run_dir / "table.md"
        if table.exists():
            print(table.read_text())
    return 0


# Flags that would change what a run computes: --resume keeps the saved configuration.
_RESUME_FIXED = (("dataset", "--dataset"), ("methods", "--methods"), ("protocols", "--protocols"),
                 ("config", "--config"), ("seed", "--seed"), ("seeds", "--seeds"), ("out", "--out"))


def _check_resume_flags(args: argparse.Namespace) -> None:
    given = [flag for attr, flag in _RESUME_FIXED if getattr(args, attr, None) is not None]
    if args.sets:
        given.append("--set")
    if given:
        raise UserError(f"--resume continues {args.resume} with its saved configuration "
                        f"({args.resume / 'config.json'}); {', '.join(given)} cannot change it: "
                        "drop them, or start a new run (only --device, --skip-bad-images and "
                        "--deterministic may be added to --resume)")


def _load_saved_config(path: Path) -> dict:
    import json

    try:
        cfg = json.loads(path.read_text())
        cfg["run"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} cannot be read as a run configuration ({type(exc).__name__}: "
                        f"{str(exc)[:80]}); this run folder cannot be resumed: start a new run") from None
    return cfg


def _resume_overrides(cfg: dict, args: argparse.Namespace) -> None:
    """What may change when resuming: where it runs, skipping bad images, determinism."""
    if args.device:
        cfg["run"]["device"] = args.device
    if args.skip_bad_images:
        cfg["run"]["skip_bad_images"] = True
    if args.deterministic:
        cfg["run"]["deterministic"] = True


def _run_seeds(args: argparse.Namespace) -> int:
    """One complete run per seed in ``<run>/seed-N/``; the top folder gets the mean ± std table."""
    import copy

    from wsolbench.report.tables import find_results, render_run
    from wsolbench.runner import RunState, Runner, new_run_dir

    if args.resume is not None:
        parent = args.resume
        plan = [(_load_saved_config(d / "config.json"), d) for d in sorted(parent.glob("seed-*"))
                if (d / "config.json").is_file()]
        for c, _ in plan:
            _resume_overrides(c, args)
        if not plan:
            raise UserError(f"{parent} is not a run folder (no config.json, no seed-*/ folders)")
        done = {d for _, d in plan}
        cfg0 = plan[0][0]
        for seed in cfg0["run"].get("seeds", []):
            d = parent / f"seed-{seed}"
            if d not in done:
                c = copy.deepcopy(cfg0)
                c["run"]["seed"], c["run"]["run_dir"] = seed, str(d)
                plan.append((c, d))
        plan = [(c, d, (d / "config.json").is_file()) for c, d in plan]
    else:
        try:
            seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        except ValueError:
            raise UserError(f"--seeds '{args.seeds}' must be comma-separated integers, e.g. 0,1,2") from None
        if len(set(seeds)) != len(seeds) or not seeds:
            raise UserError(f"--seeds '{args.seeds}' must name distinct seeds")
        cfg = _resolve_run_config(args)
        cfg["run"]["seeds"] = seeds
        parent = Path(cfg["run"].pop("run_dir", "") or new_run_dir(cfg, [f"{len(seeds)}seeds"]))
        if "WORLD_SIZE" in os.environ:  # torchrun: every rank uses rank 0's folder (time stamps differ)
            from wsolbench.runner import pick_device
            from wsolbench.train import distributed as D

            parent = D.broadcast_object(parent, D.init_from_env(pick_device(cfg["run"]["device"]).type))
        if parent.exists() and any(parent.iterdir()):
            raise UserError(f"run folder {parent} already exists and is not empty; choose another --out "
                            f"or continue it with --resume {parent}")
        plan = []
        for seed in seeds:
            c = copy.deepcopy(cfg)
            c["run"]["seed"], c["run"]["run_dir"] = seed, str(parent / f"seed-{seed}")
            plan.append((c, parent / f"seed-{seed}", False))
    for cfg_s, d, exists in plan:
        state = RunState()
        try:
            Runner(cfg_s, state, resume=d if exists else None).run()
        except KeyboardInterrupt:
            print(f"\ninterrupted during seed folder {d}; resume all seeds with: "
                  f"wsolbench run --resume {parent}", file=sys.stderr)
            return 130
    if int(os.environ.get("RANK", "0")) == 0:  # files are written by rank 0 only
        runs = find_results([parent])
        (parent / "table.md").write_text(f"# wsolbench results over seeds ({parent.name})\n\n" + render_run(runs, "md"))
        (parent / "table.csv").write_text(render_run(runs, "csv"))
        print(f"run folder: {parent}")
        print((parent / "table.md").read_text())
    return 0


def _exec_torchrun(nproc: int) -> int:
    argv = sys.argv[1:]
    cleaned, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--nproc":
            skip = True
            continue
        if a.startswith("--nproc="):
            continue
        cleaned.append(a)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "wsolbench", *cleaned]
    os.execv(sys.executable, cmd)
    return 0  # pragma: no cover


def _add_table(sub) -> None:
    p = sub.add_parser("table", help="render tables from run folders (results.json only)")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--format", choices=("md", "csv"), default="md")
    p.add_argument("--paper-table", type=int, metavar="N", help="the layout of the paper's Table N (1-6)")
    p.set_defaults(handler=cmd_table)


def cmd_table(args: argparse.Namespace) -> int:
    from wsolbench.report.tables import find_results, render_paper_table, render_run

    runs = find_results(args.runs)
    if args.paper_table is not None:
        print(render_paper_table(args.paper_table, runs, args.format))
    else:
        print(render_run(runs, args.format))
    return 0


def _add_list(sub) -> None:
    p = sub.add_parser("methods", help="list registered methods")
    p.set_defaults(handler=cmd_methods)
    p = sub.add_parser("datasets", help="list registered datasets")
    p.set_defaults(handler=cmd_datasets)


def cmd_methods(args: argparse.Namespace) -> int:
    from wsolbench.methods import METHODS

    for name in METHODS.names():
        origin = METHODS.origin(name)
        try:
            cls = METHODS.get(name)
            desc = cls.description
        except UserError as exc:
            desc = f"(unavailable: {exc})"
        print(f"{name:12s} {desc}  [{origin}]")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from wsolbench.data.catalog import DATASETS, dataset_info

    for name in DATASETS.names():
        try:
            info = dataset_info(name)
            text = getattr(info, "display_name", name)
            tables = getattr(info, "paper_tables", None)
            extra = f"  (paper tables {', '.join(map(str, tables))})" if tables else ""
        except (KeyError, UserError):
            text, extra = name, ""
        print(f"{name:14s} {text}{extra}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wsolbench", description="Benchmark for weakly-supervised object localization.")
    parser.add_argument("--version", action="version", version=f"wsolbench {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_run(sub)
    from wsolbench.evaluation import cli as eval_cli

    from wsolbench.data import cli as data_cli
    from wsolbench.data import synthetic

    _add_table(sub)
    _add_list(sub)
    modules = [eval_cli, synthetic, data_cli]
    try:
        from wsolbench.report import report as report_mod

        modules.append(report_mod)
    except ImportError:
        pass
    for module in modules:
        # Sub-command modules expose add_parser(subparsers) and run(args) -> int.
        before = set(sub.choices)
        module.add_parser(sub)
        for name in set(sub.choices) - before:
            if sub.choices[name].get_default("handler") is None:
                sub.choices[name].set_defaults(handler=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                            format="[wsolbench] %(message)s", stream=sys.stderr)
        if int(os.environ.get("RANK", "0")) != 0:
            logging.getLogger("wsolbench").setLevel(logging.WARNING)
        if args.command is None:
            parser.print_help()
            return 2
        handler: Handler = args.handler
        return int(handler(args) or 0)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:
        # Output piped into a reader that stopped early (e.g. `| head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:  # a write the environment refused (disk full, permissions) past the checks
        from wsolbench.train.checkpoint import DISK_ERRNOS, disk_error

        if debug or exc.errno not in DISK_ERRNOS or not exc.filename:
            raise
        print(f"error: {disk_error(Path(exc.filename), exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
