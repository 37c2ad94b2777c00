"""Geometry: boxes and masks from original pixels to the map frame, worked by hand."""

from __future__ import annotations

import numpy as np
import pytest

from wsolbench.evaluation import Geometry


def test_presets():
    assert Geometry.paper().out_size == (224, 224)
    assert Geometry.paper().crop_offset == (16, 16)
    assert Geometry.wsoleval().out_size == (224, 224)
    assert Geometry.wsoleval().crop is None
    with pytest.raises(ValueError):
        Geometry((10, 10), (12, 4))


def test_wsoleval_boxes_by_hand():
    g = Geometry.wsoleval()
    # W=500, H=300: x*224/500 -> 44.8, 179.2; y*224/300 -> 44.8, 179.2; int() truncates
    assert g.map_boxes([[100, 60, 400, 240]], (500, 300)).tolist() == [[44, 44, 179, 179]]
    # to a 112 x 224 (H x W) map: y*112/300 -> 22.4, 89.6
    assert g.map_boxes([[100, 60, 400, 240]], (500, 300), out_hw=(112, 224)).tolist() == [[44, 22, 179, 89]]
    # no clamping (as wsolevaluation): x1 = W maps to 224
    assert g.map_boxes([[0, 0, 500, 300]], (500, 300)).tolist() == [[0, 0, 224, 224]]
    assert g.map_boxes(np.zeros((0, 4)), (500, 300)).shape == (0, 4)


def test_paper_boxes_by_hand():
    g = Geometry.paper()
    # W=512, H=256 -> 256x256: x/2, y*1; minus the crop offset 16
    # x: 64 -> 32 -> 16, 448 -> 224 -> 208; y: 32 -> 16, 224 -> 208
    assert g.map_boxes([[64, 32, 448, 224]], (512, 256)).tolist() == [[16, 16, 208, 208]]
    # to a 112x112 map: halve
    assert g.map_boxes([[64, 32, 448, 224]], (512, 256), out_hw=(112, 112)).tolist() == [[8, 8, 104, 104]]
    # the full image: -16 -> 0 and 240 -> 223 (clamped to the crop)
    assert g.map_boxes([[0, 0, 512, 256]], (512, 256)).tolist() == [[0, 0, 223, 223]]
    # ... and 223 * 112 / 224 = 111.5 -> 111
    assert g.map_boxes([[0, 0, 512, 256]], (512, 256), out_hw=(112, 112)).tolist() == [[0, 0, 111, 111]]
    # entirely left of the crop: a zero-width strip on its edge; y: 0->-16->0, 20->4
    assert g.map_boxes([[0, 0, 20, 20]], (512, 256)).tolist() == [[0, 0, 0, 4]]


def test_custom_crop_boxes_by_hand():
    g = Geometry((8, 8), (4, 4))  # offset 2
    # W=H=4 -> x*2 - 2: 1 -> 0, 3 -> 4 -> clamp 3
    assert g.map_boxes([[1, 1, 3, 3]], (4, 4)).tolist() == [[0, 0, 3, 3]]


def test_masks_by_hand():
    src = np.array([[0, 1, 1, 0],
                    [0, 1, 255, 0],
                    [1, 1, 0, 0],
                    [0, 0, 0, 1]], np.uint8)
    # wsoleval: nearest 4x4 -> 8x8 doubles every pixel
    np.testing.assert_array_equal(Geometry((8, 8)).map_mask(src), np.kron(src, np.ones((2, 2), np.uint8)))
    # resize 8x8 then centre crop 4x4 (offset 2): source rows/cols 1, 1, 2, 2
    g = Geometry((8, 8), (4, 4))
    expected = src[np.ix_([1, 1, 2, 2], [1, 1, 2, 2])]
    np.testing.assert_array_equal(g.map_mask(src), expected)
    # then to 2x2: nearest picks crop rows/cols 0 and 2 -> source 1 and 2
    np.testing.assert_array_equal(g.map_mask(src, out_hw=(2, 2)), src[np.ix_([1, 2], [1, 2])])
    assert g.map_mask(src).dtype == np.uint8


def test_paper_mask_matches_box_mapping():
    # a filled rectangle mask maps (nearest) onto the mapped box
    mask = np.zeros((300, 400), np.uint8)
    mask[60:240, 100:300] = 1  # x 100..299, y 60..239
    out = Geometry.paper().map_mask(mask)
    ys, xs = np.nonzero(out)
    box = Geometry.paper().map_boxes([[100, 60, 300, 240]], (400, 300))[0]
    assert abs(xs.min() - box[0]) <= 1 and abs(ys.min() - box[1]) <= 1
    assert abs(xs.max() + 1 - box[2]) <= 1 and abs(ys.max() + 1 - box[3]) <= 1
