"""``wsolbench report RUN_DIR``: a readable report.md of one run folder.

Everything in the report is rendered from the run folder's own files (results.json,
config.json, meta.json, figures/): the measured tables (the same renderer as table.md),
the paper's published tables for the dataset next to the measured rows, the model
selection of every method (epoch, criterion, split), the configuration, timings,
skipped images and the figures (relative links, so the folder can be moved or shared).
The command redraws the figures that results.json alone allows first.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from wsolbench.errors import UserError

FIGURE_ORDER = ("boxes.png", "maps_vs_masks.png", "s_curve.png", "threshold_curves.png", "epochs_maps.png")
RUN_ONLY_FIGURES = ("boxes.png", "maps_vs_masks.png")
RUN_ONLY_REASON = "drawn only by `wsolbench run` (needs the fitted methods and the test images)"
CONFIG_SECTIONS = ("dataset", "data", "model", "classifier", "evaluation")
MAX_SKIPPED_LISTED = 50


# --------------------------------------------------------------------------- helpers
def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        text = "true" if v else "false"  # as in benchmark.toml and config.json
    elif isinstance(v, float):
        text = f"{v:.4g}"
    elif isinstance(v, (dict, list)):
        text = json.dumps(v, sort_keys=True)
    else:
        text = str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _flatten(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


# --------------------------------------------------------------------------- sections
def _run_section(run_dir: Path, results: dict[str, Any], cfg: dict[str, Any], meta: dict[str, Any]) -> str:
    run = cfg.get("run") or {}
    splits = results.get("splits_used") or results.get("splits") or {}
    clf = results.get("classifier") or {}
    model = cfg.get("model") or {}
    rows: list[list[Any]] = [
        ["dataset", results.get("dataset")],
        ["images used (train / val / test)",
         " / ".join(str(splits.get(k, "-")) for k in ("train", "val", "test"))],
        ["validation split", results.get("val_source")],
        ["protocols", ", ".join(results.get("protocols") or run.get("protocols") or [])],
        ["methods", ", ".join((results.get("methods") or {}).keys())],
        ["seed", results.get("seed", run.get("seed"))],
        ["backbone (f and g)", f"{model.get('backbone', clf.get('backbone', '-'))}, "
                               f"pretrained={model.get('pretrained', '-')}"],
        ["device", meta.get("device")],
        ["started / finished (UTC)", f"{meta.get('started_utc', '-')} / {meta.get('finished_utc', '-')}"],
        ["git", meta.get("git")],
        ["versions", ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items()) or None],
        ["command", " ".join(meta.get("argv") or []) or None],
    ]
    if clf.get("reused_from_cache"):
        rows.append(["classifier f", f"reused from the model cache ({clf['reused_from_cache']})"])
    return "## Run\n\n" + _table(["", "value"], rows)


def _tables_section(run_dir: Path, results: dict[str, Any]) -> str:
    from wsolbench.report.tables import find_results, paper_tables_for, render_paper_table, render_run

    runs = find_results([run_dir / "results.json"])
    parts = ["## Results\n",
             "Rendered from results.json (the same tables as [table.md](table.md) and "
             "[table.csv](table.csv)).\n",
             render_run(runs, "md")]
    numbers = paper_tables_for(results.get("dataset") or "")
    if numbers:
        parts.append("### Next to the paper's published numbers\n")
        for n in numbers:
            try:
                parts.append(render_paper_table(n, runs, "md"))
            except UserError as exc:
                parts.append(f"(Table {n} not rendered: {exc})\n")
    return "\n".join(parts)


def _selection_section(results: dict[str, Any]) -> str:
    rows: list[list[Any]] = []
    clf = (results.get("classifier") or {}).get("selection")
    if clf:
        rows.append(["classifier f (shared)", clf.get("criterion"), clf.get("split"), clf.get("selected_epoch"),
                     len(clf.get("history") or []) or None,
                     f"val top-1 acc {clf['val_acc']:.2f}%" if isinstance(clf.get("val_acc"), (int, float)) else ""])
    for label, entry in (results.get("methods") or {}).items():
        sel = entry.get("selection")
        if not sel:
            rows.append([label, "nothing to select (no training, or the method keeps its final state)",
                         "-", None, None, ""])
            continue
        s = sel.get("S_per_epoch") or []
        chosen = sel.get("selected_epoch")
        note = sel.get("note") or ""
        if s and isinstance(chosen, int) and 1 <= chosen <= len(s) and s[chosen - 1] is not None:
            note = (f"mean S {float(s[chosen - 1]):.4f}; " + note).strip("; ")
        rows.append([label, sel.get("criterion"), sel.get("split"), chosen, sel.get("epochs_run"), note])
    if not rows:
        return "## Model selection\n\nNo selection was recorded.\n"
    return ("## Model selection\n\nEvery choice below used train/validation data only (never test "
            "labels). Validation GT-known loc, where logged, is a diagnostic and selects nothing.\n\n"
            + _table(["method", "criterion", "split", "selected epoch", "epochs run", "note"], rows))


def _figures_section(run_dir: Path, status: dict[str, str]) -> str:
    from wsolbench.report.figures import CAPTIONS, FIG_DIR

    fig_dir = run_dir / FIG_DIR
    names = list(FIGURE_ORDER) + sorted(p.name for p in fig_dir.glob("*.png")
                                        if p.name not in FIGURE_ORDER and not p.name.endswith(".tmp.png"))
    parts, missing = ["## Figures\n"], []
    for name in names:
        if (fig_dir / name).is_file():
            caption = CAPTIONS.get(name, name)
            parts.append(f"**{name}**: {caption}\n\n![{name}]({FIG_DIR}/{name})\n")
        elif name in FIGURE_ORDER:
            default = (RUN_ONLY_REASON if name in RUN_ONLY_FIGURES
                       else f"not drawn yet: run `wsolbench report {run_dir}`")
            missing.append([name, status.get(name, default)])
    if missing:
        parts.append("Not drawn:\n\n" + _table(["figure", "why"], missing))
    return "\n".join(parts)


def _config_section(cfg: dict[str, Any], results: dict[str, Any]) -> str:
    if not cfg:
        return "## Configuration\n\nconfig.json is missing.\n"
    rows = []
    for section in CONFIG_SECTIONS:
        if isinstance(cfg.get(section), dict):
            rows += [[k, v] for k, v in _flatten(cfg[section], section + ".")]
    parts = ["## Configuration\n",
             "The resolved configuration is in [config.json](config.json); the main settings:\n",
             _table(["key", "value"], rows)]
    opts = [[label, e.get("method"), e.get("options") or {}] for label, e in (results.get("methods") or {}).items()]
    if opts:
        parts.append("Method options as run:\n\n" + _table(["method", "name", "options"], opts))
    return "\n".join(parts)


def _timings_section(results: dict[str, Any], meta: dict[str, Any]) -> str:
    timings = results.get("timings_s") or meta.get("durations_s") or {}
    if not timings:
        return "## Timings\n\nNo timings were recorded.\n"
    rows = [[stage, f"{float(sec):.1f}"] for stage, sec in timings.items()]
    rows.append(["**total**", f"{sum(float(v) for v in timings.values()):.1f}"])
    return "## Timings\n\n" + _table(["stage", "seconds"], rows)


def _skipped_section(results: dict[str, Any]) -> str:
    skipped = results.get("skipped_images") or []
    if not skipped:
        return "## Skipped images\n\nNone: every image of every split was read.\n"
    rows = [[s.get("split"), s.get("id"), s.get("reason")] for s in skipped[:MAX_SKIPPED_LISTED]]
    more = len(skipped) - len(rows)
    tail = f"\n... and {more} more (all in results.json, key skipped_images).\n" if more > 0 else ""
    return (f"## Skipped images\n\n{len(skipped)} unreadable image(s) were left out "
            "(`--skip-bad-images`); they count in no metric.\n\n"
            + _table(["split", "image id", "reason"], rows) + tail)


# --------------------------------------------------------------------------- entry points
def write_report(run_dir: Path, figure_status: dict[str, str] | None = None) -> Path:
    """Write ``run_dir/report.md`` from the folder's files; return its path."""
    run_dir = Path(run_dir)
    if not (run_dir / "results.json").is_file():
        raise UserError(f"{run_dir} has no results.json; give a run folder of 'wsolbench run'")
    from wsolbench.report.figures import load_results

    results = load_results(run_dir)
    cfg = _read_json(run_dir / "config.json")
    meta = _read_json(run_dir / "meta.json")
    status = {**(results.get("figures") or {}), **(figure_status or {})}
    title = f"# wsolbench report: {results.get('dataset', '?')} ({run_dir.name})\n"
    intro = ("Generated from this folder's results.json, config.json and meta.json by `wsolbench report`. "
             "Every number is measured in this run, except the rows labelled *published* in the "
             f"paper's tables. Regenerate with `wsolbench report {run_dir}`.\n")
    if not all((e or {}).get("complete") for e in (results.get("methods") or {}).values()) or \
            not results.get("methods"):
        intro += "\n**This run is incomplete**: some methods have no evaluation yet " \
                 f"(continue it with `wsolbench run --resume {run_dir}`).\n"
    sections = [title, intro, _run_section(run_dir, results, cfg, meta), _tables_section(run_dir, results),
                _selection_section(results), _figures_section(run_dir, status), _config_section(cfg, results),
                _timings_section(results, meta), _skipped_section(results)]
    path = run_dir / "report.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(sections))
    tmp.replace(path)
    return path


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="write RUN_DIR/report.md (tables, selection, figures) from the run folder",
        description="Redraw the figures that results.json allows (s_curve, threshold_curves, "
                    "epochs_maps) and write report.md: tables, model selection, figures, "
                    "configuration, timings and skipped images of one run folder.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder of 'wsolbench run'")
    p.add_argument("--no-figures", action="store_true", help="do not redraw figures; only write report.md")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.exists():
        raise UserError(f"run folder {run_dir} does not exist; give a folder printed by 'wsolbench run'")
    if not run_dir.is_dir() or not (run_dir / "results.json").is_file():
        raise UserError(f"{run_dir} is not a run folder (no results.json); give a folder printed by "
                        "'wsolbench run'")
    status: dict[str, str] = {}
    if not getattr(args, "no_figures", False):
        from wsolbench.report.figures import figures_from_results

        status = figures_from_results(run_dir)
    path = write_report(run_dir, status)
    print(f"report: {path}")
    return 0
