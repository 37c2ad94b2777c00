"""The evaluator on maps whose boxes, hits and best thresholds are worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wsolbench.errors import MethodOutputError, UserError
from wsolbench.evaluation import Evaluator, evaluate, threshold_grid


def nested_squares(outer=0.45) -> np.ndarray:
    """Outer square [20:80] at 0.45 (uint8 114) holding an inner square [40:60] at 1.0 (255).

    With the grid step 0.1: thresholds 0.0-0.4 (int(t*255) <= 102) keep the outer square,
    box [20, 20, 80, 80]; thresholds 0.5-0.9 (>= 127) keep the inner one, box [40, 40, 60, 60].
    """
    m = np.zeros((100, 100), np.float32)
    m[20:80, 20:80] = outer
    m[40:60, 40:60] = 1.0
    return m


def big_and_small() -> np.ndarray:
    """Big blob A [10:50] at 0.45 and small blob B [70:80] at 1.0. Thresholds 0.0-0.4: both
    (largest contour = A); 0.5-0.9: B only."""
    m = np.zeros((100, 100), np.float32)
    m[10:50, 10:50] = 0.45
    m[70:80, 70:80] = 1.0
    return m


INNER, OUTER, B_BOX = [40, 40, 60, 60], [20, 20, 80, 80], [70, 70, 80, 80]
# IoU(outer box, inner GT) = 21*21 / 61*61 = 0.1185: a miss at 30, 50 and 70


def four_images():
    maps = np.stack([nested_squares(), nested_squares(), nested_squares(), big_and_small()])
    boxes = [np.array([INNER]), np.array([OUTER]), np.array([OUTER]), np.array([B_BOX])]
    return maps, ["inner", "outer1", "outer2", "two_blobs"], boxes


def test_max_box_acc_and_v2_by_hand():
    maps, ids, boxes = four_images()
    ev = Evaluator("wsoleval", cam_curve_interval=0.1)
    ev.accumulate(maps, ids, gt_boxes=boxes)
    r = ev.compute()
    # largest contour, per threshold: t <= 0.4 hits outer1, outer2 (2/4); t >= 0.5 hits
    # inner and two_blobs (2/4)
    assert r["max_box_acc"] == 50.0
    assert r["max_box_acc_threshold"] == 0.0
    assert r["gt_known_loc"] == 50.0
    assert r["curves"]["max_box_acc"] == [50.0] * 10
    # any contour: two_blobs also hits at t <= 0.4 through B -> 3/4 there, 2/4 above
    assert r["box_acc_by_iou"] == {"30": 75.0, "50": 75.0, "70": 75.0}
    assert r["best_threshold_by_iou"] == {"30": 0.0, "50": 0.0, "70": 0.0}
    assert r["max_box_acc_v2"] == 75.0
    assert r["curves"]["box_acc"]["50"] == [75.0] * 5 + [50.0] * 5
    assert r["curves"]["thresholds"] == pytest.approx([0.1 * k for k in range(10)])


def test_largest_contour_only_variant():
    maps, ids, boxes = four_images()
    r = evaluate(maps, ids, gt_boxes=boxes, protocol="wsoleval", cam_curve_interval=0.1,
                 multi_contour_eval=False)
    assert r["box_acc_by_iou"] == {"30": 50.0, "50": 50.0, "70": 50.0}
    assert r["max_box_acc_v2"] == 50.0
    assert r["max_box_acc"] == 50.0


def pyramid() -> np.ndarray:
    """Concentric squares at 0.25/0.5/0.75/1.0 (uint8 63/127/191/255), half sizes 40/30/20/10."""
    m = np.zeros((100, 100))
    for half, v in ((40, 0.25), (30, 0.5), (20, 0.75), (10, 1.0)):
        m[50 - half:50 + half, 50 - half:50 + half] = v
    return m


def test_best_threshold_per_iou_by_hand():
    # grid 0.1 -> int(t*255) = 0 25 51 76 102 127 153 178 204 229; boxes: t<=0.2 [10,10,90,90],
    # t=0.3-0.4 [20,20,80,80], t=0.5-0.7 [30,30,70,70], t>=0.8 [40,40,60,60]. GT [30,30,70,70]:
    # IoU 1681/6561=0.256, 1681/3721=0.452, 1, 441/1681=0.262.
    r = evaluate(pyramid()[None], ["p"], gt_boxes=[np.array([[30, 30, 70, 70]])],
                 protocol="wsoleval", cam_curve_interval=0.1)
    grid = threshold_grid(0.1)
    assert r["curves"]["box_acc"]["30"] == [0, 0, 0, 100, 100, 100, 100, 100, 0, 0]
    assert r["curves"]["box_acc"]["50"] == [0, 0, 0, 0, 0, 100, 100, 100, 0, 0]
    assert r["best_threshold_by_iou"] == {"30": grid[3], "50": grid[5], "70": grid[5]}
    assert r["max_box_acc"] == 100.0 and r["max_box_acc_threshold"] == grid[5]


def test_top1_loc_and_cls_wsoleval():
    maps, ids, boxes = four_images()
    ev = Evaluator("wsoleval", cam_curve_interval=0.1)
    # class right for "inner" and "outer1" only
    ev.accumulate(maps, ids, gt_boxes=boxes, gt_labels=[0, 1, 2, 3], pred_labels=[0, 1, 0, 0])
    r = ev.compute()
    # t <= 0.4: largest hits {outer1, outer2} & right {inner, outer1} = {outer1};
    # t >= 0.5: {inner, two_blobs} & right = {inner}
    assert r["top1_loc"] == 25.0
    assert r["top1_cls"] == 50.0
    assert r["curves"]["top1_loc"] == [25.0] * 10


def test_paper_protocol_by_hand():
    maps, ids, boxes = four_images()
    ev = Evaluator("paper")
    ev.accumulate(maps, ids, gt_boxes=boxes, gt_labels=[0, 1, 2, 3], pred_labels=[0, 1, 0, 0])
    r = ev.compute()
    # tau = 0.1: nested squares -> the outer square; big_and_small -> A (largest contour)
    assert r["gt_known_loc"] == 50.0  # outer1, outer2
    assert r["box_acc_by_iou"] == {"30": 50.0, "50": 50.0, "70": 50.0}
    assert r["top1_loc"] == 25.0  # outer1
    assert r["top1_cls"] == 50.0
    assert r["max_box_acc"] is None and r["max_box_acc_v2"] is None
    assert r["best_threshold_by_iou"] is None
    assert r["curves"]["box_acc"] is None


def test_empty_and_constant_maps_in_both_protocols():
    gt = [np.array([[0, 0, 1, 1]])]  # IoU with the "no contour" box [0,0,0,0] is 1/4
    zero = np.zeros((1, 20, 20))
    for proto in ("paper", "wsoleval"):
        r = evaluate(zero, ["z"], gt_boxes=gt, protocol=proto, iou_thresholds=(20, 50))
        assert r["box_acc_by_iou"] == {"20": 100.0, "50": 0.0}
    # a constant map: wsoleval normalizes it to zeros -> no contour at any threshold;
    # the paper keeps it as one contour around the whole map -> box [0, 0, 19, 19]
    const = np.full((1, 20, 20), 0.6)
    r = evaluate(const, ["c"], gt_boxes=gt, protocol="wsoleval", iou_thresholds=(20, 50))
    assert r["box_acc_by_iou"] == {"20": 100.0, "50": 0.0}
    r = evaluate(const, ["c"], gt_boxes=[np.array([[0, 0, 19, 19]])], protocol="paper")
    assert r["gt_known_loc"] == 100.0


def test_several_gt_boxes_any_may_match():
    m = nested_squares()[None]
    r = evaluate(m, ["x"], gt_boxes=[np.array([[0, 0, 5, 5], INNER])], protocol="paper")
    assert r["gt_known_loc"] == 0.0  # paper box is the outer square
    r = evaluate(m, ["x"], gt_boxes=[np.array([[0, 0, 5, 5], OUTER])], protocol="paper")
    assert r["gt_known_loc"] == 100.0


def test_state_is_additive():
    rng = np.random.default_rng(0)
    maps = rng.random((6, 30, 30)).astype(np.float32)
    boxes = [np.array([[2, 2, 20, 20]]), np.array([[5, 5, 25, 25]]), None,
             np.array([[0, 0, 10, 29]]), np.zeros((0, 4)), np.array([[10, 10, 29, 29]])]
    masks = [(rng.random((30, 30)) > 0.5).astype(np.uint8) for _ in range(6)]
    masks[2][:5] = 255
    gl, pl = np.arange(6) % 3, np.array([0, 1, 1, 0, 1, 2])
    for proto in ("paper", "wsoleval"):
        full = Evaluator(proto, cam_curve_interval=0.01)
        full.accumulate(maps, list("abcdef"), gt_boxes=boxes, masks=masks, gt_labels=gl, pred_labels=pl)
        a, b = Evaluator(proto, cam_curve_interval=0.01), Evaluator(proto, cam_curve_interval=0.01)
        a.accumulate(maps[:2], list("ab"), gt_boxes=boxes[:2], masks=masks[:2], gt_labels=gl[:2],
                     pred_labels=pl[:2])
        b.accumulate(maps[2:], list("cdef"), gt_boxes=boxes[2:], masks=masks[2:], gt_labels=gl[2:],
                     pred_labels=pl[2:])
        summed = {k: a.state()[k] + b.state()[k] for k in a.state()}
        for k, v in full.state().items():
            np.testing.assert_array_equal(summed[k], v)
        merged = Evaluator.from_state(summed, **full.config())
        assert merged.compute() == full.compute()
        a.merge_state(b.state())
        assert a.compute() == full.compute()
        assert full.compute()["num_box_images"] == 4  # None and (0, 4) mean "no box"


def test_state_does_not_grow_with_images():
    ev = Evaluator("wsoleval", cam_curve_interval=0.01)
    sizes = {k: v.nbytes for k, v in ev.state().items()}
    ev.accumulate(np.random.default_rng(1).random((5, 16, 16)), list("abcde"),
                  gt_boxes=[np.array([[0, 0, 5, 5]])] * 5)
    assert {k: v.nbytes for k, v in ev.state().items()} == sizes


def test_merge_rejects_other_configurations():
    a = Evaluator("wsoleval", cam_curve_interval=0.01)
    with pytest.raises(ValueError):
        a.merge_state(Evaluator("wsoleval", cam_curve_interval=0.1).state())
    with pytest.raises(ValueError):
        a.merge_state(Evaluator("paper", cam_curve_interval=0.01).state())


def test_result_is_plain_json_with_nones():
    r = evaluate(np.random.default_rng(0).random((2, 10, 10)), ["a", "b"], protocol="wsoleval")
    json.dumps(r, allow_nan=False)
    for key in ("max_box_acc", "max_box_acc_v2", "box_acc_by_iou", "gt_known_loc", "top1_loc",
                "top1_cls", "pxap", "pxap_best_f1"):
        assert r[key] is None, key
    assert r["num_images"] == 2 and r["protocol"] == "wsoleval"
    maps, ids, boxes = four_images()
    r = evaluate(maps, ids, gt_boxes=boxes, protocol="wsoleval", cam_curve_interval=0.1,
                 gt_labels=[0] * 4, pred_labels=[0] * 4, masks=[(m > 0).astype(np.uint8) for m in maps])
    text = json.dumps(r, allow_nan=False)
    assert isinstance(json.loads(text)["curves"]["pr"]["precision"], list)


@pytest.mark.parametrize("bad, match", [(np.nan, "NaN/Inf"), (np.inf, "NaN/Inf"), (-np.inf, "NaN/Inf")])
def test_nan_inf_raise_naming_the_image(bad, match):
    maps = np.zeros((2, 8, 8), np.float32)
    maps[1, 3, 3] = bad
    for proto in ("paper", "wsoleval"):
        with pytest.raises(MethodOutputError, match=rf"'img_b'.*{match}"):
            Evaluator(proto).accumulate(maps, ["img_a", "img_b"])


def test_shape_errors_name_the_image():
    ev = Evaluator("wsoleval")
    with pytest.raises(MethodOutputError, match="img_a"):
        ev.accumulate(np.zeros((8, 8)), ["img_a"])  # not [B, H, W]
    with pytest.raises(MethodOutputError, match="'img_b'"):
        ev.accumulate([np.zeros((8, 8)), np.zeros((2, 8, 8))], ["img_a", "img_b"])
    with pytest.raises(MethodOutputError, match="'img_a'.*mask"):
        ev.accumulate(np.zeros((1, 8, 8)), ["img_a"], masks=[np.zeros((8, 9), np.uint8)])
    with pytest.raises(MethodOutputError, match="image ids"):
        ev.accumulate(np.zeros((2, 8, 8)), ["img_a"])
    assert ev.compute()["num_images"] == 0  # nothing was counted from the failed batches


def test_paper_range_check():
    ev = Evaluator("paper")
    m = np.zeros((1, 8, 8))
    m[0, 0, 0] = 1.5
    with pytest.raises(MethodOutputError, match="'x'.*\\[0, 1\\]"):
        ev.accumulate(m, ["x"])
    m[0, 0, 0] = -0.01
    with pytest.raises(MethodOutputError, match="'x'"):
        ev.accumulate(m, ["x"])
    m[0, 0, 0] = 1 + 1e-7  # within the tolerance: clipped
    ev.accumulate(m, ["x"])
    # wsoleval normalizes any finite map
    Evaluator("wsoleval").accumulate(np.full((1, 4, 4), 7.0), ["y"])


def test_bad_configuration():
    with pytest.raises(UserError, match="did you mean 'paper'"):
        Evaluator("papr")
    with pytest.raises(UserError):
        Evaluator("wsoleval", cam_curve_interval=0)
    with pytest.raises(UserError):
        Evaluator("wsoleval", iou_thresholds=(0, 50))
