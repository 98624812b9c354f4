"""digits-cnn: the seed's CNN classifier (MLOPS-1.1) in plain PyTorch.

Data: scikit-learn's bundled 8×8 digits (offline), or real MNIST idx files when
``--mnist-dir`` points at them. A held-out split (20 %) measures accuracy.
Writes ``model/`` (state dict + model_config.json) and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_how.fsutil import atomic_write
from ai_how.workloads.common import WorkloadError, write_json
from ai_how.workloads.options import Option, build_parser
from ai_how.workloads.progress import append_progress

if TYPE_CHECKING:
    import numpy as np

# The job's options, declared once: the parser below and `ai-how pipeline run --set` both read them.
OPTIONS = [
    Option("epochs", "int", 12, "passes over the training data", minimum=1, maximum=1_000_000),
    Option("batch_size", "int", 64, "examples per optimizer step", minimum=1, maximum=65536),
    Option("lr", "float", 1e-3, "Adam learning rate", minimum=1e-8, maximum=10),
    Option(
        "seed",
        "int",
        0,
        "random seed (initial weights, shuffling, augmentation)",
        minimum=0,
        maximum=2**32 - 1,
    ),
    Option("mnist_dir", "path", None, "directory of the four MNIST idx files; default: scikit-learn digits"),
    Option(
        "augment",
        "int",
        0,
        "add N shifted, noisy 32x32 copies of each training image (MNIST-scale benchmark data)",
        minimum=0,
        maximum=100,
    ),
]


def _read_idx(path: Path) -> np.ndarray:
    import numpy as np

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:  # type: ignore[operator]
        raw = handle.read()
    dims = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def _find(directory: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (directory / name).exists():
            return directory / name
    raise WorkloadError(
        f"{stem}[.gz] not found in {directory}", fix="point --mnist-dir at the four MNIST idx files"
    )


def load_data(mnist_dir: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float, str]:
    """(x_train, y_train, x_test, y_test, pixel scale, source name); x is N×1×H×W float32."""
    import numpy as np

    if mnist_dir is not None:
        if not mnist_dir.is_dir():
            raise WorkloadError(
                f"MNIST directory {mnist_dir} does not exist", fix="check --mnist-dir / the dataset path"
            )
        x_tr = _read_idx(_find(mnist_dir, "train-images-idx3-ubyte"))
        y_tr = _read_idx(_find(mnist_dir, "train-labels-idx1-ubyte"))
        x_te = _read_idx(_find(mnist_dir, "t10k-images-idx3-ubyte"))
        y_te = _read_idx(_find(mnist_dir, "t10k-labels-idx1-ubyte"))
        return (
            x_tr[:, None].astype(np.float32),
            y_tr.astype(np.int64),
            x_te[:, None].astype(np.float32),
            y_te.astype(np.int64),
            255.0,
            "mnist",
        )
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32)[:, None]
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    test = index % 5 == 0  # deterministic 80/20 split
    return images[~test], labels[~test], images[test], labels[test], 16.0, "sklearn-digits"


def augment(
    x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, copies: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-scale training data from the 8×8 digits: upscale to 32×32 (×4) and add ``copies`` randomly
    shifted (±2 px), noisy variants of every training image. The held-out images are only upscaled."""
    import numpy as np

    rng = np.random.default_rng(seed)
    up = lambda x: np.kron(x, np.ones((1, 1, 4, 4), np.float32))  # noqa: E731
    base_tr, base_te = up(x_tr), up(x_te)
    variants = [base_tr]
    for _ in range(copies):
        dy, dx = rng.integers(-2, 3, size=2)
        shifted = np.roll(base_tr, (int(dy), int(dx)), axis=(2, 3))
        variants.append(np.clip(shifted + rng.normal(0, 0.5, shifted.shape).astype(np.float32), 0, 16))
    return np.concatenate(variants), np.tile(y_tr, copies + 1), base_te


def dataset_hash(*arrays: np.ndarray) -> str:
    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train on one process, or data parallel (DDP) when started by torchrun: each rank takes a shard of
    every epoch, gradients are averaged by DDP, and loss/accuracy are all-reduced over all ranks."""
    import torch
    from torch import distributed as dist
    from torch import nn

    from ai_how.workloads import cnn
    from ai_how.workloads.common import Distributed

    ddp = Distributed.from_env()
    torch.manual_seed(args.seed)
    device = ddp.device()
    x_tr, y_tr, x_te, y_te, scale, source = load_data(args.mnist_dir)
    if args.augment > 0:
        x_tr, y_tr, x_te = augment(x_tr, y_tr, x_te, args.augment, args.seed)
        source = f"{source}-32px-x{args.augment + 1}"
    mean, std = float((x_tr / scale).mean()), float((x_tr / scale).std())
    config = {
        "arch": "simple-cnn",
        "input_shape": list(x_tr.shape[1:]),
        "num_classes": 10,
        "scale": scale,
        "mean": mean,
        "std": std,
        "dataset": source,
    }
    model: nn.Module = cnn.build(config).to(device)
    if ddp.world_size > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def to_tensor(x: np.ndarray) -> torch.Tensor:
        return ((torch.from_numpy(x) / scale - mean) / std).to(device)

    train_x, train_y = to_tensor(x_tr), torch.from_numpy(y_tr).to(device)
    test_x, test_y = to_tensor(x_te), torch.from_numpy(y_te).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()
    losses, accuracies = [], []
    generator = torch.Generator().manual_seed(args.seed)  # the same permutation on every rank
    start = time.monotonic()
    for epoch in range(args.epochs):
        epoch_start = time.monotonic()
        model.train()
        order = torch.randperm(len(train_x), generator=generator)[ddp.rank :: ddp.world_size].to(device)
        totals = torch.zeros(2, device=device)  # loss sum, batches
        for i in range(0, len(order), args.batch_size):
            idx = order[i : i + args.batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(train_x[idx]), train_y[idx])
            loss.backward()
            optimizer.step()
            totals += torch.stack([loss.detach(), torch.ones((), device=device)])
        model.eval()
        with torch.no_grad():
            shard = slice(ddp.rank, None, ddp.world_size)
            correct = (model(test_x[shard]).argmax(1) == test_y[shard]).sum().float()
            counts = torch.stack([correct, torch.tensor(float(len(test_y[shard])), device=device)])
        if ddp.world_size > 1:  # metrics of the whole job, not rank 0's share
            dist.all_reduce(totals)
            dist.all_reduce(counts)
        losses.append(float(totals[0] / totals[1]))
        accuracies.append(float(counts[0] / counts[1]))
        if ddp.rank == 0:
            print(
                f"epoch {epoch + 1}/{args.epochs} loss {losses[-1]:.4f} held-out accuracy {accuracies[-1]:.4f}",
                flush=True,
            )
            append_progress(
                args.output,
                step=epoch + 1,
                total_steps=args.epochs,
                loss=losses[-1],
                samples_per_second=round(len(x_tr) / max(time.monotonic() - epoch_start, 1e-9), 1),
                epoch=epoch + 1,
                accuracy=accuracies[-1],
            )
    elapsed = time.monotonic() - start
    if ddp.rank == 0:
        out = args.output / "model"
        state = getattr(model, "module", model).state_dict()  # unwrap DDP
        weights = {k: v.cpu() for k, v in state.items()}
        atomic_write(out / "model.pt", lambda handle: torch.save(weights, handle))
        write_json(out / "model_config.json", config)
    ddp.finish()
    samples = len(x_tr) * args.epochs
    return {
        "metrics": {
            "epochs": args.epochs,
            "loss": losses,
            "accuracy": accuracies,
            "training_time_seconds": round(elapsed, 3),
            "world_size": ddp.world_size,
            "samples_per_second": round(samples / elapsed, 1) if elapsed > 0 else 0.0,
        },
        "params": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": args.seed,
            "dataset": source,
            "train_examples": len(x_tr),
            "test_examples": len(x_te),
            "world_size": ddp.world_size,
            "device": str(device.type),
        },
        "dataset_sha256": dataset_hash(x_tr, y_tr, x_te, y_te),
        "kind": "classifier",
    }


def parser() -> argparse.ArgumentParser:
    return build_parser("digits-cnn", __doc__, OPTIONS)
