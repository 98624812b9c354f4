"""``ai-how evaluate``: evaluate a registered model version with Oumi and log the results to its MLflow run."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.config.loader import LoadedConfig
from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text
from ai_how.layout import Layout
from ai_how.objectstore.base import open_store
from ai_how.objectstore.verified import download_verified
from ai_how.pipeline.inputs import check_model_name
from ai_how.pipeline.operations import production_model
from ai_how.tracking import Tracker, tracking_uri_of


@dataclass
class EvaluationResult:
    model: str
    version: int
    engine: str
    perplexity: dict[str, Any]
    generation: dict[str, Any]
    output_dir: Path
    mlflow_run_id: str


def held_out_split(params: dict[str, str], model_name: str, version: int) -> Path:
    """The held-out split the training run recorded (its ``eval_path`` param). A missing file is an error,
    never a reason to split again: a new split could hold conversations the model was trained on."""
    recorded = params.get("eval_path", "")
    if not recorded:
        raise AiHowError(
            f"the training run of {model_name} v{version} recorded no held-out split (param eval_path)",
            fix="pass --dataset FILE.jsonl with conversations the model was not trained on",
        )
    path = Path(recorded)
    if not path.is_file():
        raise AiHowError(
            f"the held-out split {path} recorded by the training run of {model_name} v{version} is missing; "
            "refusing to score on a new split",
            fix="restore that file, or pass --dataset FILE.jsonl with conversations the model was not trained on",
        )
    return path


def run_evaluation(
    loaded: LoadedConfig,
    state_dir: Path,
    model_name: str,
    *,
    version: int | None = None,
    endpoint: str | None = None,
    dataset: Path | None = None,
    max_examples: int = 50,
    max_new_tokens: int = 32,
) -> EvaluationResult:
    """Perplexity on a held-out split + generation on the seed's prompts; ``endpoint`` uses Oumi's REMOTE engine."""
    check_model_name(model_name)
    config = loaded.config
    layout = Layout(state_dir)
    tracker = Tracker(tracking_uri_of(config), config.mlops.mlflow.experiment)
    model = production_model(tracker, model_name, version)
    if model.kind != "llm":
        raise AiHowError(
            f"{model_name} v{model.version} is a {model.kind}; evaluate handles language models",
            fix="evaluate an llm-sft model",
        )
    run_id = tracker.version_run_id(model_name, model.version)
    data_path = dataset or held_out_split(
        tracker.client.get_run(run_id).data.params, model_name, model.version
    )
    if not data_path.is_file():
        raise AiHowError(f"evaluation data {data_path} does not exist", fix="pass --dataset FILE.jsonl")
    store, prefix = open_store(model.storage_uri, config.mlops.object_store)
    model_dir = layout.serving / "eval-cache" / model_name / f"v{model.version}"
    download_verified(store, prefix, model_dir)
    out = layout.root / "evaluations" / model_name / f"v{model.version}"

    from oumi.core.configs import (
        EvaluationConfig,
        EvaluationTaskParams,
        GenerationParams,
        ModelParams,
        RemoteParams,
    )
    from oumi.core.configs.inference_engine_type import InferenceEngineType
    from oumi.evaluate import evaluate

    from ai_how.evaluation import oumi_tasks  # registers the custom tasks

    engine = InferenceEngineType.REMOTE if endpoint else InferenceEngineType.NATIVE
    eval_config = EvaluationConfig(
        model=ModelParams(model_name=model_name if endpoint else str(model_dir), model_max_length=512),
        generation=GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0),
        inference_engine=engine,
        inference_remote_params=RemoteParams(
            api_url=f"{endpoint.rstrip('/')}/openai/v1/chat/completions", max_retries=2
        )
        if endpoint
        else None,
        tasks=[
            EvaluationTaskParams(
                evaluation_backend="custom",
                task_name="ai_how_perplexity",
                eval_kwargs={
                    "model_dir": str(model_dir),
                    "data_path": str(data_path),
                    "max_examples": max_examples,
                },
            ),
            EvaluationTaskParams(
                evaluation_backend="custom",
                task_name="ai_how_generation",
                eval_kwargs={"prompts": list(oumi_tasks.SEED_PROMPTS)},
            ),
        ],
        output_dir=str(out / "oumi"),
    )
    try:
        results = evaluate(eval_config)
    except Exception as exc:  # Oumi raises plain exceptions; end in one line naming the cause
        raise AiHowError(f"Oumi evaluation failed: {type(exc).__name__}: {exc}") from None
    merged: dict[str, Any] = {}
    for result in results:  # one {"results": {task_name: metrics}} per task
        merged.update(result.get("results", {}))
    ppl, gen = merged["ai_how_perplexity"], merged["ai_how_generation"]
    atomic_write_text(
        out / "results.json", json.dumps({"perplexity": ppl, "generation": gen}, indent=2, default=str) + "\n"
    )
    tracker.log_batch(
        run_id,
        metrics={
            "eval_perplexity": [ppl["perplexity"]],
            "eval_loss": [ppl["loss"]],
            "eval_generation_nonempty_ratio": [gen["nonempty_ratio"]],
        },
        tags={"ai_how.eval_engine": engine.value, "ai_how.eval_data": str(data_path)},
    )
    tracker.client.log_artifacts(run_id, str(out), "evaluation")
    return EvaluationResult(model_name, model.version, engine.value, ppl, gen, out, run_id)
