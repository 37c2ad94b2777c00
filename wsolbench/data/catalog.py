"""The dataset catalog: registered loaders, what each dataset is, and loader helpers.

``DATASETS`` maps a dataset name to its loader ``load(root, **options) -> DatasetSplits``
(lazy ``"module:attr"`` entries, so listing datasets imports nothing heavy).
:func:`dataset_info` returns a :class:`DatasetInfo` record: display name, the paper's
table numbers, expected split sizes, what annotations exist, the default folder name
and the download sources used by ``wsolbench data download``.

The second half holds what every native-format loader shares: resolving the root
folder, one-line errors that name the file (and line), a line-numbered text-table
reader, and :class:`Issues`, which lets ``wsolbench data check`` collect row-level
problems instead of stopping at the first one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from wsolbench.errors import UserError, suggest
from wsolbench.registry import Registry

DATASETS: Registry = Registry("dataset")
DATASETS.register("cub", "wsolbench.data.cub:load")
DATASETS.register("cars", "wsolbench.data.cars:load")
DATASETS.register("flowers", "wsolbench.data.flowers:load")
DATASETS.register("tinyimagenet", "wsolbench.data.tinyimagenet:load")
DATASETS.register("wsoleval", "wsolbench.data.catalog:load_wsoleval")
# The built-in synthetic dataset is written to disk in CUB-200-2011's layout.
DATASETS.register("synthetic", "wsolbench.data.cub:load")


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Source:
    """One official file of a dataset, as ``wsolbench data download`` fetches it.

    ``url`` is ``None`` when no working public address is known: the file must be
    placed in the root by hand (``note`` says where to find it); a mirror
    (``--mirror`` / ``WSOLBENCH_MIRROR``) still serves it as ``<mirror>/<filename>``.
    Checksums are the published/well-attested ones; ``None`` means unknown: the
    downloader then prints the digest it computed instead of verifying.
    """

    filename: str
    url: str | None
    md5: str | None = None
    sha256: str | None = None
    extract: bool = True  # an archive unpacked into the root; else the file stays as is
    produces: str = ""  # path (relative to root) present once this source is in place
    optional: bool = False  # the dataset loads without it (e.g. CUB segmentations)
    note: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    """What the harness, ``wsolbench datasets`` and the table renderer know of a dataset."""

    name: str
    display_name: str
    tables: dict[str, int]  # role -> paper table number, e.g. {"loc": 1, "pxap": 4}
    expected_counts: dict[str, int] | None  # split -> official image count (None: varies)
    num_classes: int | None
    has_boxes: bool
    has_masks: bool
    default_root: str  # conventional folder name of the extracted dataset
    expected_files: tuple[str, ...] = ()  # what the root must hold (shown in errors)
    sources: tuple[Source, ...] = ()
    homepage: str = ""
    notes: str = ""
    masks_required: bool = False  # a check fails (not just warns) without masks

    @property
    def paper_tables(self) -> tuple[int, ...]:
        return tuple(sorted(set(self.tables.values())))

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.expected_counts) if self.expected_counts else ("train", "test")


_CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1"
_CUB_SEG_URL = "https://data.caltech.edu/records/w9d68-gec53/files/segmentations.tgz?download=1"
_FLOWERS = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
_CARS_NOTE = (
    "the original ai.stanford.edu/~jkrause links are dead (HTTP 404 since 2023); copies "
    "circulate, e.g. the Kaggle data set 'jessicali9530/stanford-cars-dataset' (different "
    "layout) or attachments to pytorch/vision issue #7545"
)

_INFOS: dict[str, DatasetInfo] = {
    "cub": DatasetInfo(
        name="cub",
        display_name="CUB-200-2011",
        tables={"loc": 1, "pxap": 4, "ablation": 6},
        expected_counts={"train": 5994, "test": 5794},
        num_classes=200,
        has_boxes=True,
        has_masks=True,
        default_root="CUB_200_2011",
        expected_files=("images.txt", "image_class_labels.txt", "train_test_split.txt",
                        "bounding_boxes.txt", "classes.txt", "images/",
                        "../segmentations/ (optional, for PxAP)"),
        sources=(
            Source("CUB_200_2011.tgz", _CUB_URL, md5="97eceeb196236b17998738112f37df78",
                   produces="CUB_200_2011/images.txt"),
            Source("segmentations.tgz", _CUB_SEG_URL, md5="4d47ba1228eae64f2fa547c47bc65255",
                   produces="segmentations", optional=True,
                   note="ground-truth masks, needed for PxAP (Table 4) only"),
        ),
        homepage="https://www.vision.caltech.edu/datasets/cub_200_2011/",
        notes="boxes from bounding_boxes.txt (x, y, w, h -> x0=x, x1=x+w); masks are the "
              "soft segmentations binarized at >= 128 (a majority of annotators)",
    ),
    "cars": DatasetInfo(
        name="cars",
        display_name="Stanford Cars",
        tables={"loc": 2},
        expected_counts={"train": 8144, "test": 8041},
        num_classes=196,
        has_boxes=True,
        has_masks=False,
        default_root="stanford_cars",
        expected_files=("devkit/cars_train_annos.mat", "devkit/cars_meta.mat",
                        "cars_test_annos_withlabels.mat", "cars_train/", "cars_test/"),
        sources=(
            # The devkit's original address (ai.stanford.edu/~jkrause/cars/car_devkit.tgz)
            # is dead; this copy attached to pytorch/vision#7545 has the original's MD5.
            Source("car_devkit.tgz", "https://github.com/pytorch/vision/files/11644847/car_devkit.tgz",
                   md5="c3b158d763b6e2245038c8ad08e45376", produces="devkit/cars_meta.mat",
                   note="a copy of the original devkit, attached to pytorch/vision issue #7545"),
            Source("cars_train.tgz", None, md5="065e5b463ae28d29e77c1b4b166cfe61",
                   produces="cars_train", note=_CARS_NOTE),
            Source("cars_test.tgz", None, md5="4ce7ebf6a94d07f1952d94dd34c4d501",
                   produces="cars_test", note=_CARS_NOTE),
            Source("cars_test_annos_withlabels.mat", None,
                   md5="b0a2b23655a3edd16d84508592a98d10", extract=False,
                   produces="cars_test_annos_withlabels.mat", note=_CARS_NOTE),
        ),
        homepage="https://ai.stanford.edu/~jkrause/cars/car_dataset.html",
        notes="boxes are the devkit's bbox_x1..bbox_y2 as stored (MATLAB pixel indices); "
              "no masks",
    ),
    "flowers": DatasetInfo(
        name="flowers",
        display_name="Oxford Flowers 102",
        tables={"pxap": 5},
        expected_counts={"train": 1020, "val": 1020, "test": 6149},
        num_classes=102,
        has_boxes=False,
        has_masks=True,
        masks_required=True,
        default_root="flowers102",
        expected_files=("jpg/image_00001.jpg ...", "imagelabels.mat", "setid.mat",
                        "segmim/segmim_00001.jpg ..."),
        sources=(
            Source("102flowers.tgz", _FLOWERS + "102flowers.tgz",
                   md5="52808999861908f626f3c1f4e79d11fa", produces="jpg"),
            Source("imagelabels.mat", _FLOWERS + "imagelabels.mat",
                   md5="e0620be6f572b9609742df49c70aed4d", extract=False,
                   produces="imagelabels.mat"),
            Source("setid.mat", _FLOWERS + "setid.mat", md5="a5357ecc9cb78c4bef273ce3793fc85c",
                   extract=False, produces="setid.mat"),
            Source("102segmentations.tgz", _FLOWERS + "102segmentations.tgz", md5=None,
                   produces="segmim", note="ground-truth masks, needed for PxAP (Table 5)"),
        ),
        homepage="https://www.robots.ox.ac.uk/~vgg/data/flowers/102/",
        notes="splits from setid.mat (trnid/valid/tstid); masks from the blue-background "
              "segmim JPEGs; no boxes (the paper reports PxAP only)",
    ),
    "tinyimagenet": DatasetInfo(
        name="tinyimagenet",
        display_name="Tiny-ImageNet",
        tables={"loc": 3},
        expected_counts={"train": 100000, "test": 10000},
        num_classes=200,
        has_boxes=True,
        has_masks=False,
        default_root="tiny-imagenet-200",
        expected_files=("wnids.txt", "train/<wnid>/images/", "train/<wnid>/<wnid>_boxes.txt",
                        "val/images/", "val/val_annotations.txt"),
        sources=(
            Source("tiny-imagenet-200.zip", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
                   md5="90528d7ca1a48142e341f4ef8d21d0de", produces="tiny-imagenet-200/wnids.txt"),
        ),
        homepage="https://www.kaggle.com/c/tiny-imagenet",
        notes="the official val split serves as the test split (the official test split "
              "has no labels), as in the paper",
    ),
    "synthetic": DatasetInfo(
        name="synthetic",
        display_name="Synthetic (generated)",
        tables={},
        expected_counts=None,
        num_classes=None,
        has_boxes=True,
        has_masks=True,
        default_root="synthetic",
        expected_files=("images.txt", "image_class_labels.txt", "train_test_split.txt",
                        "bounding_boxes.txt", "images/"),
        notes="generated on the fly in CUB-200-2011's layout; no download",
    ),
    "wsoleval": DatasetInfo(
        name="wsoleval",
        display_name="wsolevaluation metadata",
        tables={},
        expected_counts=None,
        num_classes=None,
        has_boxes=True,
        has_masks=True,
        default_root="dataset",
        expected_files=("<metadata>/train/", "<metadata>/val/", "<metadata>/test/",
                        "image_ids.txt, class_labels.txt, image_sizes.txt, localization.txt"),
        homepage="https://github.com/clovaai/wsolevaluation",
        notes="any dataset described by Choe et al.'s metadata files (root = image root, "
              "metadata = folder with train/ val/ test/)",
    ),
}


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of ``name`` (a one-line error on a typo)."""
    if name not in _INFOS:
        raise UserError(f"unknown dataset '{name}'{suggest(name, _INFOS)}; "
                        f"known: {', '.join(sorted(_INFOS))}")
    return _INFOS[name]


def dataset_infos() -> list[DatasetInfo]:
    return [_INFOS[n] for n in sorted(_INFOS)]


# --------------------------------------------------------------------------- wsoleval


def load_wsoleval(root: Path, metadata: Path | None = None, *, mask_root: Path | None = None,
                  name: str = "wsoleval", **_ignored):
    """Load a dataset described by wsolevaluation metadata.

    ``root`` is the image root; ``metadata`` the folder holding ``train/``, ``val/`` and
    ``test/`` (each with ``image_ids.txt``, ``class_labels.txt``, ...). Splits whose folder
    is absent are left out; ``test`` is required.
    """
    from wsolbench.data.sample import DatasetSplits
    from wsolbench.data.wsoleval import read_metadata  # written alongside; import lazily

    root = Path(root)
    if metadata is None:
        raise UserError("the wsoleval dataset needs 'metadata': the folder holding train/, "
                        "val/ and test/ in wsolevaluation format")
    metadata = Path(metadata)
    if not root.is_dir():
        raise UserError(f"image root {root} of the wsoleval dataset does not exist")
    if not (metadata / "test").is_dir():
        raise UserError(f"{metadata / 'test'} is missing: wsolevaluation metadata needs at "
                        "least a test/ folder (image_ids.txt, class_labels.txt, ...)")
    kw = {"image_root": root}
    if mask_root is not None:
        kw["mask_root"] = Path(mask_root)
    splits = {}
    for split in ("train", "val", "test"):
        if (metadata / split).is_dir():
            splits[split] = read_metadata(metadata / split, **kw)
    n = 1 + max((s.label for samples in splits.values() for s in samples), default=-1)
    return DatasetSplits(
        name=name, root=root, class_names=[f"class_{i}" for i in range(n)], splits=splits,
        val_source="wsolevaluation metadata val/ (Choe et al.'s train-fullsup split)"
        if "val" in splits else "",
        notes={"metadata": str(metadata)},
    )


# --------------------------------------------------------------------------- loader helpers


@dataclass
class Issue:
    category: str  # e.g. "malformed_row", "unknown_id", "missing_row"
    message: str  # one line, naming the file (and line)


@dataclass
class Issues:
    """Row-level problems collected by a loader (``wsolbench data check``).

    Loaders take ``issues=None``: then the first problem raises :class:`UserError`. With
    an :class:`Issues` object, row-level problems are recorded and the row is skipped;
    file-level ones (root or annotation file missing, empty file) still raise.
    """

    items: list[Issue] = field(default_factory=list)

    def add(self, category: str, message: str) -> None:
        self.items.append(Issue(category, message))

    def __len__(self) -> int:
        return len(self.items)


def problem(issues: Issues | None, category: str, message: str) -> None:
    """Raise ``message`` as a UserError, or record it when collecting."""
    if issues is None:
        raise UserError(message)
    issues.add(category, message)


def resolve_root(root: Path | str, name: str, marker: str) -> Path:
    """Return the dataset folder: ``root`` itself or ``root/<default_root>``.

    ``marker`` is a file every copy has (``images.txt`` for CUB). The parent folder is
    accepted so that ``data download NAME --root DIR`` and ``load(DIR)`` agree.
    """
    info = dataset_info(name) if name in _INFOS else None
    root = Path(root).expanduser()
    if (root / marker).exists():
        return root
    if info is not None and (root / info.default_root / marker).exists():
        return root / info.default_root
    raise UserError(missing_root_message(root, name, marker))


def missing_root_message(root: Path, name: str, marker: str = "") -> str:
    info = _INFOS.get(name)
    display = info.display_name if info else name
    expected = ", ".join(info.expected_files) if info and info.expected_files else marker
    if not root.exists():
        what = f"{display} root {root} does not exist"
    else:
        nested = f" (nor in {info.default_root}/)" if info else ""
        what = f"{root} does not hold {display}: {marker} not found{nested}"
    how = (f"get it with `wsolbench data download {name} --root {root}`"
           if info and info.sources else "point --root at the right folder")
    return f"{what}; expected {expected}; {how}"


def require_file(path: Path, what: str = "annotation file") -> Path:
    """A one-line error when a required annotation file is missing or empty."""
    if not path.is_file():
        raise UserError(f"{what} {path} is missing; restore it from the official archive "
                        "(`wsolbench data download NAME --root DIR` re-extracts it)")
    if path.stat().st_size == 0:
        raise UserError(f"{what} {path} is empty; restore it from the official archive")
    return path


def read_rows(path: Path, fields: tuple[str, ...],
              issues: Issues | None = None) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, columns)`` of a whitespace/tab separated text table.

    Blank lines are skipped; a line with the wrong number of columns is a malformed row
    (``path:line: expected ...``).
    """
    require_file(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not a UTF-8 text file; restore it from the official archive")
    n_rows = 0
    want = len(fields)
    for lineno, line in enumerate(text.splitlines(), start=1):
        cols = line.split()
        if not cols:
            continue
        if len(cols) != want:
            problem(issues, "malformed_row",
                    f"{path}:{lineno}: expected {want} columns ({' '.join(fields)}), "
                    f"got {len(cols)}: {line.strip()[:80]!r}")
            continue
        n_rows += 1
        yield lineno, cols
    if n_rows == 0 and issues is None:
        raise UserError(f"{path} has no valid rows (expected: {' '.join(fields)})")


def parse_number(text: str, path: Path, lineno: int, what: str, issues: Issues | None,
                 *, integer: bool = False) -> float | int | None:
    """Parse one column; a malformed-row problem naming ``path:lineno`` when it is not a number."""
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        kind = "an integer" if integer else "a finite number"
        problem(issues, "malformed_row", f"{path}:{lineno}: {what} must be {kind}, got {text!r}")
        return None
    return value
