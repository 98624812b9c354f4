"""Which optional extra of ai-how provides a missing module: one mapping, one message.

``ModuleNotFoundError: No module named 'kserve'`` becomes the one line
``module 'kserve' is not installed: this needs the 'serve' extra: pip install 'ai-how[serve]'``.
"""

from __future__ import annotations

from ai_how.errors import AiHowError

# Top-level import name -> the extra in pyproject.toml that installs it.
EXTRA_OF: dict[str, str] = {
    **dict.fromkeys(
        (
            "torch",
            "transformers",
            "accelerate",
            "trl",
            "datasets",
            "safetensors",
            "tokenizers",
            "sklearn",
            "gguf",
            "oumi",
            "numpy",
        ),
        "train",
    ),
    **dict.fromkeys(("mlflow", "boto3", "botocore", "psycopg2"), "track"),
    **dict.fromkeys(("kserve", "httpx", "prometheus_client"), "serve"),
    **dict.fromkeys(("libvirt", "ansible", "kubernetes"), "infra"),
}


def extra_for(module: str | None) -> str | None:
    """The extra that installs ``module`` (a dotted name is looked up by its top-level package)."""
    if not module:
        return None
    return EXTRA_OF.get(module.split(".", 1)[0])


def missing_extra(exc: ModuleNotFoundError) -> AiHowError | None:
    """A one-line error naming the extra to install, or None when the module belongs to no extra."""
    extra = extra_for(exc.name)
    if extra is None:
        return None
    top = str(exc.name).split(".", 1)[0]
    return AiHowError(
        f"module {top!r} is not installed: this needs the {extra!r} extra: pip install 'ai-how[{extra}]'"
    )
