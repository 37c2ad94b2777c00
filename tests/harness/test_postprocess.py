import numpy as np
import pytest
import torch

from wsolbench.errors import MethodOutputError
from wsolbench.runner import carve_validation, postprocess_maps
from wsolbench.data.sample import Sample


def test_raw_maps_min_max_per_image_and_constant_becomes_zero():
    maps = torch.tensor([[[2.0, 4.0], [6.0, 10.0]], [[5.0, 5.0], [5.0, 5.0]]])
    out = postprocess_maps(maps, (2, 2), "raw", "m", ["a", "b"])
    np.testing.assert_allclose(out[0], [[0, 0.25], [0.5, 1.0]])
    assert (out[1] == 0).all()


def test_maps_are_resized_to_the_input():
    maps = torch.ones(2, 1, 4, 4) * 0.5
    out = postprocess_maps(maps, (8, 8), "unit", "m", ["a", "b"])
    assert out.shape == (2, 8, 8) and np.allclose(out, 0.5)


def test_nan_names_method_and_image():
    maps = torch.zeros(2, 3, 3)
    maps[1, 0, 0] = float("nan")
    with pytest.raises(MethodOutputError, match="method 'mine' returned NaN/Inf values for image 'b.jpg'"):
        postprocess_maps(maps, (3, 3), "raw", "mine", ["a.jpg", "b.jpg"])


def test_wrong_shape_is_an_error():
    with pytest.raises(MethodOutputError, match=r"shape \(3, 3\)"):
        postprocess_maps(torch.zeros(3, 3), (3, 3), "raw", "mine", ["a", "b", "c"])


def test_unit_maps_outside_range_are_refused():
    with pytest.raises(MethodOutputError, match="declares maps in \\[0, 1\\]"):
        postprocess_maps(torch.full((1, 2, 2), 3.0), (2, 2), "unit", "mine", ["a"])


def test_validation_split_is_fixed_per_class_and_disjoint():
    train = [Sample(id=f"c{c}/{i}.jpg", path=None, label=c) for c in range(3) for i in range(20)]
    tr, val = carve_validation(train, 0.1)
    assert len(val) == 6 and len(tr) == 54
    assert sorted(s.label for s in val) == [0, 0, 1, 1, 2, 2]
    assert not {s.id for s in tr} & {s.id for s in val}
    tr2, val2 = carve_validation(list(reversed(train)), 0.1)
    assert {s.id for s in val2} == {s.id for s in val}  # order-independent, seed-free


def test_ignore_region_never_hides_foreground(tmp_path):
    import cv2

    from wsolbench.data.masks import load_mask

    fg = np.zeros((4, 4), np.uint8)
    fg[1:3, 1:3] = 255
    ign = np.zeros((4, 4), np.uint8)
    ign[:, 2:] = 255
    cv2.imwrite(str(tmp_path / "m.png"), fg)
    cv2.imwrite(str(tmp_path / "i.png"), ign)
    mask = load_mask([tmp_path / "m.png"], tmp_path / "i.png")
    expected = np.array([[0, 0, 255, 255], [0, 1, 1, 255], [0, 1, 1, 255], [0, 0, 255, 255]])
    np.testing.assert_array_equal(mask, expected)


def test_results_json_keeps_number_lists_on_one_line_and_nan_as_null():
    import json

    from wsolbench.runner import dumps_json

    obj = {"a": [1, 2.5, float("nan")], "b": {"c": np.float32(0.5), "d": [[1, 2], [3, 4]], "e": []},
           "f": np.arange(3), "g": 'x"y'}
    text = dumps_json(obj)
    assert '"a": [1, 2.5, null]' in text and '"f": [0, 1, 2]' in text
    assert json.loads(text) == {"a": [1, 2.5, None], "b": {"c": 0.5, "d": [[1, 2], [3, 4]], "e": []},
                                "f": [0, 1, 2], "g": 'x"y'}
