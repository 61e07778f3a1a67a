"""Chat templates: a conversation turned into the prompt text the model was trained on.

The template is the jinja2 source in the model file (`tokenizer.chat_template`), so it
is untrusted input: CVE-2024-34359 was remote code execution through a template rendered
in a plain jinja2 Environment. We render in jinja2's ImmutableSandboxedEnvironment, and
tighten it further: touching an unsafe attribute (`''.__class__`) is an error at once
rather than a silently empty value, and `*` / `**` cannot build a huge string or number.

The environment is otherwise the one transformers' `apply_chat_template` uses, so that a
prompt here equals the reference's: trim_blocks and lstrip_blocks, the loopcontrols
extension and transformers' `{% generation %}` tag, a `tojson` filter that does not
escape HTML, the globals `raise_exception` and `strftime_now`, and the variables `messages`, `tools`, `documents`,
`add_generation_prompt`, `bos_token` and `eos_token`.

Which template:
  - `tokenizer.chat_template`, the file's default;
  - `tokenizer.chat_template.tool_use` instead when tools are passed and the file has it
    (named templates, as transformers picks them);
  - no template in the file: the architecture's own turn format where Lila knows it
    (Gemma's `<start_of_turn>user\\n...<end_of_turn>\\n`, for gemma, gemma2 and gemma3),
    else ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`), which is what llama.cpp falls
    back to as well. Files of one architecture such as llama come in many turn formats,
    so there is no guessing beyond that.

Every failure, whether a syntax error, a sandbox violation, the template's own
raise_exception or a type error inside it, is a LilaError with a one-line message: a
wrong prompt must never go to the model silently.
"""
from __future__ import annotations

import json
import operator
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
import jinja2.utils
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from lila.errors import LilaError, ModelFormatError
from lila.tokenizer import Tokenizer
from lila.tokenizer.spm import GEMMA_ARCHITECTURES

CHATML = ("{% for message in messages %}"
          "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
          "{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

# Gemma 3's template as Google ships it (tokenizer_config.json of the gemma-3 -it models):
# a system message goes in front of the first user turn. Gemma 1 and 2 take the same turns;
# their own templates refuse a system message instead.
GEMMA = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# (name, source) of the turn format for a file without a template, by general.architecture.
ARCHITECTURE_TEMPLATES = dict.fromkeys(GEMMA_ARCHITECTURES, ("gemma", GEMMA))

_KEY = "tokenizer.chat_template"
_MAX_SIZE = 1 << 20  # longest string or list a `*` may build; bits of a `**` result


class ChatTemplate:
    """A model's chat template(s), compiled once; render() turns messages into a prompt.
    origin: where the default template came from, in words ("from the file", ...)."""

    def __init__(self, sources: dict[str, str], *, bos_token: str | None = None,
                 eos_token: str | None = None, origin: str = "given by the caller"):
        """sources: template name -> jinja2 source; "default" is the one used normally."""
        self._templates = {name: _compile(name, src) for name, src in sources.items()}
        self._tokens = {k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token))
                        if v is not None}
        self.origin = origin

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any], tokenizer: Tokenizer) -> "ChatTemplate":
        sources = {key[len(_KEY) + 1:]: src for key, src in metadata.items()
                   if key.startswith(_KEY + ".") and isinstance(src, str)}
        default, origin = metadata.get(_KEY), "from the file"
        if not default:
            arch = metadata.get("general.architecture")
            if arch in ARCHITECTURE_TEMPLATES:
                name, default = ARCHITECTURE_TEMPLATES[arch]
                origin = f"{name}, the {arch} architecture's (none in the file)"
            else:
                default, origin = CHATML, "ChatML, the fallback (none in the file)"
        if not isinstance(default, str):
            raise ModelFormatError(f"{_KEY} is a {type(default).__name__}, not a string")
        sources["default"] = default
        return cls(sources, bos_token=_text(tokenizer, tokenizer.bos_id),
                   eos_token=_text(tokenizer, tokenizer.eos_id), origin=origin)

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True, tools=None,
               **extra: Any) -> str:
        """The prompt text for a conversation (OpenAI-style {"role", "content"} dicts).
        extra: further template variables, such as enable_thinking=False or documents."""
        name = "tool_use" if tools is not None and "tool_use" in self._templates else "default"
        context = {**self._tokens, "messages": messages, "tools": tools, "documents": None,
                   "add_generation_prompt": add_generation_prompt, **extra}
        try:
            return self._templates[name].render(context)
        except LilaError:
            raise
        except jinja2.TemplateError as e:
            raise LilaError(f"chat template: {_one_line(e)}") from None
        except Exception as e:  # the template is a program: a TypeError in it is its error
            raise LilaError(f"chat template failed: {type(e).__name__}: {_one_line(e)}") from None


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        # jinja2 returns an Undefined that only fails when used, and prints as "" when
        # not: a probing template would render a quietly different prompt.
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed")

    def call_binop(self, context, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > _MAX_SIZE:
                    raise SecurityError("the template builds a sequence that is too long")
            return operator.mul(left, right)
        if isinstance(left, int) and isinstance(right, int) and right * max(abs(left), 2).bit_length() > _MAX_SIZE:
            raise SecurityError("the template computes a number that is too large")
        return operator.pow(left, right)


class _GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: transformers uses it to find the assistant's
    text for training masks; when rendering a prompt it is its body, as written."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[jinja2.nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Namespace(jinja2.utils.Namespace):
    """namespace() that refuses underscore names, which lead to Python internals."""

    def __init__(*args: Any, **kwargs: Any):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)


def _check_name(name: Any) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise SecurityError(f"namespace attribute {name!r} is not allowed")


def _make_dict(*args: Any, **kwargs: Any) -> dict:
    # A function, not the dict type itself, which would hand the template a class object.
    return dict(*args, **kwargs)


def _raise_exception(message: Any) -> None:
    raise LilaError(f"chat template: {message}")


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> _Sandbox:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now,
                       namespace=_Namespace, dict=_make_dict)
    return env


_ENV = _environment()


def _compile(name: str, source: str) -> jinja2.Template:
    try:
        return _ENV.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise LilaError(f"chat template {name!r} does not parse: {_one_line(e)} (line {e.lineno})") from None


def _text(tokenizer: Tokenizer, id: int | None) -> str | None:
    return None if id is None else tokenizer.token_bytes(id).decode("utf-8", errors="replace")


def _one_line(error: BaseException, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[:limit] + "..."
