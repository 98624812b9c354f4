"""Oumi custom evaluation functions (registered in Oumi's registry on import).

- ``ai_how_perplexity``: token perplexity of the model on the assistant turns of a held-out chat JSONL;
- ``ai_how_generation``: answers to prompts through Oumi's inference engine (NATIVE, or REMOTE against
  the deployed endpoint).
"""

from __future__ import annotations

import json
import math
from typing import Any

from oumi.core.registry import register_evaluation_function

# The seed's three prompts (MLOPS-3.2).
SEED_PROMPTS = [
    "Write a short story about",
    "Explain quantum computing in simple terms",
    "Create a haiku about nature",
]


@register_evaluation_function("ai_how_perplexity")
def perplexity(config: Any, model_dir: str, data_path: str, max_examples: int) -> dict[str, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    model.eval()
    limit = getattr(model.config, "max_position_embeddings", 512)
    total_nll, total_tokens, examples = 0.0, 0, 0
    with open(data_path, encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()][:max_examples]
    for row in rows:
        messages = row["messages"]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :limit]
        start = min(len(tokenizer(prompt, add_special_tokens=False)["input_ids"]), ids.shape[1] - 1)
        labels = ids.clone()
        labels[:, :start] = -100  # score the final assistant answer only
        scored = int((labels[:, 1:] != -100).sum())
        if scored == 0:
            continue
        with torch.no_grad():
            loss = model(input_ids=ids, labels=labels).loss
        total_nll += float(loss) * scored
        total_tokens += scored
        examples += 1
    if total_tokens == 0:
        raise ValueError(f"no scorable assistant tokens in {data_path}")
    mean = total_nll / total_tokens
    return {"perplexity": math.exp(mean), "loss": mean, "tokens": total_tokens, "examples": examples}


@register_evaluation_function("ai_how_generation")
def generation(inference_engine: Any, config: Any, prompts: list[str]) -> dict[str, Any]:
    from oumi.core.configs import InferenceConfig
    from oumi.core.types.conversation import Conversation, Message, Role

    conversations = [Conversation(messages=[Message(role=Role.USER, content=p)]) for p in prompts]
    inference = InferenceConfig(
        model=config.model,
        generation=config.generation,
        engine=config.inference_engine,
        remote_params=config.inference_remote_params,
    )
    outputs = inference_engine.infer(conversations, inference)
    answers = [str(out.messages[-1].content or "") for out in outputs]
    return {
        "prompts": len(prompts),
        "nonempty_ratio": sum(1 for a in answers if a.strip()) / max(1, len(answers)),
        "mean_characters": sum(len(a) for a in answers) / max(1, len(answers)),
        "generations": [{"prompt": p, "answer": a} for p, a in zip(prompts, answers, strict=True)],
    }
