"""An LLM's tokenizer without transformers: ``tokenizer.json`` through the ``tokenizers`` library and
the chat template through jinja2, loaded and applied as ``transformers.AutoTokenizer`` does.

Why it exists: the model server's HTTP processes need only the tokenizer (the weights live in the
engine's process), and importing transformers (and with it torch) costs seconds of cold start and
hundreds of MB per HTTP process. Nothing here imports transformers or torch.

It covers what the server calls: ``len``, ``tok(text, add_special_tokens=...)["input_ids"]``,
``encode``, ``decode``, ``eos_token_id`` / ``bos_token_id`` and
``apply_chat_template(messages, tokenize=False, add_generation_prompt=...)``. A checkpoint it cannot
load exactly as transformers would (no ``tokenizer.json``, or a model-specific tokenizer class that
transformers rebuilds from the vocabulary) raises ``TokenizerUnavailable``: use transformers then.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import AddedToken, processors
from tokenizers import Tokenizer as Backend

__all__ = ["Tokenizer", "TokenizerUnavailable", "load_tokenizer"]

# transformers' named special tokens (PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES), in order.
NAMED_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Classes AutoTokenizer loads as TokenizersBackend: tokenizer.json as saved, no rebuilding.
GENERIC_CLASSES = ("TokenizersBackend", "PreTrainedTokenizerFast")
# Model types whose hub tokenizer_class AutoTokenizer overrides with a model-specific class
# (transformers' MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS entries that map to one).
OVERRIDDEN_MODEL_TYPES = ("qwen2",)
# apply_chat_template arguments that only matter when transformers tokenizes the rendered text.
TOKENIZE_ONLY = ("return_dict", "padding", "truncation", "max_length", "return_tensors", "tokenizer_kwargs")

Token = str | AddedToken


class TokenizerUnavailable(ValueError):
    """This checkpoint's tokenizer needs transformers (the message says which file or setting)."""


class Tokenizer:
    """The calls of a transformers fast tokenizer that the model server makes, with the same results."""

    def __init__(
        self,
        backend: Backend,
        special_tokens: Mapping[str, str],
        chat_template: str | dict[str, str] | None,
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self.backend = backend
        self.special_tokens_map = dict(special_tokens)  # name -> content, what templates see
        self.chat_template = chat_template
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.bos_token = self.special_tokens_map.get("bos_token")
        self.eos_token = self.special_tokens_map.get("eos_token")
        self.pad_token = self.special_tokens_map.get("pad_token")
        self.unk_token = self.special_tokens_map.get("unk_token")
        self.unk_token_id = self._token_id(self.unk_token)
        self.bos_token_id = self._token_id(self.bos_token)
        self.eos_token_id = self._token_id(self.eos_token)
        self.pad_token_id = self._token_id(self.pad_token)

    def _token_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        found = self.backend.token_to_id(token)  # loading added every special token
        return None if found is None else int(found)

    def __len__(self) -> int:
        """The whole vocabulary, added tokens included."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self.backend.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str:
        token_ids = [ids] if isinstance(ids, int) else ids if isinstance(ids, list) else list(ids)
        text: str = self.backend.decode(token_ids, skip_special_tokens=skip_special_tokens)
        return _clean_up(text) if self.clean_up_tokenization_spaces else text

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        tokenize: bool = False,
        add_generation_prompt: bool = False,
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> str:
        """The conversation rendered by the model's chat template, as transformers renders it."""
        if tokenize:
            raise ValueError("apply_chat_template(tokenize=True) is not supported: encode the rendered text")
        for name in ("continue_final_message", "return_assistant_tokens_mask"):
            if kwargs.pop(name, False):
                raise ValueError(f"apply_chat_template({name}=...) is not supported without transformers")
        for name in TOKENIZE_ONLY:
            kwargs.pop(name, None)
        if not messages:
            raise ValueError(
                "Cannot apply chat template to an empty conversation. Provide at least one message."
            )
        if tools is not None and not all(isinstance(tool, Mapping) for tool in tools):
            raise ValueError("tools must be JSON schemas (dicts) without transformers")
        if documents is not None and not all(isinstance(doc, Mapping) for doc in documents):
            raise TypeError("Documents should be a list of dicts with 'title' and 'text' keys!")
        template = _compile(self._template(chat_template, tools))
        variables = {**self.special_tokens_map, **kwargs}  # kwargs win over special tokens
        return template.render(
            messages=messages,
            tools=tools,
            documents=documents,
            add_generation_prompt=add_generation_prompt,
            **variables,
        )

    def _template(self, name: str | None, tools: object) -> str:
        """The template to render (transformers' ``get_chat_template``)."""
        if isinstance(self.chat_template, dict):
            if name is not None:
                return self.chat_template.get(name, name)
            if tools is not None and "tool_use" in self.chat_template:
                return self.chat_template["tool_use"]
            if "default" in self.chat_template:
                return self.chat_template["default"]
            raise ValueError(
                "this model has several chat templates and none named 'default'; pass chat_template= one "
                f"of {sorted(self.chat_template)}"
            )
        if name is not None:
            return name
        if self.chat_template is None:
            raise ValueError(
                "Cannot use chat template functions: this model's tokenizer has no chat_template"
            )
        return self.chat_template


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """The tokenizer of an HF model directory, as ``AutoTokenizer.from_pretrained(model_dir)`` loads it."""
    model_dir = Path(model_dir)
    path = model_dir / "tokenizer.json"
    if not path.is_file():
        raise TokenizerUnavailable(f"{path} not found: this tokenizer needs transformers to load")
    config: dict[str, Any] = _read_json(model_dir / "tokenizer_config.json")
    _check_generic(model_dir, config)
    backend = Backend.from_file(str(path))
    special, extra = _special_tokens(config, model_dir / "special_tokens_map.json")
    added = _added_tokens(config, backend, model_dir / "added_tokens.json", special, extra)
    _add_missing_tokens(backend, added, special, extra)
    backend.encode_special_tokens = bool(config.get("split_special_tokens", False))
    backend.no_truncation()  # transformers truncates and pads only when asked to
    backend.no_padding()
    if backend.post_processor is None:  # add_bos/eos_token are dropped when tokenizer.json exists
        backend.post_processor = processors.TemplateProcessing(
            single="$A:0", pair="$A:0 $B:1", special_tokens=[]
        )
    clean_up = bool(config.get("clean_up_tokenization_spaces", False)) and (
        type(backend.model).__name__ != "BPE"  # transformers skips the clean-up for BPE (it corrupts text)
        or bool(config.get("clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output", False))
    )
    names = {k: str(v) for k, v in special.items()}
    return Tokenizer(backend, names, _chat_template(model_dir, config), clean_up)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _check_generic(model_dir: Path, config: Mapping[str, Any]) -> None:
    """Raise unless AutoTokenizer would load tokenizer.json as is (TokenizersBackend): a model-specific
    class rebuilds the backend from the vocabulary with its own normalizer and pre-tokenizer."""
    name = config.get("tokenizer_class")
    special = [key for key in ("auto_map", "fast_tokenizer_files") if key in config]
    if special or name not in GENERIC_CLASSES:
        raise TokenizerUnavailable(
            f"{model_dir / 'tokenizer_config.json'}: tokenizer_class {name!r}"
            f"{''.join(f' with {key}' for key in special)} needs transformers"
        )
    model_type = _read_json(model_dir / "config.json").get("model_type")
    if model_type in OVERRIDDEN_MODEL_TYPES:
        raise TokenizerUnavailable(
            f"{model_dir / 'config.json'}: transformers loads model_type {model_type!r} with its own class"
        )


def _as_token(value: Any) -> Any:
    """A serialized AddedToken (a dict with "content") as one; lists and other values as they are."""
    if isinstance(value, dict) and "content" in value:
        fields = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
        return AddedToken(**{k: value[k] for k in fields if k in value})
    if isinstance(value, list):
        return [_as_token(v) for v in value]
    return value


def _special_tokens(config: Mapping[str, Any], map_file: Path) -> tuple[dict[str, Token], list[Token]]:
    """Named and model-specific special tokens (name -> token) and the extra ones, as transformers'
    ``_from_pretrained`` and ``PreTrainedTokenizerBase.__init__`` collect them."""
    values = {k: v for k, v in config.items() if k not in ("add_bos_token", "add_eos_token")}
    if "additional_special_tokens" in values:
        values.setdefault("extra_special_tokens", values.pop("additional_special_tokens"))
    explicit = {
        k: values.pop(k)
        for k in list(values)
        if k not in NAMED_TOKENS and k.endswith("_token") and isinstance(values[k], str)
    }
    if isinstance(values.get("extra_special_tokens"), dict):
        explicit.update(values.pop("extra_special_tokens"))
    if "added_tokens_decoder" not in config:  # legacy: special_tokens_map.json
        for key, value in _read_json(map_file).items():
            if isinstance(value, dict) and key != "extra_special_tokens":
                values[key] = _as_token({**value, "special": True})
            elif key == "extra_special_tokens" and isinstance(value, list):
                merged = list(values.get("extra_special_tokens") or [])
                for item in value:
                    token = _as_token({**item, "special": True}) if isinstance(item, dict) else item
                    if token not in merged:
                        merged.append(token)
                values[key] = merged
            else:
                values[key] = value
        if isinstance(values.get("extra_special_tokens"), dict):
            explicit.update(values.pop("extra_special_tokens"))
    if "additional_special_tokens" in values and "extra_special_tokens" not in values:
        values["extra_special_tokens"] = values.pop("additional_special_tokens")
    named: dict[str, Token] = {}
    auto: dict[str, Token] = {}
    for key, value in values.items():
        token = _as_token(value)
        if key in NAMED_TOKENS and token is not None:
            if not isinstance(token, str | AddedToken):
                raise ValueError(f"special token {key} must be a string or an AddedToken, not {token!r}")
            named[key] = token
        elif key.endswith("_token") and isinstance(token, str | AddedToken):
            auto[key] = token
    special = {k: named[k] for k in NAMED_TOKENS if k in named}
    special.update({k: _as_token(v) for k, v in {**auto, **explicit}.items()})
    extra = values.get("extra_special_tokens")
    return special, [_as_token(t) for t in extra] if isinstance(extra, list) else []


def _added_tokens(
    config: Mapping[str, Any],
    backend: Backend,
    legacy_file: Path,
    special: Mapping[str, Token],
    extra: Sequence[Token],
) -> dict[int, AddedToken]:
    """The config's ``added_tokens_decoder``; without one (what transformers 5 saves), those of
    ``added_tokens.json`` and then tokenizer.json's, as transformers collects them."""
    if "added_tokens_decoder" in config:
        return {int(i): AddedToken(**t) for i, t in config["added_tokens_decoder"].items()}
    specials = {str(v) for k, v in special.items() if k in NAMED_TOKENS} | {str(t) for t in extra}
    added = {
        int(index): AddedToken(content, normalized=content not in specials, special=content in specials)
        for content, index in _read_json(legacy_file).items()
    }
    added.update(backend.get_added_tokens_decoder())
    return added


def _add_missing_tokens(
    backend: Backend, added: Mapping[int, AddedToken], special: Mapping[str, Token], extra: Sequence[Token]
) -> None:
    """Add what transformers' ``TokenizersBackend.__init__`` adds: the config's added tokens and the
    special tokens not yet among the backend's added tokens (as special ones)."""
    wanted: list[Token] = [token for _, token in sorted(added.items(), key=lambda item: item[0])]
    known = {str(t) for t in backend.get_added_tokens_decoder().values()} | {str(t) for t in wanted}
    for token in [*special.values(), *extra]:
        if str(token) not in known and token not in wanted:
            wanted.append(token)
    named = {str(t) for t in special.values()}
    tokens = [AddedToken(t, special=True) if isinstance(t, str) else t for t in wanted]
    for token in tokens:
        if not token.special and str(token) in named:
            token.special = True
    if tokens:
        backend.add_tokens(tokens)


def _chat_template(model_dir: Path, config: Mapping[str, Any]) -> str | dict[str, str] | None:
    """``chat_template.jinja`` (and ``additional_chat_templates/*.jinja``) take precedence over the
    config's ``chat_template`` (a string, or a list of {"name", "template"})."""
    templates: dict[str, str] = {}
    default = model_dir / "chat_template.jinja"
    if default.is_file():
        templates["default"] = default.read_text(encoding="utf-8")
    extra_dir = model_dir / "additional_chat_templates"
    if extra_dir.is_dir():
        for path in extra_dir.glob("*.jinja"):
            templates[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
    if templates:
        return templates["default"] if list(templates) == ["default"] else templates
    value = config.get("chat_template")
    if isinstance(value, list):
        return {str(t["name"]): str(t["template"]) for t in value}
    return value if isinstance(value, str) else None


def _clean_up(text: str) -> str:
    """transformers' ``clean_up_tokenization``: no space before punctuation and English contractions."""
    for before, after in (
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ):
        text = text.replace(before, after)
    return text


class _Generation(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` (transformers' assistant-mask markers) renders its body."""

    tags = {"generation"}  # noqa: RUF012 (jinja2 declares it an instance attribute)

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """transformers' ``tojson``: plain ``json.dumps`` (jinja2's own escapes HTML characters)."""
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@lru_cache
def _compile(template: str) -> jinja2.Template:
    """The template in transformers' environment: sandboxed, trim/lstrip blocks, loop controls."""
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)
