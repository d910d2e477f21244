"""quantzoo.nn.capture: the inputs/outputs of named layers on calibration data, hooks always removed."""

import pytest
import torch
from torch import nn

from quantzoo.errors import DataError
from quantzoo.nn.capture import capture


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_capture_inputs_and_outputs_match_a_manual_forward():
    m = _model()
    batches = [torch.randn(5, 4), (torch.randn(2, 4), torch.zeros(2))]
    got = capture(m, ["0", "2"], batches)
    x = torch.cat([batches[0], batches[1][0]])
    assert torch.equal(got["0"], x)
    assert torch.allclose(got["2"], torch.relu(m[0](x)))
    out = capture(m, ["2"], batches, outputs=True)["2"]
    assert torch.allclose(out, m(x))
    assert all(not mod._forward_hooks for mod in m.modules())  # hooks removed


class _Skips(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = nn.Linear(2, 2), nn.Linear(2, 2)

    def forward(self, x):
        return self.used(x)


def test_capture_keeps_train_mode_and_names_modules_that_never_ran():
    m = _model().train()
    capture(m, ["0"], [torch.randn(1, 4)])
    assert m.training
    with pytest.raises(DataError, match="'unused'.*never ran"):
        capture(_Skips(), ["used", "unused"], [torch.randn(1, 2)])
    with pytest.raises(DataError, match="empty"):
        capture(m, ["0"], [])
