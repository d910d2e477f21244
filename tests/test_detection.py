"""The detection workload: the ``shapes`` data set, COCO mAP (against pycocotools and hand-worked cases), the
``yolo-tiny`` detector's head, loss and decoder, and the harness hooks that score a data set by its metric."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from quantzoo.errors import NonFiniteOutputError
from quantzoo.bench.data import load_dataset
from quantzoo.datasets import shapes
from quantzoo.bench.scoring import evaluate, loss_for
from quantzoo.metrics import Detections, GroundTruth, coco_map, ground_truth_of, nms
from quantzoo.bench.data import build_model
from quantzoo.models import yolo

DATA = Path(__file__).with_name("data")


# -- data set ------------------------------------------------------------------------------------------------
def test_shapes_is_deterministic_and_streams_differ():
    a, b = shapes.generate(20, 0), shapes.generate(20, 0)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    other = shapes.generate(20, 1)
    assert not np.array_equal(a[0], other[0]) and not np.array_equal(a[1], other[1])


def test_shapes_splits_are_disjoint_and_fixed():
    s = load_dataset("shapes")
    assert s.input_shape == (1, 48, 48) and s.num_classes == 4
    assert (len(s.train_x), len(s.test_x)) == (shapes.N_TRAIN, shapes.N_TEST)
    assert torch.equal(load_dataset("shapes", seed=5).test_y, s.test_y)  # the split ignores the run seed
    train = {x.numpy().tobytes() for x in s.train_x}
    assert not any(x.numpy().tobytes() in train for x in s.test_x)
    assert 0.0 <= float(s.train_x.min()) and float(s.train_x.max()) <= 1.0


def test_shapes_boxes_lie_inside_the_canvas_and_padding_is_marked():
    _, y = shapes.generate(300, 3)
    valid = y[..., 0] >= 0
    counts = valid.sum(1)
    assert counts.min() >= 1 and counts.max() <= shapes.MAX_OBJECTS
    assert (valid[:, 1:] <= valid[:, :-1]).all()  # objects first, then padding rows
    box = y[valid][:, 1:]
    assert (box[:, 0] >= 0).all() and (box[:, 1] >= 0).all()
    assert (box[:, 2] <= shapes.CANVAS).all() and (box[:, 3] <= shapes.CANVAS).all()
    assert (box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all()
    assert set(np.unique(y[valid][:, 0]).astype(int)) == {0, 1, 2, 3}
    assert (y[~valid] == np.array([-1, 0, 0, 0, 0])).all()


def test_shapes_box_is_the_tight_box_of_the_drawn_pixels():
    # a 10 px disk sampled at pixel centres reaches every edge row/column (centre (4.5, 0.5) lies 0.4 from
    # the disk's centre in units of the diameter... (u-.5)^2 + (v-.5)^2 = 0.0025 + 0.2025 <= 0.25), not a corner
    mask, box = shapes._shape_mask(1, 10, 10)
    assert box == (0, 0, 10, 10) and not mask[0, 0] and mask[0, 4]
    # a triangle 12 wide, 11 high: row 0 (v = 0.5/11) keeps |u - 0.5| <= 0.0227, but the centre pixels lie at
    # |u - 0.5| = 0.5/12 = 0.0417: the apex row is empty, so the tight box starts at y = 1; row 1 (v = 1.5/11)
    # keeps |u - 0.5| <= 0.068: the 2 centre pixels
    mask, box = shapes._shape_mask(2, 12, 11)
    assert box == (0, 1, 12, 11) and mask[0].sum() == 0 and mask[1].sum() == 2 and mask[-1].all()


# -- mAP -------------------------------------------------------------------------------------------------------
def _cases():
    ref = json.loads((DATA / "coco_map_reference.json").read_text())
    for case in ref["cases"]:
        dets, gts = [], []
        for im in case["images"]:
            g = np.array(im["gt"], dtype=np.float64).reshape(-1, 5)
            d = np.array(im["dets"], dtype=np.float64).reshape(-1, 6)
            gts.append(GroundTruth(g[:, :4], g[:, 4].astype(int)))
            dets.append(Detections(d[:, :4], d[:, 5], d[:, 4].astype(int)))
        yield dets, gts, case["pycocotools"]


def test_coco_map_equals_pycocotools_on_recorded_cases():
    """Reference values recorded by running pycocotools 2.0.11 (tests/data/make_coco_map_reference.py): random
    boxes with jitter, duplicates, wrong classes, tied scores and an image with > 100 detections."""
    n = 0
    for dets, gts, ref in _cases():
        ours = coco_map(dets, gts)
        for k in ("map50", "map75", "map50_95"):
            assert ours[k] == pytest.approx(ref[k], abs=1e-12), k
        n += 1
    assert n == 6


@pytest.mark.skipif(importlib.util.find_spec("pycocotools") is None,
                    reason="pycocotools is not installed (optional anchor; the recorded cases above still run)")
def test_coco_map_equals_pycocotools_live():
    spec = importlib.util.spec_from_file_location("make_ref", DATA / "make_coco_map_reference.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    case = mod.make_case(np.random.default_rng(7), 30, 3)
    ref = mod.cocoeval(case)
    dets = [Detections(np.array(i["dets"]).reshape(-1, 6)[:, :4], np.array(i["dets"]).reshape(-1, 6)[:, 5],
                       np.array(i["dets"]).reshape(-1, 6)[:, 4].astype(int)) for i in case["images"]]
    gts = [GroundTruth(np.array(i["gt"]).reshape(-1, 5)[:, :4], np.array(i["gt"]).reshape(-1, 5)[:, 4].astype(int))
           for i in case["images"]]
    ours = coco_map(dets, gts)
    assert all(ours[k] == pytest.approx(ref[k], abs=1e-12) for k in ref)


def _gt(*boxes):
    b = np.array(boxes, dtype=np.float64).reshape(-1, 5)
    return GroundTruth(b[:, :4], b[:, 4].astype(int))


def _det(*boxes):
    b = np.array(boxes, dtype=np.float64).reshape(-1, 6)
    return Detections(b[:, :4], b[:, 5], b[:, 4].astype(int))


def test_perfect_predictions_score_one():
    gts = [_gt((0, 0, 10, 10, 0), (20, 20, 30, 35, 1)), _gt((5, 5, 15, 15, 1))]
    dets = [_det((0, 0, 10, 10, 0, 0.9), (20, 20, 30, 35, 1, 0.8)), _det((5, 5, 15, 15, 1, 0.7))]
    # precision is tp / (tp + fp + eps) as in COCOeval, so a perfect AP is 1 - O(1e-16)
    assert coco_map(dets, gts) == pytest.approx({"map50": 1.0, "map75": 1.0, "map50_95": 1.0}, abs=1e-12)


def test_a_box_shifted_below_iou_half_scores_zero():
    # 10x10 box shifted by 4 px: intersection 6*10 = 60, union 140, IoU 0.43 < 0.5
    out = coco_map([_det((4, 0, 14, 10, 0, 0.9))], [_gt((0, 0, 10, 10, 0))])
    assert out["map50"] == 0.0 and out["map50_95"] == 0.0
    # shifted by 3 px: IoU 70/130 = 0.538 matches at 0.50 only: mAP@[.5:.95] = 1/10
    out = coco_map([_det((3, 0, 13, 10, 0, 0.9))], [_gt((0, 0, 10, 10, 0))])
    assert out["map50"] == pytest.approx(1.0, abs=1e-12) and out["map75"] == 0.0
    assert out["map50_95"] == pytest.approx(0.1, abs=1e-12)


def test_a_wrong_class_is_not_a_match():
    assert coco_map([_det((0, 0, 10, 10, 1, 0.9))], [_gt((0, 0, 10, 10, 0))])["map50"] == 0.0


def test_duplicates_count_as_false_positives():
    # two boxes; detections by score: A on box 1 (TP), B duplicate of box 1 (FP), C on box 2 (TP)
    # tp = 1,1,2; fp = 0,1,1; recall .5,.5,1; precision 1, .5, 2/3 -> envelope 1, 2/3, 2/3
    # the 51 recall points 0..0.50 read precision 1, the 50 points 0.51..1 read 2/3: AP = (51 + 50*2/3) / 101
    gts = [_gt((0, 0, 10, 10, 0), (30, 30, 40, 40, 0))]
    dets = [_det((0, 0, 10, 10, 0, 0.9), (0, 0, 10, 10, 0, 0.8), (30, 30, 40, 40, 0, 0.7))]
    assert coco_map(dets, gts)["map50"] == pytest.approx((51 + 50 * 2 / 3) / 101, abs=1e-12)
    # the same duplicate scored below every true detection costs nothing (precision envelope)
    dets = [_det((0, 0, 10, 10, 0, 0.9), (0, 0, 10, 10, 0, 0.6), (30, 30, 40, 40, 0, 0.7))]
    assert coco_map(dets, gts)["map50"] == pytest.approx(1.0, abs=1e-12)


def test_101_point_interpolation():
    # three boxes, detections: TP, FP, TP; the third box is never found
    # recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3 -> envelope 1, 2/3, 2/3
    # points 0..0.33 (34) read 1, 0.34..0.66 (33) read 2/3, 0.67..1 (34) read 0: AP = (34 + 33*2/3)/101 = 56/101
    # (the all-point area under the envelope would be 1/3 + 2/9 = 0.5556; 11-point VOC 0.5455)
    gts = [_gt((0, 0, 10, 10, 0), (20, 0, 30, 10, 0), (40, 0, 50, 10, 0))]
    dets = [_det((0, 0, 10, 10, 0, 0.9), (0, 30, 10, 40, 0, 0.8), (20, 0, 30, 10, 0, 0.7))]
    assert coco_map(dets, gts)["map50"] == pytest.approx(56 / 101, abs=1e-12)


def test_classes_without_ground_truth_are_not_averaged_and_empty_truth_is_an_error():
    gts = [_gt((0, 0, 10, 10, 0))]
    dets = [_det((0, 0, 10, 10, 0, 0.9), (20, 20, 30, 30, 2, 0.95))]  # class 2 has no ground truth
    assert coco_map(dets, gts)["map50"] == pytest.approx(1.0, abs=1e-12)
    from quantzoo.errors import DataError

    with pytest.raises(DataError, match="no ground-truth"):
        coco_map([_det()], [_gt()])


def test_nms_keeps_the_best_of_overlapping_boxes_per_class():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [30, 30, 40, 40]], dtype=torch.float32)
    scores = torch.tensor([0.5, 0.9, 0.8, 0.1])
    labels = torch.tensor([0, 0, 1, 0])
    assert nms(boxes, scores, labels, 0.5).tolist() == [1, 2, 3]  # box 0 overlaps box 1 (IoU 0.82), same class


# -- detector ------------------------------------------------------------------------------------------------
def _ideal_head(target: torch.Tensor, num_classes: int = 4) -> torch.Tensor:
    """The head output that encodes ``target`` exactly (the inverse of yolo.yolo_decode's box coding)."""
    n, g = len(target), shapes.CANVAS // yolo.STRIDE
    out = torch.zeros(n, 5 + num_classes, g, g)
    out[:, 0] = -20.0
    for i, rows in enumerate(target):
        for c, x1, y1, x2, y2 in rows[rows[:, 0] >= 0].tolist():
            cx, cy = (x1 + x2) / 2 / yolo.STRIDE, (y1 + y2) / 2 / yolo.STRIDE
            gx, gy = int(cx), int(cy)
            out[i, 0, gy, gx] = 20.0
            # a centre on a cell border has offset 0: logit(1e-6) puts it 4e-6 px away instead of at -inf
            out[i, 1, gy, gx] = torch.logit(torch.tensor(cx - gx, dtype=torch.float64), eps=1e-6).float()
            out[i, 2, gy, gx] = torch.logit(torch.tensor(cy - gy, dtype=torch.float64), eps=1e-6).float()
            out[i, 3, gy, gx] = float(np.log((x2 - x1) / yolo.ANCHOR))
            out[i, 4, gy, gx] = float(np.log((y2 - y1) / yolo.ANCHOR))
            out[i, 5 + int(c), gy, gx] = 20.0
    return out


def test_detector_forward_shape_backward_and_fx_trace():
    torch.manual_seed(0)
    net = build_model("yolo-tiny", "shapes")
    x = torch.rand(2, 1, 48, 48)
    out = net(x)
    assert out.shape == (2, 9, 12, 12)
    _, y = shapes.generate(2, 0)
    loss = yolo.yolo_loss(out, torch.from_numpy(y))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    gm = torch.fx.symbolic_trace(net)
    assert torch.allclose(gm(x), net(x), atol=1e-6)
    ops = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert sum("add" in o for o in ops) == 2 and sum("cat" in o for o in ops) == 1


def test_decode_of_the_ideal_head_scores_one_and_the_loss_is_lowest_there():
    _, y = shapes.generate(64, 2)
    y = torch.from_numpy(y)
    head = _ideal_head(y)
    assert coco_map(yolo.yolo_decode(head), ground_truth_of(y))["map50_95"] == pytest.approx(1.0, abs=1e-9)
    ideal = yolo.yolo_loss(head, y)
    assert ideal < 0.05 * yolo.yolo_loss(torch.zeros_like(head), y)
    assert ideal < yolo.yolo_loss(head + 0.5 * torch.randn_like(head), y)


def test_harness_scores_each_data_set_by_its_metric():
    assert loss_for("yolo-tiny", "shapes") is yolo.yolo_loss and loss_for("cnn", "digits") is F.cross_entropy
    torch.manual_seed(0)
    s = load_dataset("shapes")
    net = build_model("yolo-tiny", "shapes").eval()
    batches = [(s.test_x[:50], s.test_y[:50])]
    m = evaluate(net, batches, model="yolo-tiny", dataset="shapes")
    assert set(m) == {"accuracy", "map50", "map75", "map50_95"} and m["accuracy"] == 100 * m["map50"]

    class Ideal(torch.nn.Module):  # scored end to end through evaluate: a perfect detector gets 100
        def forward(self, x):
            return _ideal_head(s.test_y[:50])

    assert evaluate(Ideal(), batches, model="yolo-tiny", dataset="shapes")["accuracy"] == pytest.approx(100.0)

    class Broken(torch.nn.Module):
        def forward(self, x):
            return torch.full((len(x), 9, 12, 12), float("nan"))

    with pytest.raises(NonFiniteOutputError):
        evaluate(Broken(), batches, model="yolo-tiny", dataset="shapes")
    d = load_dataset("digits")
    assert set(evaluate(build_model("cnn", "digits"), [(d.test_x, d.test_y)], model="cnn", dataset="digits")) == {
        "accuracy"}


@pytest.mark.slow
def test_detector_fp_baseline_reaches_map50_08(tmp_path):
    """The FP recipe of DEFAULT_BASELINES trains yolo-tiny to mAP@0.5 >= 0.8 (~2-3 min on one thread)."""
    from quantzoo.bench import get_baseline

    base = get_baseline("yolo-tiny", "shapes", 0, cache_dir=tmp_path)
    assert base.task_metrics["map50"] >= 0.8 and base.accuracy == 100 * base.task_metrics["map50"]
    again = get_baseline("yolo-tiny", "shapes", 0, cache_dir=tmp_path)
    assert again.cached and again.task_metrics == base.task_metrics


def test_pow2_scheme_puts_every_tensor_of_the_detector_on_a_power_of_two_grid():
    """The pow2 scheme (Vitis AI / TVM power2) on yolo-tiny with BN folded and every layer at the body's width:
    one signed symmetric scale per tensor, each a power of two, stem and head included."""
    from quantzoo import get_quantizer
    from quantzoo.nn import fold_batch_norms
    from quantzoo.nn.layers import QuantLayerMixin
    from quantzoo.schemes import get_scheme

    torch.manual_seed(0)
    cls = get_quantizer("uniform")
    cfg = cls.apply_scheme(cls.config_for_bits(8, 8), get_scheme("pow2"))
    cfg = cls.make_config({**cfg.model_dump(), "first_layer": "same", "last_layer": "same"})
    net = fold_batch_norms(build_model("yolo-tiny", "shapes"))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    q = cls(cfg)
    prepared = q.prepare(net)
    q.calibrate(prepared, [(torch.rand(8, 1, 48, 48), None)])
    layers = [m for m in q.convert(prepared).modules() if isinstance(m, QuantLayerMixin)]
    assert len(layers) == 11 and all(m.weight_bits == 8 for m in layers)  # all 11 convs
    for m in layers:
        s = m.input_quantizer.scale
        assert s.numel() == 1 and torch.equal(torch.exp2(torch.log2(s).round()), s)
        assert int(m.input_quantizer.zero_point) == 0
        # the weight lies on one signed 8-bit grid whose step is a power of two: w = k * 2^e, |k| <= 128
        w = m.weight.detach()
        k = w / torch.exp2(torch.ceil(torch.log2(w.abs().max() / 127.5)))
        assert torch.equal(k, k.round()) and k.abs().max() <= 128
