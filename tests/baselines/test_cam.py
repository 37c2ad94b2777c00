"""CAM on a model small enough to work out by hand."""

import numpy as np
import torch
from torch import nn

from baselines.cam import CAM, class_activation_maps
from baselines.sanity import CenterBaseline, FullBaseline, centered_gaussian
from wsolbench.runner import postprocess_maps


class IdentityFeatures(nn.Module):
    """features(x) = x, so the CAM is a per-pixel weighted sum of the input channels."""

    def __init__(self, weight):
        super().__init__()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor(weight, dtype=torch.float32))

    def features(self, x):
        return x

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


class Ctx:
    device = torch.device("cpu")

    def __init__(self, f):
        self.get_classifier = lambda: f


def test_cam_is_the_fc_weighted_sum_of_feature_channels():
    # channel 0 = [[1, 0], [0, 0]], channel 1 = [[0, 0], [0, 2]]
    x = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 2.0]]]])
    f = IdentityFeatures([[3.0, 1.0], [-1.0, 2.0]])
    cam = CAM()
    cam.bind(Ctx(f))
    out = cam.localize(x, torch.tensor([0]))
    # class 0: 3*c0 + 1*c1 = [[3, 0], [0, 2]]
    assert torch.equal(out.maps[0], torch.tensor([[3.0, 0.0], [0.0, 2.0]]))
    out1 = cam.localize(x, torch.tensor([1]))
    # class 1: -1*c0 + 2*c1 = [[-1, 0], [0, 4]]
    assert torch.equal(out1.maps[0], torch.tensor([[-1.0, 0.0], [0.0, 4.0]]))
    # logits = fc(GAP(x)): GAP = [0.25, 0.5] -> class 0: 0.75+0.5, class 1: -0.25+1.0
    assert torch.allclose(out.logits, torch.tensor([[1.25, 0.75]]))
    # The harness min-max normalizes raw maps: class 1 -> ([[-1,0],[0,4]] + 1) / 5
    norm = postprocess_maps(out1.maps, (2, 2), CAM.map_range, "cam", ["img"])
    np.testing.assert_allclose(norm[0], [[0.0, 0.2], [0.2, 1.0]], atol=1e-6)


def test_class_activation_maps_batched_per_label():
    feats = torch.arange(2 * 3 * 1 * 2, dtype=torch.float32).view(2, 3, 1, 2)
    w = torch.eye(3)
    maps = class_activation_maps(feats, w, torch.tensor([2, 0]))
    assert torch.equal(maps[0], feats[0, 2]) and torch.equal(maps[1], feats[1, 0])


def test_center_baseline_tau_level_set_is_the_central_half_box():
    from wsolbench.evaluation import paper_box

    m = centered_gaussian(64, 64).numpy()
    box = paper_box(m)
    # tau = max/10 keeps |offset| <= side/4: columns 16..47, inclusive
    assert abs(box[0] - 16) <= 1 and abs(box[2] - 47) <= 1
    assert abs(box[1] - 16) <= 1 and abs(box[3] - 47) <= 1
    maps = CenterBaseline().localize(torch.zeros(3, 3, 64, 64), torch.zeros(3, dtype=torch.long))
    assert maps.shape == (3, 64, 64) and float(maps.max()) <= 1.0


def test_full_baseline_box_is_the_whole_image_under_both_rules():
    from wsolbench.evaluation import paper_box

    m = FullBaseline().localize(torch.zeros(1, 3, 10, 12), torch.zeros(1, dtype=torch.long))
    norm = postprocess_maps(m, (10, 12), "raw", "full", ["x"])  # min-max keeps it non-constant
    # nonzero pixels x 1..10, y 1..8; wsolevaluation box: x1 = min(x + w, W - 1) = 11, y1 = 9
    assert list(paper_box(norm[0])) == [1, 1, 11, 9]
