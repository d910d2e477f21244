"""The onnxruntime backend computes what the QCDQ graph says: on the zoo's CNN on digits its output is within
1 LSB of the PyTorch QCDQ model's at W8A8 and W4A4; integer (token id) inputs keep their dtype; errors from
onnxruntime come back as quantzoo errors.

``python plugins/quantzoo-plugin-brevitas/tests/test_onnxruntime_backend.py`` prints the README's table: the
largest difference in LSB of the output quantizer, the SQNR and the top-1 agreement on the 360 digits test
images, for the backend and for an onnxruntime session with its default optimizations (Q/DQ fused into
QLinearConv). No timing.
"""

import pytest
import torch
from torch import nn

from quantzoo import get_backend
from quantzoo.datasets import load_digits_splits
from quantzoo.errors import DataError
from quantzoo.bench.data import build_model
from quantzoo_plugin_brevitas import BrevitasPTQ, QuantIdentity

pytest.importorskip("onnxruntime")
torch.set_num_threads(1)


def _digits_cnn_with_output_quantizer():
    """The zoo's ``cnn`` (random weights, BN statistics set from the digits training images) followed by an
    8-bit output quantizer, whose step is the LSB of the comparison."""
    torch.manual_seed(0)
    splits = load_digits_splits()
    cnn = build_model("cnn", "digits")
    cnn.train()
    with torch.no_grad():
        for i in range(0, 512, 64):
            cnn(splits.train_x[i:i + 64])
    return nn.Sequential(cnn, QuantIdentity()).eval(), splits


def _lowered_digits_cnn(bits):
    """brevitas-ptq at W``bits``A``bits`` calibrated on 256 training images: (converted, lowered, test images)."""
    model, splits = _digits_cnn_with_output_quantizer()
    q = BrevitasPTQ(BrevitasPTQ.config_for_bits(bits, bits))
    calib = [splits.train_x[i:i + 64] for i in range(0, 256, 64)]
    converted = q.convert(q.calibrate(q.prepare(model), calib))
    return converted, get_backend("onnxruntime").lower(converted, calib[0]), splits.test_x


@pytest.mark.parametrize("bits", [8, 4])
def test_onnxruntime_matches_pytorch_qcdq_within_one_lsb(bits):
    converted, lowered, x = _lowered_digits_cnn(bits)
    with torch.no_grad():
        ref = converted(x)
    out = lowered(x)
    step = converted[1].act_quant.qparams()[0]
    lsb = ((out - ref).abs() / step).max().item()
    assert lsb <= 1.0 + 1e-4, f"W{bits}A{bits}: onnxruntime is {lsb:.2f} LSB away from the PyTorch QCDQ model"
    # every node ran as exported: float Conv/Gemm between Q/DQ pairs, no fused integer kernels
    ops = lowered.ops
    assert ops["Conv"] == 3 and ops["Gemm"] == 1 and ops["QuantizeLinear"] == ops["DequantizeLinear"] > 0
    assert not any(op.startswith(("QLinear", "ConvInteger", "MatMulInteger")) for op in ops)


class _TokenClassifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(30, 8)
        self.fc = nn.Linear(5 * 8, 4)

    def forward(self, ids):
        return self.fc(self.emb(ids).flatten(1))


def test_int64_token_inputs_keep_their_dtype():
    torch.manual_seed(0)
    ids = torch.randint(0, 30, (16, 5))
    q = BrevitasPTQ()
    converted = q.convert(q.calibrate(q.prepare(_TokenClassifier().eval()), [ids[:8], ids[8:]]))
    lowered = get_backend("onnxruntime").lower(converted, ids)
    with torch.no_grad():
        ref = converted(ids)
    assert torch.allclose(lowered(ids), ref, rtol=1e-5, atol=1e-6)
    assert ids.dtype == torch.int64
    with pytest.raises(DataError, match="integer tensor"):
        lowered(ids.float())


def test_onnxruntime_errors_are_quantzoo_errors():
    model, splits = _digits_cnn_with_output_quantizer()
    q = BrevitasPTQ()
    converted = q.convert(q.calibrate(q.prepare(model), [splits.train_x[:64]]))
    lowered = get_backend("onnxruntime").lower(converted, splits.train_x[:1])
    with pytest.raises(DataError, match="onnxruntime rejected the input") as err:
        lowered(torch.zeros(2, 1, 9, 9))
    assert err.value.__cause__ is not None
    with pytest.raises(DataError, match="takes 1 input"):
        lowered(splits.train_x[:1], splits.train_x[:1])


def main():
    import onnxruntime as ort

    print(f"onnxruntime {ort.__version__}")
    print("| setting | session | max \\|Δ\\| (LSB) | SQNR (dB) | top-1 agreement |")
    print("|---|---|---|---|---|")
    for bits in (8, 4):
        converted, lowered, x = _lowered_digits_cnn(bits)
        with torch.no_grad():
            ref = converted(x)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        default = ort.InferenceSession(lowered.onnx_bytes, opts, providers=["CPUExecutionProvider"])
        outs = {"backend (optimizations off)": lowered(x),
                "onnxruntime defaults": torch.from_numpy(default.run(None, {"input": x.numpy()})[0])}
        step = converted[1].act_quant.qparams()[0]
        for name, out in outs.items():
            sqnr = 10 * torch.log10(ref.pow(2).sum() / (out - ref).pow(2).sum().clamp_min(1e-30)).item()
            agree = (out.argmax(1) == ref.argmax(1)).float().mean().item()
            print(f"| W{bits}A{bits} | {name} | {((out - ref).abs() / step).max().item():.0f} | {sqnr:.1f} | "
                  f"{100 * agree:.1f}% |")


if __name__ == "__main__":
    main()
