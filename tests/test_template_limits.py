"""A chat template is an attacker's program: each attack ends in one line naming the
template, in bounded time and memory.

"Bounded" is shown without racing the clock: the attacks run in a child process under an
address-space limit (1 GiB), with a timeout far above the template time limit, and each
must end with the error of the limit meant to stop it (a time-limit case says "time
limit", a size case "size limit": an attack that ran into MemoryError or the timeout
fails). In the child, the attacks meant for the time limit get 0.5 s, to keep the file
quick, and the others 20 s, so that on any machine only their own limit can stop them.
`lila info` below runs with the default limits, on model files that carry the templates.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import gguf
import pytest

from lila.chat_template import CHATML, ChatTemplate, TemplateLimits
from lila.errors import LilaError
from lila.template_sandbox import SLOW_INPUT
from test_bad_models import spec

CHILD_MEMORY = 1 << 30     # the child's address space: ~40 MB of it is Python and jinja2
CHILD_TIMEOUT = 300        # seconds for all the attacks; each one stops within a second
GROWTH = 256 << 20         # how far the child's resident memory may rise: the memory limit, twice

TIME, SIZE, MEMORY, BITS = "its time limit", "its size limit", "its memory limit", "bits"
DEEP, RECURSES = "nests too deeply", "recurses too deeply"
ALIKE, HASH = "hash alike", "(2 ** 61 - 1)"
BIG = "{% set big = 'x' * 800000 %}"   # within the size limit; two of it are not

LOOP = "{% for i in range(100000) %}{% for j in range(100000) %}BODY{% endfor %}{% endfor %}"

# (id, template, what its error says)
ATTACKS = [
    # The attacks of issue 10.
    ("two nested range(100000) loops", LOOP.replace("BODY", ""), TIME),
    ("doubling a string in a loop",
     "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
     "{% endfor %}{{ ns.s }}", SIZE),
    ("'%0999999999d' % 1", "{{ '%0999999999d' % 1 }}", SIZE),
    ("5,000 nested parentheses", "{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", DEEP),
    ("raise_exception with escape codes and a forged error line",
     "{{ raise_exception('\x1b[31mred\\nerror: forged\u202e') }}",
     "chat template: \\x1b[31mred\\nerror: forged\\u202e"),
    # Strings built by operators, formats and methods.
    ("doubling with +", "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
     "{% set ns.s = ns.s + ns.s %}{% endfor %}", SIZE),
    ("bytes times a count", "{{ 'x'.encode() * 999999999 }}", SIZE),
    ("% with a * width", "{{ '%*d' % (999999999, 1) }}", SIZE),
    ("% with a precision", "{{ '%.999999999f' % 1.0 }}", SIZE),
    ("% with nested parentheses in the key", "{{ '%(a(b))0999999999s' % {'a(b)': 1} }}", SIZE),
    ("% naming one big argument many times", BIG + "{{ '%(a)s%(a)s' % {'a': big} }}", SIZE),
    ("|format with a width", "{{ '%0999999999d'|format(1) }}", SIZE),
    ("str.format width", "{{ '{:>999999999}'.format(1) }}", SIZE),
    ("str.format nested width", "{{ '{0:{1}}'.format(1, 999999999) }}", SIZE),
    ("str.format repeating a field", BIG + "{{ '{0}{0}'.format(big) }}", SIZE),
    ("format_map", BIG + "{{ '{a}{a}'.format_map({'a': big}) }}", SIZE),
    ("Markup.format", BIG + "{{ ('{0}{0}'|safe).format(big) }}", SIZE),
    ("str.center", "{{ 'x'.center(999999999) }}", SIZE),
    ("str.zfill", "{{ '1'.zfill(999999999) }}", SIZE),
    ("bytes.ljust", "{{ 'x'.encode().ljust(999999999) }}", SIZE),
    ("int.to_bytes", "{{ (1).to_bytes(999999999, 'big') }}", SIZE),
    ("str.expandtabs", "{{ ('\t' * 100000).expandtabs(1000) }}", SIZE),
    ("str.replace of the empty string", "{{ ('x' * 100000).replace('', 'y' * 100) }}", SIZE),
    ("str.join", "{{ ('y' * 1000).join(range(100000)|map('string')) }}", SIZE),
    ("str.translate", "{{ ('x' * 100000).translate({120: 'y' * 1000}) }}", SIZE),
    ("str.split into many strings", "{{ ('x,' * 400000).split(',') }}", SIZE),
    ("dict.fromkeys", "{{ {}.fromkeys(range(100000), 'x' * 1000) }}", SIZE),
    ("strftime_now", "{{ strftime_now('%c' * 1000000) }}", SIZE),
    ("Markup.center", "{{ ('x'|safe).center(999999999) }}", SIZE),
    ("Markup.replace", "{{ (('x' * 100000)|safe).replace('', 'y' * 100) }}", SIZE),
    ("punycode, quadratic", "{% set s = range(20000)|map('string')|join %}{{ s.encode('punycode') }}",
     "codec is not allowed"),
    ("encode with namereplace", "{{ ('\u4e00' * 1000000).encode('ascii', 'namereplace') }}", SIZE),
    ("jinja2's own namespace, through the mro", "{{ namespace.mro() }}", "has no attribute 'mro'"),
    # Filters.
    ("|center", "{{ 'x'|center(999999999) }}", SIZE),
    ("|indent", "{{ ('a\n' * 1000000)|indent(1000) }}", SIZE),
    ("|wordwrap with a long wrapstring", "{{ 'a b c'|wordwrap(1, wrapstring='y' * 500000) }}", SIZE),
    ("|wordwrap on long text", f"{{{{ ('x' * {SLOW_INPUT + 1})|wordwrap(1) }}}}", "wordwrap is given"),
    ("|replace", "{{ ('x' * 1000000)|replace('', 'y' * 1000) }}", SIZE),
    ("|join", "{{ range(100000)|join('x' * 1000) }}", SIZE),
    ("|batch", "{{ range(10)|batch(999999999, 'x')|list }}", SIZE),
    ("|slice", "{{ range(10)|slice(999999999)|list }}", SIZE),
    ("|sum of lists", "{{ ([[1]] * 100000)|sum(start=[]) }}", "too long to add"),
    ("|round", "{{ 5|round(-999999999, 'floor') }}", "rounds to"),
    ("|list of a long string", "{{ ('x' * 1000000)|list }}", SIZE),
    ("|tojson indentation by depth",
     "{% set ns = namespace(x=[]) %}{% for i in range(90) %}{% set ns.x = [ns.x] %}{% endfor %}"
     "{{ ns.x|tojson(indent=100000) }}", SIZE),
    ("|tojson of a number, indented", "{{ 1|tojson(indent=999999999) }}", SIZE),
    ("|tojson separators", "{{ range(100000)|list|tojson(separators=('x' * 1000, ':')) }}", SIZE),
    # Numbers.
    ("a power", "{{ 10 ** (10 ** 10) }}", BITS),
    ("powers, one after the other", "{{ ((10 ** 1000) ** 1000) ** 1000 }}", BITS),
    ("a product", "{{ (2 ** 60000) * (2 ** 60000) }}", BITS),
    # Shared references: a list holding one list twice, forty deep, prints 2**40 times.
    ("a list of itself, doubled", "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}"
     "{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x }}", SIZE),
    ("a tuple of itself, doubled, as a dict key", "{% set ns = namespace(x=(1,)) %}"
     "{% for i in range(60) %}{% set ns.x = (ns.x, ns.x) %}{% endfor %}{{ {ns.x: 1} }}", SIZE),
    ("a list of every list before it", "{% set ns = namespace(x=[]) %}{% for i in range(100000) %}"
     "{% set ns.x = ns.x + [ns.x] %}{% endfor %}", SIZE),
    ("a namespace holding itself, many times", "{% set ns = namespace() %}{% set ns.me = ns %}"
     "{{ ns }}{{ [ns] * 1000000 }}", SIZE),
    ("the conversation many times", "{{ messages * 100000000 }}", SIZE),
    ("a tuple nested 100000 deep, hashed", "{% set ns = namespace(t=()) %}{% for i in range(100000) %}"
     "{% set ns.t = (ns.t,) %}{% endfor %}{{ {ns.t: 1} }}", "nests values more than"),
    # Numbers hash to themselves modulo 2**61 - 1: a set or dict of many multiples of it
    # takes seconds in one call (30000 of them: 5 s), which no hook can interrupt.
    ("|unique of numbers that hash alike", "{{ range(0, 30000 * P, P)|unique|list }}".replace("P", HASH), ALIKE),
    ("|unique by an attribute", "{{ range(0, 30000 * P, P)|batch(1)|unique(attribute=0)|list }}"
     .replace("P", HASH), ALIKE),
    ("dict.fromkeys of numbers that hash alike", "{{ {}.fromkeys(range(0, 30000 * P, P)) }}".replace("P", HASH),
     ALIKE),
    ("dict() of pairs that hash alike", "{{ dict(range(0, 30000 * P, P)|batch(2)) }}".replace("P", HASH), ALIKE),
    ("namespace() of pairs that hash alike", "{{ namespace(range(0, 30000 * P, P)|batch(2)) }}"
     .replace("P", HASH), ALIKE),
    # Time: loops whose every step is cheap.
    ("a cycler in nested loops", "{% set c = cycler(1, 2) %}"
     + LOOP.replace("BODY", "{% set x = c.next() %}"), TIME),
    ("attribute lookups in nested loops", LOOP.replace("BODY", "{% set x = loop.revindex %}"), TIME),
    ("comparing long strings", BIG + "{% set other = 'x' * 799999 ~ 'x' %}"
     + LOOP.replace("BODY", "{% if big == other %}{% endif %}"), TIME),
    ("searching a long string", BIG + LOOP.replace("BODY", "{% if 'y' in big %}{% endif %}"), TIME),
    ("a macro calling itself twice", "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}"
     "{% endmacro %}{{ f(60) }}", TIME),
    # Recursion.
    ("a macro calling itself", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", RECURSES),
    ("a macro keeping a new slice in every frame",
     "{% macro f(s) %}{{ f(s[1:] ~ 'xx') }}{% endmacro %}{{ f('x' * 1000000) }}", MEMORY),
    ("a recursive loop", "{% for x in [[1]] recursive %}{{ loop([x, x]) }}{% endfor %}", RECURSES),
    ("a block rendering itself", "{% block b %}{{ self.b() }}{% endblock %}", RECURSES),
    # Memory: each value within the size limit, too many of them.
    ("a macro keeping a new big string in every frame",
     "{% macro f(s) %}{{ f(s ~ 'x') }}{% endmacro %}{{ f('x' * 1000000) }}", MEMORY),
    ("writing a big string many times", BIG + "{% for i in range(100000) %}{{ big }}{% endfor %}", MEMORY),
    ("writing long template text many times",
     "{% for i in range(100000) %}" + "x" * 60000 + "{% endfor %}", MEMORY),
    ("a joiner with a big separator", BIG + "{% set j = joiner(big) %}"
     "{% for i in range(100000) %}{{ j() }}{% endfor %}", MEMORY),
    ("a {% set %} block doubling", "{% set ns = namespace(s='ab') %}{% for i in range(64) %}"
     "{% set b %}{{ ns.s }}{{ ns.s }}{% endset %}{% set ns.s = b %}{% endfor %}", SIZE),
    # Compiling.
    ("template text over the source limit", "x" * (TemplateLimits().source + 1), "a template may have"),
    ("30 nested loops", "{% for a in b %}" * 30 + "{% endfor %}" * 30, "does not compile"),
    ("a huge range", "{% for i in range(0, 10 ** 18, 10 ** 6) %}{% endfor %}", "Range too big"),
    ("lipsum, which is left out", "{{ lipsum(100000, max=1000000) }}", "'lipsum' is undefined"),
]

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from lila.chat_template import ChatTemplate, TemplateLimits
    from lila.errors import LilaError
    messages = [{"role": "user", "content": "hi"}]
    peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    print(json.dumps({"baseline": peak()}), flush=True)
    for name, source, seconds in json.load(sys.stdin):
        limits = TemplateLimits(seconds=seconds)
        start = time.perf_counter()
        try:
            error = "rendered " + repr(ChatTemplate({"default": source}, limits=limits).render(messages))[:200]
        except LilaError as e:
            error = str(e)
        except BaseException as e:
            error = f"{type(e).__name__} leaked: {e}"[:500]
        print(json.dumps({"name": name, "error": error, "seconds": time.perf_counter() - start,
                          "peak": peak()}), flush=True)
""")


@pytest.fixture(scope="module")
def attacked() -> dict:
    """{attack id: {"error", "seconds", "peak"}}, and "baseline": the child's resident
    memory before the first attack."""
    result = subprocess.run([sys.executable, "-c", CHILD, str(CHILD_MEMORY)],
                            input=json.dumps([(name, source, 0.5 if says == TIME else 20)
                                              for name, source, says in ATTACKS]),
                            capture_output=True, text=True, timeout=CHILD_TIMEOUT,
                            env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"})
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert result.returncode == 0, f"the child died after {lines[-1:]}: {result.stderr[-2000:]}"
    out = {line["name"]: line for line in lines[1:]}
    out["baseline"] = lines[0]["baseline"]
    return out


def test_every_attack_ran(attacked):
    names = [name for name, _, _ in ATTACKS]
    assert len(set(names)) == len(names) and set(attacked) == {*names, "baseline"}


@pytest.mark.parametrize("name, source, says", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_ends_in_one_line_naming_the_template(attacked, name, source, says):
    result = attacked[name]
    error = result["error"]
    assert error.startswith("chat template"), error
    assert says in error, error
    assert error.isprintable() and len(error) < 500, error   # one line: no newline, no ESC
    assert result["seconds"] < 30, f"{result['seconds']:.1f} s"   # far above what any needs
    assert result["peak"] - attacked["baseline"] < GROWTH, f"{result['peak'] >> 20} MB resident"


# --- in this process: exact messages, the real templates' margin -----------------------

def test_raise_exception_message_stays_one_line():
    template = ChatTemplate({"default": "{{ raise_exception('\x1b]0;title\x07\\nerror: x') }}"})
    with pytest.raises(LilaError) as error:
        template.render([])
    assert str(error.value) == "chat template: \\x1b]0;title\\x07\\nerror: x"


def test_a_named_template_is_named_in_its_errors():
    template = ChatTemplate({"default": CHATML, "tool_use": "{{ 'x' * 999999999 }}"})
    with pytest.raises(LilaError, match=r"^chat template 'tool_use': would build .* its size limit"):
        template.render([], tools=[])


def test_limits_are_configurable():
    source = "{{ 'x' * 1000 }}"
    assert ChatTemplate({"default": source}).render([]) == "x" * 1000
    with pytest.raises(LilaError, match="size limit"):
        ChatTemplate({"default": source}, limits=TemplateLimits(size=999)).render([])
    with pytest.raises(LilaError, match="time limit"):
        ChatTemplate({"default": LOOP.replace("BODY", "")}, limits=TemplateLimits(seconds=0.01)).render([])


def test_compiling_runs_no_template_work():
    # jinja2 would fold these constants at compile time; here each waits for a bounded render.
    for source in ("{{ '%0999999999d' % 1 }}", "{{ 'x'|center(999999999) }}", "{{ 'x' * 999999999 }}",
                   "{{ 'x'.ljust(999999999) }}", "{{ '{:999999999}'.format(1) }}"):
        template = ChatTemplate({"default": source})   # compiles at once
        with pytest.raises(LilaError, match="size limit"):
            template.render([])


# --- the model file: it loads, `lila info` says why its template is not used, chat warns --

HOSTILE_FILES = {   # file name -> (template, what the problem says)
    "format.gguf": ("{{ '%0999999999d' % 1 }}", SIZE),
    "loops.gguf": (LOOP.replace("BODY", ""), "stopped after 2 s"),   # the default limit
    "parentheses.gguf": ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", DEEP),
    "escapes.gguf": ("{{ raise_exception('\x1b[2J\\nerror: forged') }}", "\\x1b[2J\\nerror: forged"),
}

INFO = textwrap.dedent("""
    import resource, runpy, sys
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    sys.argv = ["lila", *sys.argv[1:]]
    runpy.run_module("lila", run_name="__main__")
""")


@pytest.fixture(scope="module")
def hostile_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile_templates")
    return {name: spec().set("tokenizer.chat_template", source, gguf.GGUFValueType.STRING).write(d / name)
            for name, (source, _) in HOSTILE_FILES.items()}


@pytest.mark.parametrize("name", list(HOSTILE_FILES))
def test_info_reports_an_unusable_template(hostile_files, name):
    result = subprocess.run([sys.executable, "-c", INFO, "info", str(hostile_files[name])],
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = dict(re.match(r"(\S.*?)  +(.*)", line).groups() for line in result.stdout.splitlines())
    assert rows["chat template"] == "ChatML, the fallback (the file's is unusable)", result.stdout
    problem = rows["chat template problem"]
    assert problem.startswith("chat template") and HOSTILE_FILES[name][1] in problem, problem
    assert problem.isprintable(), problem


def test_model_with_an_unusable_template_loads_with_chatml(hostile_files):
    import lila
    with lila.load(hostile_files["format.gguf"]) as model:
        assert "size limit" in model.template.problem
        assert model.template.render([{"role": "user", "content": "Hi"}]) == \
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_chat_warns_once_that_it_uses_the_fallback(hostile_files):
    result = subprocess.run([sys.executable, "-m", "lila", "chat", str(hostile_files["escapes.gguf"])],
                            input="", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "chat template" in line]
    assert warnings == ["lila: warning: chat template: \\x1b[2J\\nerror: forged; using ChatML, "
                        "the fallback (the file's is unusable)"], result.stderr
    assert "\x1b" not in result.stderr


def test_limits_hold_in_a_thread():
    # No signal reaches a thread other than the main one: the deadline is checked by the
    # render itself.
    errors = []
    thread = threading.Thread(target=lambda: _render_into(errors))
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive() and len(errors) == 1 and "time limit" in errors[0]


def _render_into(errors: list) -> None:
    try:
        ChatTemplate({"default": LOOP.replace("BODY", "")}, limits=TemplateLimits(seconds=0.2)).render([])
    except LilaError as e:
        errors.append(str(e))
