"""Chat templates: prompts equal to transformers' apply_chat_template, and a sandbox that holds."""
from __future__ import annotations

import datetime
import json
import time

import jinja2
import pytest

from lila import chat_template
from lila.chat_template import CHATML, ChatTemplate, TemplateLimits
from lila.errors import LilaError
from tok_fixtures import gemma3_tok, smollm2_tok  # noqa: F401 (fixtures)

# transformers' {% generation %} tag (training templates, SmolLM3's) renders its body.
GENERATION_TAG = ("{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}{{ m.content }}<|im_end|>"
                  "{% endgeneration %}{% else %}{{ m.role }}: {{ m.content }}\n{% endif %}{% endfor %}")

# Real-world templates, as their models' tokenizer_config.json carry them (whitespace kept).
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")

LLAMA32_TOOLS = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none %}
    {{- "You have access to the following functions.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- set tool_call = message.tool_calls[0].function %}
        {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
        {{- '{"name": "' + tool_call.name + '", ' }}
        {{- '"parameters": ' }}
        {{- tool_call.arguments | tojson }}
        {{- "}" }}
        {{- "<|eot_id|>" }}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

GEMMA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}")

# Gemma 3's, exactly as google/gemma-3-*-it ship it in tokenizer_config.json (JSON-escaped).
GEMMA3 = json.loads(r'''"{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n"''')

# Block tags on their own lines, loop controls and a namespace: trim_blocks, lstrip_blocks
# and the loopcontrols extension all change this one's output.
PHI_STYLE = """{% set ns = namespace(system='') %}
{% for message in messages %}
    {% if message['role'] == 'system' %}
        {% set ns.system = message['content'] %}
        {% continue %}
    {% endif %}
    <|{{ message['role'] }}|>
{{ ns.system ~ ' ' if loop.index0 == 1 and ns.system else '' }}{{ message['content'] }}<|end|>
    {% if loop.index0 > 8 %}{% break %}{% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|assistant|>
{% endif %}"""

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather at a place, now.",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name, e.g. Zürich"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}, "required": ["city"]}}}]

CONVERSATIONS = {
    "one user turn": [{"role": "user", "content": "Hello!"}],
    "system and turns": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "  And 3+3? 日本語 😀  "}],
    "many turns": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c\nd"}, {"role": "assistant", "content": "<e> & \"f\""},
        {"role": "user", "content": ""}],
}
TOOL_CONVERSATION = [
    {"role": "system", "content": "Use tools when useful."},
    {"role": "user", "content": "Weather in Zürich?"},
    {"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {
        "name": "get_weather", "arguments": {"city": "Zürich", "unit": "celsius"}}}]},
    {"role": "tool", "content": "{\"temperature\": 21}"},
    {"role": "user", "content": "Thanks"},
]


def _ours(case, source: str | None) -> ChatTemplate:
    """The SmolLM2 file's tokenizer, with another template in its metadata (None: none)."""
    metadata = dict(case.metadata)
    metadata.pop("tokenizer.chat_template")
    if source is not None:
        metadata["tokenizer.chat_template"] = source
    return ChatTemplate.from_gguf_metadata(metadata, case.ours)


def _reference(case, messages, source, **kwargs) -> str:
    return case.ref.apply_chat_template(messages, chat_template=source, tokenize=False, **kwargs)


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS))
@pytest.mark.parametrize("name", ["smollm2", "llama3", "llama3.2", "qwen2.5", "phi-style", "chatml", "generation"])
def test_render_equals_transformers(smollm2_tok, name, conversation, add_generation_prompt):
    source = {"smollm2": smollm2_tok.metadata["tokenizer.chat_template"], "llama3": LLAMA3,
              "llama3.2": LLAMA32_TOOLS, "qwen2.5": QWEN25, "phi-style": PHI_STYLE, "chatml": CHATML,
              "generation": GENERATION_TAG}[name]
    messages = CONVERSATIONS[conversation]
    ours = _ours(smollm2_tok, source).render(messages, add_generation_prompt=add_generation_prompt)
    assert ours == _reference(smollm2_tok, messages, source, add_generation_prompt=add_generation_prompt)


def test_real_template_is_read_from_the_file(smollm2_tok):
    ours = ChatTemplate.from_gguf_metadata(smollm2_tok.metadata, smollm2_tok.ours)
    messages = CONVERSATIONS["one user turn"]
    reference = smollm2_tok.ref.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert ours.render(messages) == reference
    assert ours.render(messages).startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


@pytest.mark.parametrize("source", [QWEN25, LLAMA32_TOOLS])
@pytest.mark.parametrize("tools", [TOOLS, None])
def test_tool_calling_branches_equal_transformers(smollm2_tok, source, tools):
    ours = _ours(smollm2_tok, source).render(TOOL_CONVERSATION, tools=tools)
    assert ours == _reference(smollm2_tok, TOOL_CONVERSATION, source, tools=tools, add_generation_prompt=True)
    assert ('"name": "get_weather"' in ours) and (("Zürich" in ours))


@pytest.mark.parametrize("conversation", ["one user turn", "many turns"])
def test_gemma_template_equals_transformers(smollm2_tok, conversation):
    messages = CONVERSATIONS[conversation]
    reference = _reference(smollm2_tok, messages, GEMMA, add_generation_prompt=True)
    assert _ours(smollm2_tok, GEMMA).render(messages) == reference


@pytest.mark.parametrize("messages, message", [
    (CONVERSATIONS["system and turns"], "System role not supported"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "roles must alternate"),
])
def test_raise_exception_is_a_lila_error_with_the_templates_message(smollm2_tok, messages, message):
    with pytest.raises(jinja2.TemplateError, match=message):
        _reference(smollm2_tok, messages, GEMMA)
    with pytest.raises(LilaError, match=message):
        _ours(smollm2_tok, GEMMA).render(messages)


def test_fallback_is_chatml(smollm2_tok):
    ours, hi = _ours(smollm2_tok, None), [{"role": "user", "content": "Hi"}]
    assert ours.render(hi) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert ours.render(hi, add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"
    assert ours.origin == "ChatML, the fallback (none in the file)"
    assert _ours(smollm2_tok, CHATML).origin == "from the file"


def test_gemmas_template_is_the_one_google_ships():
    assert chat_template.GEMMA == GEMMA3


# SmolLM2's BOS token is <|im_start|>, which Gemma's template writes first.
GEMMA_HI = "<|im_start|><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
CHATML_HI = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("arch, expected", [("gemma", GEMMA_HI), ("gemma2", GEMMA_HI), ("gemma3", GEMMA_HI),
                                            ("qwen2", CHATML_HI), ("phi3", CHATML_HI)])
def test_a_file_without_a_template_gets_its_architectures_turns(smollm2_tok, arch, expected):
    metadata = {k: v for k, v in smollm2_tok.metadata.items() if k != "tokenizer.chat_template"}
    template = ChatTemplate.from_gguf_metadata({**metadata, "general.architecture": arch}, smollm2_tok.ours)
    assert template.render([{"role": "user", "content": "Hi"}]) == expected


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("conversation", list(CONVERSATIONS) + ["system only"])
def test_gemma3_file_gets_gemmas_turns_as_transformers_renders_them(gemma3_tok, conversation,
                                                                    add_generation_prompt):
    # The real file has no template: ours comes from its architecture, the reference renders
    # the official template with the same file's tokenizer.
    assert "tokenizer.chat_template" not in gemma3_tok.metadata
    messages = CONVERSATIONS.get(conversation, [{"role": "system", "content": "Be brief."},
                                                {"role": "user", "content": " Hi "}])
    ours = ChatTemplate.from_gguf_metadata(gemma3_tok.metadata, gemma3_tok.ours)
    assert ours.origin == "gemma, the gemma3 architecture's (none in the file)"
    rendered = ours.render(messages, add_generation_prompt=add_generation_prompt)
    assert rendered == _reference(gemma3_tok, messages, GEMMA3, add_generation_prompt=add_generation_prompt)
    assert rendered.startswith("<bos><start_of_turn>user\n") and "<|im_start|>" not in rendered


def test_named_tool_use_template_is_used_with_tools(smollm2_tok):
    metadata = {**smollm2_tok.metadata, "tokenizer.chat_template": "plain", "tokenizer.chat_template.tool_use": "tools"}
    template = ChatTemplate.from_gguf_metadata(metadata, smollm2_tok.ours)
    assert template.render([]) == "plain"
    assert template.render([], tools=TOOLS) == "tools"


def test_globals_filters_and_variables(smollm2_tok):
    source = ("{{ bos_token }}|{{ eos_token }}|{{ strftime_now('%Y') }}|{{ {'a': '<b>é'} | tojson }}|"
              "{{ [1, 2] | tojson(indent=2) }}|{{ enable_thinking }}|{{ tools is none }}")
    year = str(datetime.date.today().year)
    rendered = _ours(smollm2_tok, source).render([], enable_thinking=False)
    assert rendered == f'<|im_start|>|<|im_end|>|{year}|{{"a": "<b>é"}}|[\n  1,\n  2\n]|False|True'


@pytest.mark.parametrize("source", [
    "{{ ''.__class__.__mro__ }}",
    "{{ ''.__class__ }}",  # jinja2 alone would print nothing and carry on
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum.__globals__['os'] }}",
    "{{ joiner.__init__.__globals__.__builtins__ }}",
    "{{ ()|attr('__class__') }}",
    "{{ messages['__class__'] }}",
    "{{ dict.__call__ }}",
    "{{ messages.append(1) }}",
    "{% set ns = namespace(_private=1) %}",
    "{% set ns = namespace() %}{% set ns.__dict__ = 1 %}",
    "{{ 'x' * 100000000 }}",
    "{{ [0] * 100000000 }}",
    "{{ 10 ** 10000000 }}",
    "{{ range(10 ** 9) | list }}",
    "{{ undefined_thing.attribute }}",
    "{{ messages[0]['content'] + 1 }}",
])
def test_hostile_or_broken_templates_are_refused(smollm2_tok, source):
    with pytest.raises(LilaError) as error:
        ChatTemplate({"default": source}).render([{"role": "user", "content": "hi"}])
    message = str(error.value)
    assert message.startswith("chat template") and message.isprintable() and len(message) < 400
    # In a model file, the same template is left out: the model loads, with ChatML.
    loaded = _ours(smollm2_tok, source)
    assert loaded.problem is not None and loaded.problem.startswith("chat template")
    assert loaded.origin == "ChatML, the fallback (the file's is unusable)"
    assert loaded.render([{"role": "user", "content": "Hi"}]) == CHATML_HI


def test_a_template_that_is_not_text_is_unusable(smollm2_tok):
    template = _ours(smollm2_tok, ["not", "a", "string"])
    assert template.problem == "chat template is a list, not text"
    assert template.render([{"role": "user", "content": "Hi"}]) == CHATML_HI


@pytest.mark.parametrize("source", ["{% for %}", "{{ unclosed", "{% if x %}no end", "{% generation %}x"])
def test_syntax_errors_leave_the_architectures_turns(smollm2_tok, source):
    with pytest.raises(LilaError, match="^chat template does not parse: .* \\(line 1\\)$"):
        ChatTemplate({"default": source})
    metadata = {**smollm2_tok.metadata, "tokenizer.chat_template": source, "general.architecture": "gemma3"}
    template = ChatTemplate.from_gguf_metadata(metadata, smollm2_tok.ours)
    assert template.problem.startswith("chat template does not parse")
    assert template.origin == "gemma, the gemma3 architecture's (the file's is unusable)"
    assert template.render([{"role": "user", "content": "Hi"}]) == GEMMA_HI


def test_a_template_that_cannot_render_one_user_turn_is_unusable(smollm2_tok):
    template = _ours(smollm2_tok, "{{ raise_exception('only for tests') }}")
    assert template.problem == "chat template: only for tests"
    assert template.render([{"role": "user", "content": "Hi"}]) == CHATML_HI
    assert _ours(smollm2_tok, CHATML).problem is None


def test_an_unusable_tool_use_template_is_an_error_with_tools_only(smollm2_tok):
    metadata = {**smollm2_tok.metadata, "tokenizer.chat_template": "plain",
                "tokenizer.chat_template.tool_use": "{% for %}"}
    template = ChatTemplate.from_gguf_metadata(metadata, smollm2_tok.ours)
    assert template.origin == "from the file"
    assert template.problem.startswith("chat template 'tool_use' does not parse")
    assert template.render([]) == "plain"
    with pytest.raises(LilaError, match="^chat template 'tool_use' is unusable: chat template 'tool_use' does not"):
        template.render([], tools=TOOLS)


# A long conversation in real templates: how far it stays from the limits.
LONG = [{"role": "system", "content": "Be helpful. " * 100}] + [
    {"role": role, "content": f"Turn {i}: " + "words and more words, " * 50}
    for i in range(200) for role in ("user", "assistant")]


@pytest.mark.parametrize("name", ["smollm2", "llama3.2", "qwen2.5", "gemma3"])
def test_real_templates_stay_far_below_the_limits(smollm2_tok, name):
    source = {"smollm2": smollm2_tok.metadata["tokenizer.chat_template"], "llama3.2": LLAMA32_TOOLS,
              "qwen2.5": QWEN25, "gemma3": GEMMA3}[name]
    limits = TemplateLimits()
    # A sixteenth of the memory limit is enough...
    tight = TemplateLimits(memory=limits.memory // 16)
    prompt = ChatTemplate({"default": source}, limits=tight).render(LONG, tools=TOOLS)
    assert len(prompt) > sum(len(m["content"]) for m in LONG)   # ~0.45 MB
    # ...and the render takes a small fraction of the time limit, slow machine or not.
    start = time.perf_counter()
    ChatTemplate({"default": source}).render(LONG, tools=TOOLS)
    assert time.perf_counter() - start < limits.seconds / 10
