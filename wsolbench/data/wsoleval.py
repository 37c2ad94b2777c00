"""Read and write the wsolevaluation metadata folder (Choe et al., CVPR 2020).

A metadata folder describes one split with up to four text files, one record per line,
fields separated by commas (paths must not contain commas):

``image_ids.txt`` (required)
    ``<path>``: the image's path relative to the image root; this is the image id.
``class_labels.txt`` (required)
    ``<path>,<label>``: the 0-based class label of every listed image.
``image_sizes.txt`` (optional; needed to map boxes)
    ``<path>,<width>,<height>`` of the original image.
``localization.txt`` (optional)
    Boxes: ``<path>,<x0>,<y0>,<x1>,<y1>``, one line per box (several lines per image allowed),
    in original image pixels. Or masks: ``<path>,<mask_path>,<ignore_path>``, one line per
    mask file (several per image allowed; their foregrounds are united); the ignore mask is
    named on the image's first line only (it may be empty) and later lines leave it empty.
    Mask paths are relative to the mask root.

Blank lines are skipped. Any missing required file or malformed line raises
:class:`~wsolbench.errors.UserError` naming the file, the line number and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from wsolbench.data.sample import Sample
from wsolbench.errors import UserError

IMAGE_IDS = "image_ids.txt"
CLASS_LABELS = "class_labels.txt"
IMAGE_SIZES = "image_sizes.txt"
LOCALIZATION = "localization.txt"


def _lines(path: Path, required: bool) -> list[tuple[int, str]] | None:
    """Non-blank lines of ``path`` as (line number, text); None if optional and absent."""
    if not path.is_file():
        if required:
            raise UserError(f"{path}: metadata file is missing (a wsolevaluation metadata folder "
                            f"needs {IMAGE_IDS} and {CLASS_LABELS})")
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not a UTF-8 text file ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            out.append((n, line))
    return out


def _bad(path: Path, n: int, expected: str, line: str) -> UserError:
    shown = line if len(line) <= 120 else line[:117] + "..."
    return UserError(f"{path}:{n}: expected {expected}, got '{shown}'")


def _known(path: Path, n: int, image_id: str, ids: dict[str, int]) -> None:
    if image_id not in ids:
        raise UserError(f"{path}:{n}: image '{image_id}' is not listed in {IMAGE_IDS}")


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        return None
    return v if v == v and abs(v) != float("inf") else None


def read_metadata(meta_dir, image_root=None, mask_root=None) -> list[Sample]:
    """Parse a metadata folder into :class:`~wsolbench.data.sample.Sample` objects.

    ``Sample.id`` is the relative image path, ``path`` is ``image_root / id`` (``id`` itself
    without a root), boxes are float tuples in original pixels, mask paths are joined to
    ``mask_root`` (kept relative without one), ``size`` is ``(width, height)`` when
    ``image_sizes.txt`` gives it, ``mask_rule`` is ``"binary"``. Order follows
    ``image_ids.txt``.
    """
    meta = Path(meta_dir)
    if not meta.is_dir():
        raise UserError(f"{meta}: metadata folder does not exist")
    ids_file = meta / IMAGE_IDS
    ids: dict[str, int] = {}
    for n, line in _lines(ids_file, required=True):
        if "," in line:
            raise _bad(ids_file, n, "one image path per line (without commas)", line)
        if line in ids:
            raise UserError(f"{ids_file}:{n}: image '{line}' is listed twice (first on line {ids[line]})")
        ids[line] = n

    labels_file = meta / CLASS_LABELS
    labels: dict[str, int] = {}
    for n, line in _lines(labels_file, required=True):
        parts = line.split(",")
        label = _int(parts[1].strip()) if len(parts) == 2 else None
        if label is None or label < 0:
            raise _bad(labels_file, n, "'<image path>,<class label>' with an integer label >= 0", line)
        image_id = parts[0]
        _known(labels_file, n, image_id, ids)
        if image_id in labels:
            raise UserError(f"{labels_file}:{n}: image '{image_id}' has a second label line")
        labels[image_id] = label
    for image_id, n in ids.items():
        if image_id not in labels:
            raise UserError(f"{labels_file}: no label line for image '{image_id}' "
                            f"({IMAGE_IDS} line {n})")

    sizes: dict[str, tuple[int, int]] = {}
    sizes_file = meta / IMAGE_SIZES
    for n, line in _lines(sizes_file, required=False) or []:
        parts = line.split(",")
        wh = [_int(p.strip()) for p in parts[1:]] if len(parts) == 3 else [None]
        if None in wh or min(wh) <= 0:
            raise _bad(sizes_file, n, "'<image path>,<width>,<height>' with positive integers", line)
        _known(sizes_file, n, parts[0], ids)
        if parts[0] in sizes:
            raise UserError(f"{sizes_file}:{n}: image '{parts[0]}' has a second size line")
        sizes[parts[0]] = (wh[0], wh[1])

    boxes: dict[str, list[tuple[float, float, float, float]]] = {}
    masks: dict[str, list[str]] = {}
    ignores: dict[str, str] = {}
    loc_file = meta / LOCALIZATION
    for n, line in _lines(loc_file, required=False) or []:
        parts = line.split(",")
        if len(parts) == 5:
            xy = [_float(p.strip()) for p in parts[1:]]
            if None in xy:
                raise _bad(loc_file, n, "'<image path>,<x0>,<y0>,<x1>,<y1>' with numbers", line)
            x0, y0, x1, y1 = xy
            if x1 < x0 or y1 < y0:
                raise _bad(loc_file, n, "a box with x0 <= x1 and y0 <= y1", line)
            _known(loc_file, n, parts[0], ids)
            boxes.setdefault(parts[0], []).append((x0, y0, x1, y1))
        elif len(parts) == 3:
            image_id, mask_path, ignore_path = (p.strip() for p in parts)
            if not mask_path:
                raise _bad(loc_file, n, "'<image path>,<mask path>,<ignore path or nothing>'", line)
            _known(loc_file, n, image_id, ids)
            if image_id in masks:
                if ignore_path:
                    raise _bad(loc_file, n, f"an empty ignore path (image '{image_id}' already had "
                               "its first mask line; the ignore mask goes on that line only)", line)
                masks[image_id].append(mask_path)
            else:
                masks[image_id] = [mask_path]
                ignores[image_id] = ignore_path
        else:
            raise _bad(loc_file, n, "'<image path>,<x0>,<y0>,<x1>,<y1>' (a box) or "
                       "'<image path>,<mask path>,<ignore path>' (a mask)", line)

    img_root = Path(image_root) if image_root is not None else None
    msk_root = Path(mask_root) if mask_root is not None else None

    def under(root: Path | None, rel: str) -> Path:
        return root / rel if root is not None else Path(rel)

    samples = []
    for image_id in ids:
        ign = ignores.get(image_id, "")
        samples.append(Sample(
            id=image_id,
            path=under(img_root, image_id),
            label=labels[image_id],
            boxes=tuple(boxes.get(image_id, ())),
            mask_paths=tuple(under(msk_root, p) for p in masks.get(image_id, ())),
            ignore_path=under(msk_root, ign) if ign else None,
            mask_rule="binary",
            size=sizes.get(image_id),
        ))
    return samples


def _num(v: float) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def _rel(p: Path, root: Path | None) -> str:
    p = Path(p)
    if root is not None:
        try:
            return p.relative_to(root).as_posix()
        except ValueError:
            pass
    return p.as_posix()


def write_metadata(meta_dir, samples: Iterable[Sample], mask_root=None) -> None:
    """Write ``samples`` as a metadata folder (the inverse of :func:`read_metadata`).

    ``image_sizes.txt`` is written when every sample has a size, ``localization.txt`` when
    some sample has boxes or masks. Mask paths are written relative to ``mask_root`` when
    they lie under it.
    """
    samples = list(samples)
    meta = Path(meta_dir)
    root = Path(mask_root) if mask_root is not None else None
    for s in samples:
        if not s.id or "," in s.id or "\n" in s.id or s.id != s.id.strip():
            raise UserError(f"image id {s.id!r} cannot be written to {IMAGE_IDS} "
                            "(empty, or contains a comma, a newline or surrounding spaces)")
    meta.mkdir(parents=True, exist_ok=True)
    (meta / IMAGE_IDS).write_text("".join(f"{s.id}\n" for s in samples), encoding="utf-8")
    (meta / CLASS_LABELS).write_text("".join(f"{s.id},{int(s.label)}\n" for s in samples),
                                     encoding="utf-8")
    if samples and all(s.size is not None for s in samples):
        (meta / IMAGE_SIZES).write_text(
            "".join(f"{s.id},{int(s.size[0])},{int(s.size[1])}\n" for s in samples), encoding="utf-8")
    loc = []
    for s in samples:
        for b in s.boxes:
            loc.append(f"{s.id},{','.join(_num(v) for v in b)}\n")
        for k, mp in enumerate(s.mask_paths):
            ign = _rel(s.ignore_path, root) if (k == 0 and s.ignore_path is not None) else ""
            loc.append(f"{s.id},{_rel(mp, root)},{ign}\n")
    if loc:
        (meta / LOCALIZATION).write_text("".join(loc), encoding="utf-8")
