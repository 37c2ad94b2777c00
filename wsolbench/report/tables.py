"""Tables in the layout of the paper's Tables 1-6, rendered from results.json only.

Published numbers (``wsolbench/report/paper/*.csv``, linked as ``results/paper``) are always
labelled ``published`` with their source table; measured rows are labelled with the run
folder and the split. Several runs
of the same setting (e.g. seeds) are shown as mean +- sample std with the number of runs.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from tabulate import tabulate

from wsolbench.errors import UserError

DISPLAY = {"ours1": "Ours (method I)", "ours2": "Ours (method II)", "cam": "CAM"}


@dataclass(frozen=True)
class PaperTable:
    number: int
    datasets: tuple[str, ...]
    csv: str
    columns: tuple[str, ...]
    title: str


PAPER_TABLES = {
    1: PaperTable(1, ("cub",), "table1_cub.csv", ("gt_known_loc", "top1_loc", "top1_cls"),
                  "Table 1. Results on the CUB benchmark"),
    2: PaperTable(2, ("cars",), "table2_cars.csv", ("gt_known_loc", "top1_loc", "top1_cls"),
                  "Table 2. Results for the Stanford cars benchmark"),
    3: PaperTable(3, ("tinyimagenet",), "table3_tinyimagenet.csv", ("gt_known_loc", "top1_loc"),
                  "Table 3. Results for Tiny-ImageNet"),
    4: PaperTable(4, ("cub",), "table4_cub_pxap.csv", ("pxap",), "Table 4. CUB segmentation (PxAP)"),
    5: PaperTable(5, ("flowers",), "table5_flowers_pxap.csv", ("pxap",),
                  "Table 5. Oxford Flowers segmentation (PxAP)"),
    6: PaperTable(6, ("cub",), "table6_ablation_ours2_cub.csv", ("gt_known_loc",),
                  "Table 6. Ablation of method II (R, L_outer, L_inner)"),
}

HEADERS = {"gt_known_loc": "GT-known loc[%]", "top1_loc": "Top-1 loc[%]", "top1_cls": "Top-1 cls[%]",
           "pxap": "PxAP", "max_box_acc": "MaxBoxAcc", "max_box_acc_v2": "MaxBoxAccV2",
           "iou30": "IoU30", "iou50": "IoU50", "iou70": "IoU70", "selected_epoch": "sel. epoch"}

PAPER_COLS = ("gt_known_loc", "top1_loc", "top1_cls", "pxap")
WSOLEVAL_COLS = ("max_box_acc", "max_box_acc_v2", "iou30", "iou50", "iou70", "top1_loc", "pxap")


def paper_dir() -> Path:
    """The paper's published numbers, shipped with the package (``results/paper`` links here)."""
    return Path(__file__).resolve().parent / "paper"


def find_results(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """results.json files named directly or found under the given folders."""
    out = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            files = [p]
        elif p.is_dir():
            files = sorted(p.rglob("results.json"))
        else:
            raise UserError(f"{p} does not exist; give run folders or results.json files")
        if not files:
            raise UserError(f"no results.json under {p}; is it a run folder of 'wsolbench run'?")
        for f in files:
            try:
                out.append((f.parent, json.loads(f.read_text())))
            except json.JSONDecodeError as exc:
                raise UserError(f"{f} is not valid JSON ({exc}); it may be from an interrupted write") from None
    return out


def method_metrics(entry: dict[str, Any], protocol: str) -> dict[str, float | None]:
    prot = entry.get("protocols", {}).get(protocol)
    if not prot:
        return {}
    m = prot["metrics"]
    by_iou = m.get("box_acc_by_iou") or {}
    sel = entry.get("selection") or {}
    return {"gt_known_loc": m.get("gt_known_loc"), "top1_loc": m.get("top1_loc"),
            "top1_cls": m.get("top1_cls"), "pxap": m.get("pxap"), "max_box_acc": m.get("max_box_acc"),
            "max_box_acc_v2": m.get("max_box_acc_v2"), "iou30": by_iou.get("30"),
            "iou50": by_iou.get("50"), "iou70": by_iou.get("70"),
            "selected_epoch": sel.get("selected_epoch")}


def _agg(values: list[float | None]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return mean, std, len(vals)


def _fmt(mean: float | None, std: float | None, n: int, digits: int = 2) -> str:
    if mean is None:
        return "-"
    s = f"{mean:.{digits}f}"
    if n > 1:
        s += f" ± {std:.{digits}f}"
    return s


def measured_rows(runs: list[tuple[Path, dict[str, Any]]], protocol: str, columns: tuple[str, ...],
                  datasets: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """One row per setting (dataset, method label, method options), aggregated over the runs
    that have it (e.g. seeds). Runs of the same label with other options get their own row,
    labelled with the options that differ."""
    groups: "OrderedDict[tuple[str, str, str], list[tuple[Path, dict]]]" = OrderedDict()
    for run_dir, res in runs:
        if datasets and res.get("dataset") not in datasets:
            continue
        for label, entry in res.get("methods", {}).items():
            if entry.get("complete") and protocol in entry.get("protocols", {}):
                opts = json.dumps(entry.get("options", {}), sort_keys=True, default=str)
                groups.setdefault((res.get("dataset"), label, opts), []).append((run_dir, entry))
    variants: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for dataset, label, opts in groups:
        variants.setdefault((dataset, label), []).append(json.loads(opts))
    rows = []
    for (dataset, label, opts), items in groups.items():
        options = json.loads(opts)
        others = variants[(dataset, label)]
        differing = sorted(k for k in options if any(o.get(k) != options[k] for o in others))
        suffix = "{" + ", ".join(f"{k}={options[k]}" for k in differing) + "}" if differing else ""
        metrics = [method_metrics(e, protocol) for _, e in items]
        row: dict[str, Any] = {"source": "measured", "dataset": dataset, "label": label, "suffix": suffix,
                               "method": items[0][1].get("method"), "split": "test", "runs": len(items),
                               "run_dirs": [str(d) for d, _ in items], "entry": items[0][1]}
        for c in columns:
            row[c] = _agg([m.get(c) for m in metrics])
        rows.append(row)
    return rows


def _display(label: str, method: str | None, suffix: str = "") -> str:
    base = DISPLAY.get(method or label, label)
    name = base if label == (method or label) else f"{base} {label[len(method or ''):]}"
    return f"{name} {suffix}" if suffix else name


def _run_label(row: dict[str, Any]) -> str:
    dirs = row["run_dirs"]
    name = Path(dirs[0]).name if len(dirs) == 1 else f"{len(dirs)} runs"
    return f"measured ({name}, {row['split']} split)"


def render_run(runs: list[tuple[Path, dict[str, Any]]], fmt: str = "md") -> str:
    """The measured tables of one or more runs: paper protocol, then wsoleval protocol."""
    parts = []
    protocols = []
    for _, res in runs:
        for p in res.get("protocols", []):
            if p not in protocols:
                protocols.append(p)
    for protocol in protocols:
        cols = PAPER_COLS if protocol == "paper" else WSOLEVAL_COLS
        rows = measured_rows(runs, protocol, cols + ("selected_epoch",))
        if not rows:
            continue
        header = ["Method", *[HEADERS[c] for c in cols], "runs", "sel. epoch", "Numbers"]
        table = []
        for r in rows:
            n = r["runs"]
            sel = r["selected_epoch"][0]
            table.append([_display(r["label"], r["method"], r["suffix"]),
                          *[_fmt(*r[c]) for c in cols], n,
                          "-" if sel is None else (f"{sel:.0f}" if n == 1 else f"{sel:.1f} (mean)"),
                          _run_label(r)])
        if fmt == "csv":
            parts.append(_csv([["protocol", *header]] + [[protocol, *row] for row in table]))
        else:
            datasets = sorted({r["dataset"] for r in rows})
            title = (f"### {', '.join(datasets)}: {protocol} protocol "
                     f"({'tau = max/10, largest contour, IoU >= 0.5' if protocol == 'paper' else 'threshold sweep, Choe et al. 2020'})")
            parts.append(title + "\n\n" + tabulate(table, header, tablefmt="github", disable_numparse=True) + "\n")
    if fmt == "md":
        note = ("All numbers are measured on the test split, in percent; checkpoints and thresholds "
                "were selected on train/validation data only. mean ± std over runs where runs > 1.")
        parts.append(note + "\n")
    return "\n".join(parts) if fmt == "md" else "".join(parts)


def render_paper_table(number: int, runs: list[tuple[Path, dict[str, Any]]], fmt: str = "md") -> str:
    """Table ``number`` of the paper: published rows next to measured rows."""
    if number not in PAPER_TABLES:
        raise UserError(f"the paper has tables 1-6, not {number}")
    spec = PAPER_TABLES[number]
    with open(paper_dir() / spec.csv, newline="") as fh:
        published = list(csv.DictReader(fh))
    table: list[list[Any]] = []
    if number == 6:
        header = ["R(g(I))", "L_outer", "L_inner", HEADERS["gt_known_loc"], "runs", "Numbers"]
        for row in published:
            table.append([_tick(row["reg"]), _tick(row["outer"]), _tick(row["inner"]),
                          row["gt_known_loc"], "", row["source"]])
        for r in measured_rows(runs, "paper", ("gt_known_loc",), spec.datasets + ("synthetic",)):
            if r["method"] != "ours2":
                continue
            o = r["entry"].get("options", {})
            table.append([_tick(o.get("reg", True)), _tick(o.get("outer", True)), _tick(o.get("inner", True)),
                          _fmt(*r["gt_known_loc"]), r["runs"], f"{_run_label(r)} on {r['dataset']}"])
    else:
        header = ["Method", *[HEADERS[c] for c in spec.columns], "runs", "Numbers"]
        for row in published:
            table.append([row["method"], *[row.get(c) or "-" for c in spec.columns], "", row["source"]])
        datasets = spec.datasets
        rows = measured_rows(runs, "paper", spec.columns, None)
        for r in rows:
            where = "" if r["dataset"] in datasets else f" on {r['dataset']} (not the table's dataset)"
            table.append([_display(r["label"], r["method"], r["suffix"]), *[_fmt(*r[c]) for c in spec.columns],
                          r["runs"], _run_label(r) + where])
    if fmt == "csv":
        return _csv([header] + table)
    return f"### {spec.title}\n\n" + tabulate(table, header, tablefmt="github", disable_numparse=True) + "\n"


def _tick(v: Any) -> str:
    return "✓" if str(v).lower() in ("true", "1") or v is True else "-"


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def paper_tables_for(dataset: str) -> list[int]:
    return [n for n, t in PAPER_TABLES.items() if dataset in t.datasets]


def write_run_tables(run_dir: Path) -> None:
    """table.md and table.csv of a run folder, from its results.json."""
    runs = find_results([Path(run_dir) / "results.json"])
    md = [f"# wsolbench results: {runs[0][1].get('dataset')} ({Path(run_dir).name})\n", render_run(runs, "md")]
    for n in paper_tables_for(runs[0][1].get("dataset", "")):
        md.append(render_paper_table(n, runs, "md"))
    (Path(run_dir) / "table.md").write_text("\n".join(md))
    (Path(run_dir) / "table.csv").write_text(render_run(runs, "csv"))
