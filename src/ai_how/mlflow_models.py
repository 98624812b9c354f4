"""MLflow Models of what ai-how trains: the digits CNN as a pyfunc, the LLM as an MLflow transformers model.

Both are saved from the training output directory without touching the network, with a
signature, an input example and ``ai_how_manifest.json`` (path → sha256, size of every file
of the MLflow model). The digits pyfunc is loaded by this module (``loader_module``), so
``mlflow.pyfunc.load_model`` and ``mlflow models serve --env-manager local`` need only the
installed ai-how package; it preprocesses exactly as the KServe runtime does.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ai_how.errors import AiHowError
from ai_how.objectstore.manifest import Manifest

if TYPE_CHECKING:
    import numpy as np

MANIFEST_NAME = "ai_how_manifest.json"
CLASSIFIER, LLM = "classifier", "llm"
KINDS = (CLASSIFIER, LLM)
LLM_MAX_NEW_TOKENS = 32  # the KServe runtime's default
# Written by MLflow itself when it downloads a registered version (`models:/NAME@alias`).
DOWNLOAD_METADATA = frozenset({"registered_model_meta"})


class ModelFormatError(AiHowError):
    pass


# --------------------------------------------------------------------------- digits CNN (pyfunc)


class DigitsPyfunc:
    """The digits CNN behind ``mlflow.pyfunc``: raw pixels in, a ``prediction`` + ``probabilities`` frame out."""

    def __init__(self, model_dir: Path) -> None:
        from ai_how.workloads import cnn

        self.net, self.config = cnn.load(model_dir)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> Any:
        """Classify a DataFrame / array / nested list of raw pixel rows."""
        from mlflow.exceptions import MlflowException

        from ai_how.workloads import cnn

        pd = importlib.import_module("pandas")  # untyped; always installed with mlflow
        rows = model_input.to_numpy() if isinstance(model_input, pd.DataFrame) else model_input
        try:
            labels, probs = cnn.classify(self.net, self.config, rows)
        except ValueError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        return pd.DataFrame({"prediction": labels, "probabilities": list(probs)})


def _load_pyfunc(data_path: str) -> DigitsPyfunc:
    """MLflow's ``loader_module`` entry point: the pyfunc of the model directory saved under ``data/``."""
    return DigitsPyfunc(Path(data_path))


def _pixels(config: dict[str, Any]) -> int:
    return math.prod(int(n) for n in config["input_shape"])


def digits_signature(config: dict[str, Any]) -> Any:
    """Input: float32 rows of raw pixels; output: the predicted class and the class probabilities."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, Schema, TensorSpec
    from mlflow.types.schema import Array

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, _pixels(config)))]),
        outputs=Schema(
            [ColSpec(DataType.long, "prediction"), ColSpec(Array(DataType.float), "probabilities")]
        ),
    )


def digits_input_example(config: dict[str, Any]) -> np.ndarray:
    """Two raw-pixel rows: real digits for the bundled 8×8 data, blank images for other sizes."""
    import numpy as np

    if list(config["input_shape"]) == [1, 8, 8]:
        try:
            from sklearn.datasets import load_digits
        except ImportError:  # scikit-learn comes with the train extra; the example is only illustrative
            pass
        else:
            return np.asarray(load_digits().data[:2], dtype=np.float32)
    return np.zeros((2, _pixels(config)), dtype=np.float32)


def save_classifier(model_dir: Path, dest: Path, mlflow_model: Any) -> None:
    """Save the digits CNN directory as a pyfunc model loaded by this module."""
    import mlflow.pyfunc

    config = json.loads((model_dir / "model_config.json").read_text())
    mlflow.pyfunc.save_model(
        str(dest),
        loader_module=__name__,
        data_path=str(model_dir),
        mlflow_model=mlflow_model,
        signature=digits_signature(config),
        input_example=digits_input_example(config),
        pip_requirements=_requirements("ai-how", "torch", "numpy", "pandas"),  # ai-how: the loader
    )


# --------------------------------------------------------------------------- LLM (transformers flavour)


def llm_signature() -> Any:
    """Prompts in, generated text (without the prompt) out; generation length and sampling as params."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, DataType, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec(DataType.string)]),
        outputs=Schema([ColSpec(DataType.string)]),
        params=ParamSchema(
            [
                ParamSpec("max_new_tokens", DataType.long, LLM_MAX_NEW_TOKENS),
                ParamSpec("do_sample", DataType.boolean, False),
            ]
        ),
    )


@contextlib.contextmanager
def _quiet_model_card() -> Iterator[None]:
    """Silence MLflow's warnings that a local checkpoint has no Hugging Face Hub model card or licence."""
    logger = logging.getLogger("mlflow.transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def save_llm(model_dir: Path, dest: Path, mlflow_model: Any) -> None:
    """Save an HF causal-LM directory (weights copied byte for byte, tokenizer as a component) offline."""
    import mlflow.transformers

    if not (model_dir / "config.json").exists():
        raise ModelFormatError(
            f"{model_dir} is not a Hugging Face model directory (no config.json)",
            fix="log the `model/` directory the llm-sft workload wrote",
        )
    with _quiet_model_card():
        # An absolute path is never taken for a Hub repository id, so nothing is fetched.
        mlflow.transformers.save_model(
            str(model_dir.resolve()),
            str(dest),
            task="text-generation",
            mlflow_model=mlflow_model,
            signature=llm_signature(),
            input_example=["Hello, how are you?"],
            model_config={
                "max_new_tokens": LLM_MAX_NEW_TOKENS,
                "do_sample": False,
                "return_full_text": False,
            },
            pip_requirements=_requirements("torch", "transformers", "tokenizers", "safetensors"),
        )


# --------------------------------------------------------------------------- common


def _requirements(*packages: str) -> list[str]:
    """Pinned requirements of the packages installed here (no inference: that would load the model)."""
    pins = []
    for name in ("mlflow", *packages):
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def save(
    kind: str, model_dir: Path, dest: Path, mlflow_model: Any = None, model_sha256: str | None = None
) -> Manifest:
    """Save ``model_dir`` (a training output) as an MLflow Model at ``dest``; returns the manifest written.

    ``model_sha256`` (the training output's manifest digest) is recorded in the manifest's meta.
    """
    if kind not in KINDS:
        raise ModelFormatError(f"unknown model kind {kind!r}", fix=f"use one of: {', '.join(KINDS)}")
    if not model_dir.is_dir():
        raise ModelFormatError(f"model directory {model_dir} does not exist", fix="run the train stage first")
    digest = model_sha256 or Manifest.of_directory(model_dir).digest
    (save_classifier if kind == CLASSIFIER else save_llm)(model_dir, dest, mlflow_model)
    return write_manifest(dest, {"kind": kind, "model_sha256": digest})


def write_manifest(root: Path, meta: dict[str, Any]) -> Manifest:
    """Write ``ai_how_manifest.json``: sha256 and size of every other file under ``root``."""
    from ai_how.fsutil import atomic_write

    manifest = Manifest.of_directory(root, meta)
    manifest.files.pop(MANIFEST_NAME, None)
    data = manifest.to_bytes()
    atomic_write(root / MANIFEST_NAME, lambda handle: handle.write(data))
    return manifest


def verify_manifest(root: Path) -> list[str]:
    """Files under ``root`` that differ from ``ai_how_manifest.json`` (missing, changed or extra); [] if intact.

    ``registered_model_meta``, which MLflow adds when it downloads a registered version, is not an extra.
    """
    path = root / MANIFEST_NAME
    if not path.is_file():
        return [f"{MANIFEST_NAME} is missing"]
    recorded = Manifest.from_bytes(path.read_bytes(), str(path))
    actual = Manifest.of_directory(root)
    actual.files.pop(MANIFEST_NAME, None)
    problems = [f"{rel}: missing" for rel in recorded.files if rel not in actual.files]
    problems += [
        f"{rel}: sha256 differs"
        for rel, entry in recorded.files.items()
        if rel in actual.files and actual.files[rel].sha256 != entry.sha256
    ]
    problems += [
        f"{rel}: not in the manifest"
        for rel in actual.files
        if rel not in recorded.files and rel not in DOWNLOAD_METADATA
    ]
    return problems
