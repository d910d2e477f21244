"""FP baselines reach published levels (slow: trains on the full data; run with -m slow).

Same check from the CLI: ``quantzoo bench --suite baselines --models "cnn,cnn1d,lenet5"``.
Levels from the harness issue / results.md: MNIST-1D CNN >= 90% (paper 94%), digits CNN >= 97% (measured
99.3±0.5%), MNIST LeNet-5 >= 99.0% (TWN reports 99.41%).
"""

from pathlib import Path

import pytest
import torch

from quantzoo.bench import get_baseline

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.slow
@pytest.mark.parametrize("model,dataset,level", [("cnn", "digits", 97.0), ("cnn1d", "mnist1d", 90.0),
                                                 ("lenet5", "mnist", 99.0)])
def test_fp_baseline_reaches_published_level(model, dataset, level, tmp_path):
    if dataset == "mnist" and not (SHARED / "MNIST" / "raw").exists():
        pytest.skip(f"MNIST IDX files not found under {SHARED}/MNIST/raw")
    torch.set_num_threads(1)
    base = get_baseline(model, dataset, 0, cache_dir=tmp_path)
    print(f"{model}/{dataset}: {base.accuracy:.2f}% in {base.train_s:.1f} s")
    assert base.accuracy >= level
