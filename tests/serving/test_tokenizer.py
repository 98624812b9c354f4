"""The transformers-free tokenizer (serving/engine/tokenizer.py) gives exactly what
``transformers.AutoTokenizer`` gives, for every call the model server makes."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest

from ai_how.serving.engine.tokenizer import Tokenizer, TokenizerUnavailable, load_tokenizer
from tests.serving.llm_fixtures import tiny_llama

FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "config.json")
SMOLLM_VOCAB = 49152  # bench/llm_engine.py: build_smollm extends the tokenizer to this many ids

TEXTS = [
    "hello number 3",
    "hi there 12 and hello number 7",
    "  leading spaces",
    "trailing spaces   ",
    " both ",
    "",
    "héllo wörld, 世界 🙂 ñ",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|im_end|>more <|endoftext|><pad>",
    "Hello , world . it 's fine , isn't it ? yes !",
    "<t5> <t40000> <|eot|> <|x|> <image>",
    "\n\n\ttabs and\r\nnewlines\n",
]

CONVERSATIONS: list[list[dict[str, Any]]] = [
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello number 4"}],
    [{"role": "user", "content": "hi there"}],
    [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "hello number 1"},
        {"role": "assistant", "content": "hi there 1"},
        {"role": "user", "content": 'and 2? <b>&</b> "quoted" 世界'},
    ],
    [
        {"role": "user", "content": "  spaced  "},
        {"role": "assistant", "content": ""},
        {"role": "user", "content": "line\nbreaks\n"},
    ],
]

# A template that uses what transformers' environment provides: special tokens, raise_exception,
# tojson, loop controls, the {% generation %} tag, tools/documents and extra keyword arguments.
RICH_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('bad role: ' + m['role']) }}{% endif %}"
    "{% if m['role'] == 'system' and not loop.first %}{% continue %}{% endif %}"
    "<|im_start|>{{ m['role'] }}\n"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}\n"
    "{% endfor %}"
    "{% if tools is not none %}tools={{ tools | tojson }}\n{% endif %}"
    "{% if documents is defined and documents is not none %}docs={{ documents | tojson(indent=2) }}\n{% endif %}"
    "{% if enable_thinking is defined %}think={{ enable_thinking }}\n{% endif %}"
    "{{ image_token }}|{{ pad_token }}|{{ unk_token }}|{{ messages | tojson }}\n"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _copy(base: Path, out: Path) -> Path:
    out.mkdir(parents=True)
    for name in FILES:
        if (base / name).exists():
            shutil.copy(base / name, out / name)
    return out


def _edit_json(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def _extend_vocab(model: Path) -> None:
    """Extra entries in the BPE model's vocabulary up to SmolLM's size, as build_smollm does."""

    def extend(spec: dict[str, Any]) -> None:
        vocab = spec["model"]["vocab"]
        used = 1 + max([*vocab.values(), *(t["id"] for t in spec.get("added_tokens", []))])
        for i in range(SMOLLM_VOCAB - used):
            vocab[f"<t{i}>"] = used + i

    _edit_json(model / "tokenizer.json", extend)


def _template_in_config(model: Path, as_list: bool) -> None:
    template = (model / "chat_template.jinja").read_text()
    (model / "chat_template.jinja").unlink()
    other = "{% for m in messages %}WRONG {{ m['content'] }}{% endfor %}"
    value: Any = (
        [{"name": "tool_use", "template": other}, {"name": "default", "template": template}]
        if as_list
        else template
    )
    _edit_json(model / "tokenizer_config.json", lambda c: c.update(chat_template=value))


def _token(content: str, **options: bool) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "single_word": False,
    } | options


def _rich_config(model: Path) -> None:
    """An older-style config: added_tokens_decoder (with a token tokenizer.json lacks), AddedToken
    dicts, extra and model-specific special tokens, forced clean-up, add_bos_token (ignored), no
    post-processor, and a template using the whole environment."""

    def config(c: dict[str, Any]) -> None:
        c.update(
            added_tokens_decoder={
                "0": _token("<|endoftext|>", special=True),
                "2": _token("<|im_end|>", special=True),
                str(SMOLLM_VOCAB): _token("<|tool|>", special=False, lstrip=True),
            },
            eos_token={"__type": "AddedToken", **_token("<|eot|>", rstrip=True, special=True)},
            additional_special_tokens=["<|x|>", "<|im_start|>"],
            image_token="<image>",
            add_bos_token=True,
            clean_up_tokenization_spaces=True,
            clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output=True,
            chat_template=RICH_TEMPLATE,
        )

    _extend_vocab(model)
    (model / "chat_template.jinja").unlink()
    _edit_json(model / "tokenizer_config.json", config)
    _edit_json(model / "tokenizer.json", lambda spec: spec.update(post_processor=None))


def _special_tokens_map(model: Path) -> None:
    """No added_tokens_decoder: special_tokens_map.json's tokens (one new, with options) apply, and
    tokenizer.json's non-special "<pad>" becomes special (it is the pad token)."""

    def pad_not_special(spec: dict[str, Any]) -> None:
        for token in spec["added_tokens"]:
            if token["content"] == "<pad>":
                token["special"] = False

    _edit_json(model / "tokenizer.json", pad_not_special)
    (model / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "eos_token": _token("<|eot|>", lstrip=True),
                "pad_token": _token("<pad>", rstrip=True),
                "additional_special_tokens": ["<|x|>"],
            }
        )
    )
    _edit_json(model / "tokenizer_config.json", lambda c: c.update(clean_up_tokenization_spaces=True))


def _config_template(model: Path) -> None:
    _extend_vocab(model)
    _template_in_config(model, as_list=False)


def _config_template_list(model: Path) -> None:
    _extend_vocab(model)
    _template_in_config(model, as_list=True)


VARIANTS: dict[str, Callable[[Path], None]] = {
    "tiny": lambda model: None,
    "extended": _extend_vocab,
    "config-template": _config_template,
    "config-template-list": _config_template_list,
    "rich-config": _rich_config,
    "special-tokens-map": _special_tokens_map,
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def variants(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("variants")
    out = {}
    for name, edit in VARIANTS.items():
        out[name] = _copy(tiny, root / name)
        edit(out[name])
    return out


@pytest.fixture(scope="module")
def loaded(variants: dict[str, Path]) -> Callable[[str], tuple[Any, Tokenizer]]:
    from transformers import AutoTokenizer

    cache: dict[str, tuple[Any, Tokenizer]] = {}

    def get(name: str) -> tuple[Any, Tokenizer]:
        if name not in cache:
            cache[name] = (AutoTokenizer.from_pretrained(variants[name]), load_tokenizer(variants[name]))
        return cache[name]

    return get


@pytest.mark.parametrize("name", VARIANTS)
def test_sizes_and_special_ids(loaded: Callable[[str], tuple[Any, Tokenizer]], name: str) -> None:
    hf, ours = loaded(name)
    assert len(ours) == len(hf)
    assert (ours.eos_token_id, ours.bos_token_id, ours.pad_token_id) == (
        hf.eos_token_id,
        hf.bos_token_id,
        hf.pad_token_id,
    )
    assert (ours.eos_token, ours.bos_token) == (hf.eos_token, hf.bos_token)
    assert ours.eos_token_id is not None


def test_variants_differ_where_expected(loaded: Callable[[str], tuple[Any, Tokenizer]]) -> None:
    """The variants exercise what they claim: a bigger vocabulary, new special tokens."""
    assert len(loaded("tiny")[1]) < SMOLLM_VOCAB == len(loaded("extended")[1])
    rich = loaded("rich-config")[1]
    assert rich.eos_token == "<|eot|>" and rich.eos_token_id is not None and rich.eos_token_id > SMOLLM_VOCAB
    assert len(rich.encode("<|x|>", add_special_tokens=False)) == 1
    assert loaded("special-tokens-map")[1].eos_token == "<|eot|>"


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("add_special_tokens", [False, True])
def test_encode(loaded: Callable[[str], tuple[Any, Tokenizer]], name: str, add_special_tokens: bool) -> None:
    hf, ours = loaded(name)
    for text in TEXTS:
        expected = hf(text, add_special_tokens=add_special_tokens)["input_ids"]
        assert ours(text, add_special_tokens=add_special_tokens)["input_ids"] == expected, text
        assert ours.encode(text, add_special_tokens=add_special_tokens) == expected, text


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("skip_special_tokens", [False, True])
def test_decode(loaded: Callable[[str], tuple[Any, Tokenizer]], name: str, skip_special_tokens: bool) -> None:
    hf, ours = loaded(name)
    rng = random.Random(name)
    specials = sorted({hf.convert_tokens_to_ids(t) for t in hf.all_special_tokens})
    small = min(len(hf), 400)  # the trained BPE ids, where the text is
    sequences = [hf.encode(text, add_special_tokens=False) for text in TEXTS]
    for _ in range(150):
        n = rng.randrange(1, 16)
        ids = [
            rng.choice([rng.randrange(small), rng.randrange(len(hf)), rng.choice(specials)]) for _ in range(n)
        ]
        sequences.append(ids)
    for ids in sequences:
        assert ours.decode(ids, skip_special_tokens=skip_special_tokens) == hf.decode(
            ids, skip_special_tokens=skip_special_tokens
        ), ids
    assert ours.decode(specials[0]) == hf.decode(specials[0])


def test_decode_clean_up(loaded: Callable[[str], tuple[Any, Tokenizer]]) -> None:
    """Forced clean-up removes spaces before punctuation; BPE without the force flag keeps them."""
    text = "Hello , world . it 's fine"
    hf, ours = loaded("rich-config")
    ids = hf.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == hf.decode(ids) == "Hello, world. it's fine"
    hf, ours = loaded("special-tokens-map")  # clean_up_tokenization_spaces=True is ignored for BPE
    ids = hf.encode(text, add_special_tokens=False)
    assert ours.decode(ids) == hf.decode(ids) == text


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_chat_template(
    loaded: Callable[[str], tuple[Any, Tokenizer]], name: str, add_generation_prompt: bool
) -> None:
    hf, ours = loaded(name)
    for messages in CONVERSATIONS:
        expected = hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        rendered = ours.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        assert rendered == expected
        assert messages[-1]["content"] in rendered
        assert rendered.endswith("<|im_start|>assistant\n") == add_generation_prompt


def test_chat_template_environment(loaded: Callable[[str], tuple[Any, Tokenizer]]) -> None:
    """tools, documents and extra keyword arguments reach the template as in transformers."""
    hf, ours = loaded("rich-config")
    tools = [{"type": "function", "function": {"name": "f", "description": "é <b>", "parameters": {}}}]
    documents = [{"title": "t", "text": "ü & <x>"}]
    messages = [*CONVERSATIONS[2], {"role": "system", "content": "skipped by {% continue %}"}]
    for kwargs in ({}, {"tools": tools}, {"documents": documents, "enable_thinking": False}):
        expected = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)
        assert ours.apply_chat_template(messages, add_generation_prompt=True, **kwargs) == expected
        assert "<b>" in expected and "<image>" in expected and "<|im_start|>system\nskipped" not in expected
    # kwargs win over special tokens
    kwargs = {"eos_token": "[END]"}
    assert ours.apply_chat_template(CONVERSATIONS[1], **kwargs) == hf.apply_chat_template(
        CONVERSATIONS[1], tokenize=False, **kwargs
    )


def test_chat_template_raise_exception(loaded: Callable[[str], tuple[Any, Tokenizer]]) -> None:
    hf, ours = loaded("rich-config")
    messages = [{"role": "robot", "content": "beep"}]
    with pytest.raises(jinja2.TemplateError) as expected:
        hf.apply_chat_template(messages, tokenize=False)
    with pytest.raises(jinja2.TemplateError, match="bad role: robot") as raised:
        ours.apply_chat_template(messages)
    assert str(raised.value) == str(expected.value)


def test_no_chat_template(tiny: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    model = _copy(tiny, tmp_path / "model")
    (model / "chat_template.jinja").unlink()
    messages = CONVERSATIONS[1]
    with pytest.raises(ValueError, match="chat_template"):
        AutoTokenizer.from_pretrained(model).apply_chat_template(messages, tokenize=False)
    ours = load_tokenizer(model)
    with pytest.raises(ValueError, match="no chat_template"):
        ours.apply_chat_template(messages)
    assert ours.encode("hello") == AutoTokenizer.from_pretrained(model).encode("hello")


def test_missing_tokenizer_json(tiny: Path, tmp_path: Path) -> None:
    model = _copy(tiny, tmp_path / "model")
    (model / "tokenizer.json").unlink()
    with pytest.raises(TokenizerUnavailable, match=r"tokenizer\.json") as raised:
        load_tokenizer(model)
    assert isinstance(raised.value, ValueError)


def test_model_specific_tokenizer_class_needs_transformers(tiny: Path, tmp_path: Path) -> None:
    """transformers rebuilds a model-specific class's backend: fall back rather than differ."""
    model = _copy(tiny, tmp_path / "specific")
    _edit_json(model / "tokenizer_config.json", lambda c: c.update(tokenizer_class="GPT2Tokenizer"))
    with pytest.raises(TokenizerUnavailable, match="GPT2Tokenizer"):
        load_tokenizer(model)
    model = _copy(tiny, tmp_path / "remote")
    _edit_json(
        model / "tokenizer_config.json", lambda c: c.update(auto_map={"AutoTokenizer": [None, "x.Tok"]})
    )
    with pytest.raises(TokenizerUnavailable, match="auto_map"):
        load_tokenizer(model)
    model = _copy(tiny, tmp_path / "qwen2")
    _edit_json(model / "config.json", lambda c: c.update(model_type="qwen2"))
    with pytest.raises(TokenizerUnavailable, match="qwen2"):
        load_tokenizer(model)


def test_unsupported_template_arguments(loaded: Callable[[str], tuple[Any, Tokenizer]]) -> None:
    ours = loaded("tiny")[1]
    with pytest.raises(ValueError, match="tokenize=True"):
        ours.apply_chat_template(CONVERSATIONS[1], tokenize=True)
    with pytest.raises(ValueError, match="continue_final_message"):
        ours.apply_chat_template(CONVERSATIONS[1], continue_final_message=True)
    with pytest.raises(ValueError, match="empty conversation"):
        ours.apply_chat_template([])


def test_loads_without_transformers_or_torch(variants: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import ai_how.serving.engine.tokenizer as t\n"
        "for d in sys.argv[1:]:\n"
        "    tok = t.load_tokenizer(Path(d))\n"
        "    ids = tok('hello number 2', add_special_tokens=False)['input_ids']\n"
        "    assert tok.decode(ids, skip_special_tokens=True) == 'hello number 2', ids\n"
        "    tok.apply_chat_template([{'role': 'user', 'content': 'hi'}], add_generation_prompt=True)\n"
        "print('transformers' in sys.modules, 'torch' in sys.modules)\n"
    )
    dirs = [str(variants["extended"]), str(variants["rich-config"])]
    out = subprocess.run(
        [sys.executable, "-c", code, *dirs], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["False", "False"], out.stdout + out.stderr
