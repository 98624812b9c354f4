"""digits-cnn reads real MNIST idx files when given a directory of them."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def write_idx(path: Path, array: np.ndarray) -> None:
    """The MNIST idx format: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.mark.slow
def test_trains_on_mnist_idx_files(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 8x8 (0..16) -> 28x28 (0..255), as MNIST stores them.
    images = np.pad(np.kron(digits.images * 255 / 16, np.ones((3, 3))), ((0, 0), (2, 2), (2, 2)))
    mnist = tmp_path / "mnist"
    mnist.mkdir()
    write_idx(mnist / "train-images-idx3-ubyte.gz", images[:1500])
    write_idx(mnist / "train-labels-idx1-ubyte.gz", digits.target[:1500])
    write_idx(mnist / "t10k-images-idx3-ubyte.gz", images[1500:])
    write_idx(mnist / "t10k-labels-idx1-ubyte.gz", digits.target[1500:])
    out = tmp_path / "out"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ai_how.workloads",
            "digits-cnn",
            "--output",
            str(out),
            "--epochs",
            "3",
            "--mnist-dir",
            str(mnist),
        ],
        check=True,
        capture_output=True,
    )
    result = json.loads((out / "result.json").read_text())
    config = json.loads((out / "model" / "model_config.json").read_text())
    assert result["params"]["dataset"] == "mnist" and result["params"]["train_examples"] == 1500
    assert config["input_shape"] == [1, 28, 28] and config["scale"] == 255.0
    assert result["metrics"]["accuracy"][-1] > 0.8


def test_missing_mnist_file_is_a_workload_error(tmp_path: Path) -> None:
    from ai_how.workloads.common import WorkloadError
    from ai_how.workloads.digits_cnn import load_data

    with pytest.raises(WorkloadError, match="train-images-idx3-ubyte"):
        load_data(tmp_path)
