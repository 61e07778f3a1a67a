"""Chat templates: a conversation turned into the prompt text the model was trained on.

The template is the jinja2 source in the model file (`tokenizer.chat_template`), so it
is an untrusted program: CVE-2024-34359 was remote code execution through a template
rendered in a plain jinja2 Environment. lila.template_sandbox runs it in jinja2's
ImmutableSandboxedEnvironment, tightened, and bounds each render in time, size and memory
(TemplateLimits); compiling does no work the template chooses beyond parsing.

The environment is otherwise the one transformers' `apply_chat_template` uses, so that a
prompt here equals the reference's: trim_blocks and lstrip_blocks, the loopcontrols
extension and transformers' `{% generation %}` tag, a `tojson` filter that does not
escape HTML, the globals `raise_exception` and `strftime_now`, and the variables
`messages`, `tools`, `documents`, `add_generation_prompt`, `bos_token` and `eos_token`.

Which template:
  - `tokenizer.chat_template`, the file's default;
  - `tokenizer.chat_template.tool_use` instead when tools are passed and the file has it
    (named templates, as transformers picks them);
  - no template in the file: the architecture's own turn format where Lila knows it
    (Gemma's `<start_of_turn>user\\n...<end_of_turn>\\n`, for gemma, gemma2 and gemma3),
    else ChatML (`<|im_start|>role\\ncontent<|im_end|>\\n`), which is what llama.cpp falls
    back to as well. Files of one architecture such as llama come in many turn formats,
    so there is no guessing beyond that.

A file's template that cannot be used (it does not compile, or cannot render one user
turn within the limits) does not stop the model from loading: `problem` says what is wrong,
and the architecture's turn format above stands in for it, as `origin` says.

Every failure, whether a syntax error, a sandbox violation, a limit, the template's own
raise_exception or a type error inside it, is a LilaError with a one-line message that
names the template, control characters shown escaped: a wrong prompt must never go to the
model silently, and a template's text must not write to the terminal.
"""
from __future__ import annotations

from typing import Any

import jinja2

from lila.errors import LilaError, one_line
from lila.template_budget import TemplateLimits
from lila.template_sandbox import ENVIRONMENT, render
from lila.tokenizer import Tokenizer
from lila.tokenizer.spm import GEMMA_ARCHITECTURES

__all__ = ["ARCHITECTURE_TEMPLATES", "CHATML", "GEMMA", "ChatTemplate", "TemplateLimits"]

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
# The conversation a file's template must render at load: one that cannot render this
# cannot chat.
_PROBE = [{"role": "user", "content": "Hello"}]


class ChatTemplate:
    """A model's chat template(s), compiled once; render() turns messages into a prompt.
    origin: where the default template came from, in words ("from the file", ...);
    problem: why the file's template is not used (one line), or None;
    limits: what one render may use."""

    def __init__(self, sources: dict[str, str], *, bos_token: str | None = None,
                 eos_token: str | None = None, origin: str = "given by the caller",
                 limits: TemplateLimits | None = None):
        """sources: template name -> jinja2 source; "default" is the one used normally.
        Raises LilaError if one of them does not compile."""
        self.limits = limits or TemplateLimits()
        self._templates = {name: _compile(name, src, self.limits) for name, src in sources.items()}
        self._unusable: dict[str, str] = {}   # name -> why, for a named template of the file
        self._tokens = {k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token))
                        if v is not None}
        self.origin = origin
        self.problem: str | None = None

    @classmethod
    def from_gguf_metadata(cls, metadata: dict[str, Any], tokenizer: Tokenizer, *,
                           limits: TemplateLimits | None = None) -> "ChatTemplate":
        """The file's templates. Never raises for a template: one that cannot be used is
        left out, and the file's default is then replaced by the architecture's turns."""
        template = cls({}, bos_token=_text(tokenizer, tokenizer.bos_id),
                       eos_token=_text(tokenizer, tokenizer.eos_id), limits=limits)
        problems = []
        # Named templates other than tool_use are never picked: left uncompiled, so that a
        # file cannot make loading compile a thousand of them.
        if _KEY + ".tool_use" in metadata:
            if (problem := template._add("tool_use", metadata[_KEY + ".tool_use"])) is not None:
                template._unusable["tool_use"] = problem
                problems.append(problem)
        source, arch = metadata.get(_KEY), metadata.get("general.architecture")
        arch = arch if isinstance(arch, str) else None   # a file says what it likes
        fallback, fallback_source = ARCHITECTURE_TEMPLATES.get(arch, ("ChatML", CHATML))
        whose = f"the {arch} architecture's" if arch in ARCHITECTURE_TEMPLATES else "the fallback"
        if source is None or (isinstance(source, str) and not source):
            template.origin = f"{fallback}, {whose} (none in the file)"
        elif (problem := template._add("default", source, probe=True)) is None:
            template.origin = "from the file"
        else:
            problems.insert(0, problem)
            template.origin = f"{fallback}, {whose} (the file's is unusable)"
        if template.origin != "from the file":
            template._templates["default"] = _compile("default", fallback_source, template.limits)
        template.problem = "; ".join(problems) or None
        return template

    def render(self, messages: list[dict], *, add_generation_prompt: bool = True, tools=None,
               **extra: Any) -> str:
        """The prompt text for a conversation (OpenAI-style {"role", "content"} dicts).
        extra: further template variables, such as enable_thinking=False or documents."""
        name = "tool_use" if tools is not None and ("tool_use" in self._templates or
                                                     "tool_use" in self._unusable) else "default"
        if name in self._unusable:
            raise LilaError(f"{_label(name)} is unusable: {self._unusable[name]}")
        context = {**self._tokens, "messages": messages, "tools": tools, "documents": None,
                   "add_generation_prompt": add_generation_prompt, **extra}
        try:
            return render(self._templates[name], context, self.limits)
        except jinja2.TemplateError as e:   # the sandbox's limits, raise_exception, undefined
            raise LilaError(f"{_label(name)}: {one_line(e.message or str(e))}") from None
        except RecursionError:
            raise LilaError(f"{_label(name)} recurses too deeply") from None
        except Exception as e:  # the template is a program: a TypeError in it is its error
            raise LilaError(f"{_label(name)} failed: {type(e).__name__}: {one_line(str(e))}") from None

    def _add(self, name: str, source: Any, *, probe: bool = False) -> str | None:
        """Compiles source as template name (probe: and renders one user turn with it);
        None if it can be used, else why not."""
        try:
            if not isinstance(source, str):
                raise LilaError(f"{_label(name)} is a {type(source).__name__}, not text")
            self._templates[name] = _compile(name, source, self.limits)
            if probe:
                self.render(_PROBE, add_generation_prompt=True)
        except LilaError as e:
            self._templates.pop(name, None)
            return str(e)
        return None


def _label(name: str) -> str:
    return "chat template" if name == "default" else f"chat template {name!r}"


def _compile(name: str, source: str, limits: TemplateLimits) -> jinja2.Template:
    if len(source) > limits.source:
        raise LilaError(f"{_label(name)} is {len(source)} characters long, more than the "
                        f"{limits.source} a template may have")
    try:
        return ENVIRONMENT.from_string(source)
    except jinja2.TemplateSyntaxError as e:
        raise LilaError(f"{_label(name)} does not parse: {one_line(e.message or '')} "
                        f"(line {e.lineno})") from None
    except RecursionError:   # jinja2's parser recurses once per nested bracket or block
        raise LilaError(f"{_label(name)} does not compile: it nests too deeply") from None
    except Exception as e:   # Python's compiler refusing the generated code, MemoryError, ...
        text = e.msg if isinstance(e, SyntaxError) else str(e)   # not the generated code's line
        raise LilaError(f"{_label(name)} does not compile: {type(e).__name__}: {one_line(text)}") from None


def _text(tokenizer: Tokenizer, id: int | None) -> str | None:
    return None if id is None else tokenizer.token_bytes(id).decode("utf-8", errors="replace")

