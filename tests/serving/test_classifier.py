"""The digits classifier batches concurrent requests; the micro-batcher keeps every caller's rows its own.

The model is a real SimpleCNN saved in the format the digits workload writes (random weights, fixed
seed: training adds time and nothing these tests check), applied to scikit-learn's digits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kserve import InferInput, InferRequest, InferResponse
from kserve.errors import InvalidInput

from ai_how.errors import AiHowError
from ai_how.serving.batcher import MicroBatcher
from ai_how.serving.classifier import ClassifierModel
from ai_how.workloads import cnn
from tests.serving.llm_fixtures import digits_cnn


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return digits_cnn(tmp_path_factory.mktemp("digits") / "model")


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images.astype(np.float32)  # (1797, 8, 8), raw scale 0..16


def loaded(model_dir: Path, name: str, **options: Any) -> ClassifierModel:
    model = ClassifierModel(name, model_dir, **options)
    model.load()
    return model


def v2(rows: np.ndarray, request_id: str) -> InferRequest:
    flat = rows.reshape(len(rows), -1)
    tensor = InferInput(name="input-0", shape=list(flat.shape), datatype="FP32", data=flat.ravel().tolist())
    return InferRequest(model_name="digits", infer_inputs=[tensor], request_id=request_id)


def answer(response: Any) -> tuple[list[int], np.ndarray | None]:
    """Labels (and probabilities, for V2) from a V1 dict or a V2 InferResponse."""
    if isinstance(response, InferResponse):
        outputs = {output.name: output for output in response.outputs}
        probs = np.asarray(outputs["probabilities"].data, np.float32).reshape(outputs["probabilities"].shape)
        return list(outputs["predictions"].data), probs
    return response["predictions"], None


def test_concurrent_requests_each_get_their_own_predictions_in_fewer_batches(
    model_dir: Path, pixels: np.ndarray
) -> None:
    model = loaded(model_dir, "digits-concurrent", device="cpu")
    requests: list[tuple[Any, np.ndarray | None]] = []  # (payload, its images; None when malformed)
    start = 0
    for i in range(64):
        count = 1 + i % 3  # 1, 2 or 3 instances
        rows = pixels[start : start + count]
        start += count
        if i in (17, 40):
            requests.append(({"instances": [[1.0] * 10]}, None))  # 10 values, not 64
        elif i == 51:
            requests.append((v2(np.zeros((2, 7), np.float32), f"bad-{i}"), None))
        elif i % 2:
            requests.append((v2(rows, f"r{i}"), rows))
        else:  # V1, as 8×8 images or flat rows of 64
            instances = rows.tolist() if i % 4 else rows.reshape(count, 64).tolist()
            requests.append(({"instances": instances}, rows))

    async def send_all() -> list[Any]:
        return await asyncio.gather(*(model.predict(p) for p, _ in requests), return_exceptions=True)

    responses = asyncio.run(send_all())
    good = 0
    for (payload, rows), response in zip(requests, responses, strict=True):
        if rows is None:
            assert isinstance(response, InvalidInput), response
            assert "64 values" in str(response)
            continue
        assert not isinstance(response, BaseException), response
        labels, probs = answer(response)
        want_labels, want_probs = cnn.classify(model.net, model.config, rows)
        assert labels == want_labels.tolist()
        if probs is not None:
            np.testing.assert_allclose(probs, want_probs, rtol=1e-5, atol=1e-6)
            assert response.id == payload.id
        good += 1
    assert good == 61
    assert len({label for r in responses if isinstance(r, dict) for label in r["predictions"]}) > 1
    assert model.batcher.batches < good  # requests shared forward passes
    assert model.batcher.rows == sum(len(rows) for _, rows in requests if rows is not None)
    assert model.batcher.largest_batch <= 64


def test_kserve_awaits_the_async_predict(model_dir: Path, pixels: np.ndarray) -> None:
    """``Model.__call__`` (what KServe's dataplane runs per request) awaits the coroutine."""
    model = loaded(model_dir, "digits-call", device="cpu")
    response, _ = asyncio.run(model({"instances": pixels[:3].tolist()}))
    assert response == {"predictions": cnn.classify(model.net, model.config, pixels[:3])[0].tolist()}


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"inputs": []}, "V1 request must be"),
        ([1, 2, 3], "V1 request must be"),
        ({"instances": []}, "no instances"),
        ({"instances": [[1.0, 2.0]]}, "each instance must have 64 values"),
        ({"instances": [["a"] * 64]}, "instances must be numbers"),
        ({"instances": [[1.0] * 64, [1.0] * 3]}, "instances must be numbers"),
        (InferRequest(model_name="digits", infer_inputs=[]), "V2 request has no inputs"),
        (
            InferRequest("digits", [InferInput("input-0", [2, 64], "FP32", [0.0] * 64)]),
            "does not fill its shape [2, 64]",
        ),
    ],
)
def test_malformed_requests_are_one_clear_invalid_input(model_dir: Path, payload: Any, message: str) -> None:
    model = loaded(model_dir, "digits-bad", device="cpu")
    with pytest.raises(InvalidInput) as bad:
        asyncio.run(model.predict(payload))
    assert message in str(bad.value)
    assert model.batcher.batches == 0  # it never reached a batch


def test_cuda_without_a_gpu_fails_at_load_with_one_clear_message(model_dir: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    model = ClassifierModel("digits-cuda", model_dir, device="cuda")
    with pytest.raises(AiHowError) as no_gpu:
        model.load()
    assert "device 'cuda' was asked for but torch" in str(no_gpu.value)
    assert "sees no CUDA GPU" in str(no_gpu.value)
    assert no_gpu.value.fix is not None and "'auto'" in no_gpu.value.fix
    assert not model.ready
    assert loaded(model_dir, "digits-auto").device == "cpu"  # 'auto' falls back to the CPU


def test_an_unknown_device_is_refused_before_loading(model_dir: Path) -> None:
    with pytest.raises(AiHowError, match="unknown device 'gpu'") as bad:
        ClassifierModel("digits", model_dir, device="gpu")
    assert bad.value.fix is not None and "'cuda:N'" in bad.value.fix


@pytest.mark.live
def test_auto_serves_on_the_gpu_with_the_cpu_answers(model_dir: Path, pixels: np.ndarray) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    model = loaded(model_dir, "digits-gpu")
    assert model.device == "cuda" and next(model.net.parameters()).is_cuda
    cpu_net, config = cnn.load(model_dir)

    async def send() -> list[Any]:
        return await asyncio.gather(*(model.predict(v2(pixels[i : i + 2], str(i))) for i in range(0, 64, 2)))

    for i, response in zip(range(0, 64, 2), asyncio.run(send()), strict=True):
        labels, probs = answer(response)
        want_labels, want_probs = cnn.classify(cpu_net, config, pixels[i : i + 2])
        assert labels == want_labels.tolist()
        np.testing.assert_allclose(probs, want_probs, atol=1e-4)


# --------------------------------------------------------------------------- the batcher alone


class Gate:
    """A batch function that records each batch and holds the first one until released."""

    def __init__(self, fn: Callable[[np.ndarray], Any] = lambda x: x * 2) -> None:
        self.fn = fn
        self.started = threading.Event()
        self.release = threading.Event()
        self.batches: list[int] = []

    def __call__(self, x: np.ndarray) -> Any:
        self.batches.append(len(x))
        self.started.set()
        assert self.release.wait(30), "the test never released the first batch"
        return self.fn(x)

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, 30), "the first batch never started"


def test_each_caller_gets_its_own_rows_in_order() -> None:
    batcher = MicroBatcher(lambda x: (x.sum(1), x * 10), model="own-rows")
    arrays = [
        np.arange(n * 3, dtype=np.float64).reshape(n, 3) + 100 * i for i, n in enumerate([1, 3, 2, 1, 5])
    ]

    async def go() -> list[Any]:
        return await asyncio.gather(*(batcher.submit(a) for a in arrays))

    for array, (sums, scaled) in zip(arrays, asyncio.run(go()), strict=True):
        np.testing.assert_array_equal(sums, array.sum(1))
        np.testing.assert_array_equal(scaled, array * 10)
    assert (batcher.batches, batcher.rows, batcher.largest_batch) == (1, 12, 12)


def test_a_lone_request_runs_at_once_and_later_ones_collect_while_it_runs() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, model="continuous")

    async def go() -> list[Any]:
        first = asyncio.create_task(batcher.submit(np.ones((1, 2))))
        await gate.wait_started()  # it ran with nobody else: no waiting for company
        later = [asyncio.create_task(batcher.submit(np.full((n, 2), n))) for n in (1, 2, 3)]
        await asyncio.sleep(0)
        assert batcher.pending == 3
        gate.release.set()
        return await asyncio.gather(first, *later)

    results = asyncio.run(go())
    assert gate.batches == [1, 6]  # everything that arrived meanwhile went as the next batch
    for n, result in zip((1, 2, 3), results[1:], strict=True):
        np.testing.assert_array_equal(result, np.full((n, 2), 2 * n))
    assert batcher.pending == 0


def test_max_batch_caps_the_rows_of_a_batch_and_a_larger_request_runs_alone() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, max_batch=4, model="max-batch")

    async def go() -> list[Any]:
        first = asyncio.create_task(batcher.submit(np.zeros((1, 1))))
        await gate.wait_started()
        sizes = (2, 2, 1, 6, 3)
        later = [asyncio.create_task(batcher.submit(np.full((n, 1), n))) for n in sizes]
        await asyncio.sleep(0)
        gate.release.set()
        return await asyncio.gather(first, *later)

    results = asyncio.run(go())
    # [2, 2] fills 4; 1 and 3 fit together after the 6-row request, which is never split.
    assert gate.batches == [1, 4, 4, 6]
    assert [len(r) for r in results] == [1, 2, 2, 1, 6, 3]
    assert all((r[1:] == 2 * len(r)).all() for r in results[1:])
    assert batcher.largest_batch == 6


def test_an_error_in_fn_fails_only_the_callers_of_that_batch() -> None:
    def fn(x: np.ndarray) -> np.ndarray:
        if (x < 0).any():
            raise ArithmeticError("negative pixel")
        return x + 1

    gate = Gate(fn)
    batcher = MicroBatcher(gate, model="errors")

    async def go() -> list[Any]:
        first = asyncio.create_task(batcher.submit(np.zeros((1, 2))))
        await gate.wait_started()
        poisoned = [asyncio.create_task(batcher.submit(np.full((1, 2), v))) for v in (-1.0, 5.0)]
        await asyncio.sleep(0)
        gate.release.set()
        results = await asyncio.gather(first, *poisoned, return_exceptions=True)
        after = await batcher.submit(np.full((2, 2), 7.0))  # the next batch runs as usual
        return [*results, after]

    first, bad, neighbour, after = asyncio.run(go())
    np.testing.assert_array_equal(first, np.ones((1, 2)))
    assert isinstance(bad, ArithmeticError) and isinstance(neighbour, ArithmeticError)  # same batch
    np.testing.assert_array_equal(after, np.full((2, 2), 8.0))
    assert gate.batches == [1, 2, 2]


def test_a_batch_function_returning_the_wrong_rows_is_an_error_not_a_mixup() -> None:
    batcher = MicroBatcher(lambda x: x[:1], model="wrong-rows")

    async def go() -> list[Any]:
        return await asyncio.gather(
            *(batcher.submit(np.ones((2, 2))) for _ in range(2)), return_exceptions=True
        )

    for result in asyncio.run(go()):
        assert isinstance(result, RuntimeError)
        assert "returned 1 rows for 4 input rows" in str(result)


def test_rows_of_different_shapes_never_share_a_batch() -> None:
    gate = Gate(lambda x: x.sum(1))
    batcher = MicroBatcher(gate, model="shapes")

    async def go() -> list[Any]:
        first = asyncio.create_task(batcher.submit(np.ones((1, 3))))
        await gate.wait_started()
        later = [
            asyncio.create_task(batcher.submit(np.ones((1, n), dtype=dtype)))
            for n, dtype in ((4, np.float64), (3, np.float64), (4, np.float64), (4, np.float32))
        ]
        await asyncio.sleep(0)
        gate.release.set()
        return await asyncio.gather(first, *later)

    assert [float(r[0]) for r in asyncio.run(go())] == [3.0, 4.0, 3.0, 4.0, 4.0]
    assert gate.batches == [1, 2, 1, 1]  # the two float64 rows of 4 together, then 3, then float32


def test_empty_and_cancelled_submissions() -> None:
    gate = Gate()
    batcher = MicroBatcher(gate, model="edges")

    async def go() -> None:
        for bad in (np.zeros((0, 3)), np.float64(1.0), [[1.0, 2.0]]):
            with pytest.raises(ValueError, match="at least one row"):
                await batcher.submit(bad)  # type: ignore[arg-type]
        assert batcher.batches == 0 and batcher.pending == 0
        first = asyncio.create_task(batcher.submit(np.ones((1, 1))))
        await gate.wait_started()
        gone = asyncio.create_task(batcher.submit(np.ones((5, 1))))
        kept = asyncio.create_task(batcher.submit(np.ones((2, 1))))
        await asyncio.sleep(0)
        gone.cancel()  # its client went away before its batch ran
        gate.release.set()
        await first
        np.testing.assert_array_equal(await kept, np.full((2, 1), 2.0))
        assert gone.cancelled()

    asyncio.run(go())
    assert gate.batches == [1, 2]  # the cancelled rows never ran
    # A batcher left idle serves a later event loop as well.
    np.testing.assert_array_equal(asyncio.run(batcher.submit(np.ones((1, 1)))), [[2.0]])
    assert (batcher.batches, batcher.pending) == (3, 0)


def test_max_wait_holds_an_idle_batch_until_max_batch_rows_arrive() -> None:
    batcher = MicroBatcher(lambda x: x, max_batch=3, max_wait_s=300.0, model="max-wait")

    async def go() -> list[Any]:
        first = asyncio.create_task(batcher.submit(np.ones((1, 1))))
        for _ in range(5):
            await asyncio.sleep(0)
        assert batcher.batches == 0  # still waiting for company
        second = asyncio.create_task(batcher.submit(np.ones((2, 1))))  # 3 rows: go now
        return await asyncio.gather(first, second)

    assert [len(r) for r in asyncio.run(go())] == [1, 2]
    assert (batcher.batches, batcher.largest_batch) == (1, 3)


def test_batch_sizes_reach_the_prometheus_histogram() -> None:
    from prometheus_client import REGISTRY

    batcher = MicroBatcher(lambda x: x, model="histogram-test")

    async def go() -> None:
        await asyncio.gather(*(batcher.submit(np.ones((2, 1))) for _ in range(3)))
        await batcher.submit(np.ones((1, 1)))

    asyncio.run(go())
    labels = {"model": "histogram-test"}
    assert REGISTRY.get_sample_value("ai_how_batch_size_count", labels) == 2
    assert REGISTRY.get_sample_value("ai_how_batch_size_sum", labels) == 7
    assert REGISTRY.get_sample_value("ai_how_batch_size_bucket", {**labels, "le": "4.0"}) == 1
