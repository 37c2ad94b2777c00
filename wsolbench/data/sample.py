"""The one record every dataset loader produces.

Loaders parse their native annotation files once into :class:`Sample` objects; the rest
of the harness (cache, loaders, evaluator) never looks at a native format again.

Conventions (all loaders honour them, tests check them):

* ``boxes`` are ``(x0, y0, x1, y1)`` floats in the pixel frame of the ORIGINAL image,
  ``x1``/``y1`` inclusive-style corner coordinates as in the wsolevaluation metadata
  (CUB's ``x y w h`` becomes ``x0=x, x1=x+w``). Mapping through a protocol's resize and
  crop happens in :mod:`wsolbench.evaluation.geometry`, never in loaders.
* ``label`` is 0-based.
* ``mask_paths``/``ignore_path`` point to ground-truth masks at the original size; how a
  file becomes a binary mask is named by ``mask_rule`` (see ``wsolbench.data.masks``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    id: str  # relative image path, unique within the dataset (wsolevaluation image id)
    path: Path  # absolute path of the image file
    label: int  # 0-based class index
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    mask_paths: tuple[Path, ...] = ()
    ignore_path: Path | None = None
    mask_rule: str = "binary"  # how mask files are binarized; see wsolbench.data.masks
    size: tuple[int, int] | None = None  # (width, height) when the annotations state it


@dataclass
class DatasetSplits:
    """A parsed dataset: its splits and what it provides."""

    name: str
    root: Path
    class_names: list[str]
    splits: dict[str, list[Sample]]  # keys among 'train', 'val', 'test'
    val_source: str = ""  # how the 'val' split was obtained (documented in results)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def has_boxes(self, split: str) -> bool:
        return any(s.boxes for s in self.splits.get(split, []))

    def has_masks(self, split: str) -> bool:
        return any(s.mask_paths for s in self.splits.get(split, []))
