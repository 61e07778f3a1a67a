"""The jinja2 environment chat templates run in, bounded in time and memory.

A chat template comes from the model file: it is an untrusted program. It runs in jinja2's
ImmutableSandboxedEnvironment, which keeps it away from Python's internals, tightened so
that probing an unsafe attribute (`''.__class__`) is an error at once rather than a quietly
empty value. On top of that, one render is bounded (TemplateLimits):

- Time. jinja2 runs a template as Python code in the calling thread, and the server and
  applications render from threads where no signal-based alarm can interrupt it, so the
  check is cooperative: every step of the template's own work passes through a hook that
  compares the clock with the render's deadline. The steps are each loop iteration (the
  code generator puts a call to one at the top of every loop body), call, filter, test,
  operator, comparison, attribute or item lookup, list/tuple/dict literal, `~` and piece
  of output. Between two hooks there is only a bounded amount of work, so a render stops
  within one step of its limit, from any thread.
- Size. No single step may build much: every value the template builds is measured (a
  list by the text of all it holds, counting a repeated element each time, so that
  `[x, x]` nested forty deep is refused rather than printed) and must fit the size
  limit; operations that can build more than they are given (`*`, `%`, `+`,
  `str.format`, center, indent, replace, join, ...) are estimated from their operands and
  refused before they run; numbers are bounded in bits and nesting in depth. So no step
  runs long either (a few hundred ms at most, on values at the size limit), once the steps
  that are slow on small input are bounded too: keys that collide in hashing (numbers
  hash to themselves, so a set of multiples of 2**61 - 1 costs n**2), wordwrap's long
  words, the punycode codec, `|sum` of lists.
- Memory. Everything a render builds is counted, and the total is bounded: that bounds
  what it can hold at once, the frames of a deep macro recursion included.
- Compiling. jinja2 folds constant expressions while it compiles, at load: `{{ '%0999999999d'
  % 1 }}` would run then, outside any render. The optimizer is off, every operator is
  intercepted (a sandbox folds none of those), and the hooks refuse to run outside a
  render, so compiling does no work the template chooses beyond parsing its source, whose
  length is bounded.

lila.template_budget keeps the account and makes the estimates; this module puts its
hooks into jinja2.
"""
from __future__ import annotations

import functools
import json
import operator
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Callable

import jinja2
import jinja2.compiler
import jinja2.ext
import jinja2.nodes as nodes
import jinja2.parser
import jinja2.utils
from jinja2.exceptions import SecurityError, TemplateRuntimeError
from jinja2.filters import make_attrgetter
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import EscapeFormatter, Markup

from lila.template_budget import (
    INT_BITS, METHOD_SIZES, Budget, TemplateLimits, active, binop, distinct_hashes, join_size,
    materialized, percent_size, replace_size, running,
)

SLOW_INPUT = 64 << 10      # characters that wordwrap (quadratic on long words) may be given


def render(template: jinja2.Template, context: dict[str, Any], limits: TemplateLimits) -> str:
    """template rendered with context, within limits. Raises SecurityError past a limit."""
    with running(limits):
        text = template.render(context)
    if len(text) > limits.size:
        raise SecurityError(f"writes a prompt of {len(text)} characters, more than its size limit "
                            f"of {limits.size}")
    return text


# --- filters ---------------------------------------------------------------------------

def _indent_size(b: Budget, s: Any, width: Any = 4, first: bool = False, blank: bool = False) -> int:
    text, pad = str(s), len(width) if isinstance(width, str) else operator.index(width)
    return len(text) + (text.count("\n") + 1) * pad


def _wordwrap_size(b: Budget, s: Any, width: int = 79, break_long_words: bool = True,
                   wrapstring: str | None = None, break_on_hyphens: bool = True) -> int:
    text = str(s)
    if len(text) > SLOW_INPUT:
        raise SecurityError(f"wordwrap is given {len(text)} characters, more than {SLOW_INPUT}")
    return len(text) * (1 + b.size_of(wrapstring or "\n"))


def _batch_size(b: Budget, items: Any, linecount: Any, fill_with: Any = None) -> int:
    fill = 0 if fill_with is None else operator.index(linecount) * (b.size_of(fill_with) + 2)
    return b.size_of(items) + 4 * len(items) + fill


def _slice_size(b: Budget, items: Any, slices: Any, fill_with: Any = None) -> int:
    # Every one of the slices is a list, however few the items.
    fill = 4 if fill_with is None else b.size_of(fill_with) + 6
    return b.size_of(items) + 4 * len(items) + operator.index(slices) * fill


def _sum_size(b: Budget, items: Any, attribute: Any = None, start: Any = 0) -> int | None:
    if isinstance(start, (int, float)):
        return None
    # Adding sequences copies the running total each time: quadratic.
    total = b.size_of(start) + join_size(b, "", items)
    if total * max(len(items), 1) > b.limits.memory:
        raise SecurityError("sums sequences that are too long to add up")
    return total


def _unique_size(b: Budget, items: Any, case_sensitive: bool = False, attribute: Any = None) -> None:
    distinct_hashes(items if attribute is None else map(make_attrgetter(ENVIRONMENT, attribute), items))
    return None


def _round_size(b: Budget, value: Any, precision: Any = 0, method: str = "common") -> None:
    if abs(operator.index(precision)) * 4 > INT_BITS:   # rounding computes 10 ** precision
        raise SecurityError(f"rounds to {precision} digits")
    return None


# Filters that can build more than they are given: name -> size estimate, from the
# filter's own arguments (after the environment or context jinja2 passes to some).
_FILTER_SIZES: dict[str, Callable[..., int | None]] = {
    "center": lambda b, value, width=80: max(b.size_of(value), operator.index(width)),
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "replace": lambda b, s, old, new, count=None: replace_size(b, s, old, new, count),
    "join": lambda b, items, d="", attribute=None: join_size(b, d, items, 64 if attribute else 0),
    "format": lambda b, value, *args, **kwargs: percent_size(b, value, kwargs or args),
    "batch": _batch_size,
    "slice": _slice_size,
    "sum": _sum_size,
    "round": _round_size,
    "unique": _unique_size,
}
_MATERIALIZED = {"join", "batch", "slice", "sum", "unique"}   # their first argument is read twice
# pprint indents by depth and urlize runs regular expressions slowly over long text: both
# are for HTML pages, and no chat template uses them. lipsum writes random text.
_LEFT_OUT = {"pprint", "urlize"}


def _bounded_filter(name: str, function: Callable) -> Callable:
    """Filter `name`, each call checked against the render's budget: the clock, an estimate
    of what it would build (where it can build more than it is given), what it built."""
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0
    estimate = _FILTER_SIZES.get(name)

    @functools.wraps(function)   # keeps jinja_pass_arg
    def bounded(*args: Any, **kwargs: Any) -> Any:
        budget = active()
        budget.tick()
        if name in _MATERIALIZED and len(args) > skip:
            args = (*args[:skip], materialized(args[skip]), *args[skip + 1:])
        if estimate is not None:
            size = estimate(budget, *args[skip:], **kwargs)
            if size is not None:
                budget.check_size(size)
        return budget.new(function(*args, **kwargs))
    return bounded


def _bounded_test(function: Callable) -> Callable:
    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        active().tick()
        return function(*args, **kwargs)
    return bounded


# --- str.format ------------------------------------------------------------------------

class _BoundedFormatter(SandboxedFormatter):
    """str.format in the sandbox, counting what each field writes before writing it."""

    def __init__(self, env: jinja2.Environment, budget: Budget, **kwargs: Any):
        super().__init__(env, **kwargs)
        self._budget, self._size = budget, 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        digits = "".join(c if c in "0123456789" else " " for c in format_spec).split()
        width = sum(int(d) if len(d) < 10 else self._budget.limits.size + 1 for d in digits)
        self._size += self._budget.size_of(value) + width
        self._budget.check_size(self._size)
        return super().format_field(value, format_spec)


class _BoundedEscapeFormatter(_BoundedFormatter, EscapeFormatter):
    pass


# --- the environment -------------------------------------------------------------------

def _measured(visit: Callable) -> Callable:
    """A code generator's visit_List (Tuple, Dict) whose literal goes through lila_new."""
    def wrapped(self: jinja2.compiler.CodeGenerator, node: nodes.Expr, frame: Any) -> None:
        if getattr(node, "ctx", "load") != "load":   # an assignment target
            return visit(self, node, frame)
        self.write("environment.lila_new(")
        visit(self, node, frame)
        self.write(")")
    return wrapped


class _CodeGenerator(jinja2.compiler.CodeGenerator):
    """jinja2's code generator, with the render's hooks where the template's work is done
    without a sandbox call: loop iterations, literals, slices, `~`, comparisons and output."""

    def visit_Template(self, node: nodes.Template, frame: Any = None) -> None:
        # A loop body may do nothing else that calls a hook: each iteration calls one.
        for loop in node.find_all(nodes.For):
            tick = nodes.Call(nodes.EnvironmentAttribute("lila_tick"), [], [], None, None)
            loop.body.insert(0, nodes.ExprStmt(tick).set_lineno(loop.lineno))
        super().visit_Template(node, frame)

    visit_List = _measured(jinja2.compiler.CodeGenerator.visit_List)
    visit_Tuple = _measured(jinja2.compiler.CodeGenerator.visit_Tuple)
    visit_Dict = _measured(jinja2.compiler.CodeGenerator.visit_Dict)

    def visit_Concat(self, node: nodes.Concat, frame: Any) -> None:
        # As jinja2's, with the parts measured before they are joined.
        if frame.eval_ctx.volatile:
            join = "(markup_join if context.eval_ctx.volatile else str_join)"
        else:
            join = "markup_join" if frame.eval_ctx.autoescape else "str_join"
        self.write(f"environment.lila_concat({join}, (")
        for part in node.nodes:
            self.visit(part, frame)
            self.write(", ")
        self.write("))")

    def visit_Getitem(self, node: nodes.Getitem, frame: Any) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        # jinja2 slices in plain Python; here through the sandbox's getitem, which measures
        # the copy.
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for i, part in enumerate((node.arg.start, node.arg.stop, node.arg.step)):
            self.write(", " if i else "")
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
        self.write("))")

    def visit_Compare(self, node: nodes.Compare, frame: Any) -> None:
        self.write("(environment.lila_tick() or ")
        super().visit_Compare(node, frame)
        self.write(")")

    def _output_child_pre(self, node: nodes.Expr, frame: Any, finalize: Any) -> None:
        super()._output_child_pre(node, frame, finalize)
        self.write("environment.lila_emit(")

    def _output_child_post(self, node: nodes.Expr, frame: Any, finalize: Any) -> None:
        self.write(")")
        super()._output_child_post(node, frame, finalize)

    def _output_const_repr(self, group: Any) -> str:
        return f"environment.lila_emit({super()._output_const_repr(group)})"


class _Sandbox(ImmutableSandboxedEnvironment):
    code_generator_class = _CodeGenerator
    intercepted_binops = frozenset(ImmutableSandboxedEnvironment.default_binop_table)

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        # jinja2 returns an Undefined that only fails when used, and prints as "" when
        # not: a probing template would render a quietly different prompt.
        raise SecurityError(f"access to {attribute!r} of a {type(obj).__name__} is not allowed")

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        return binop(active(), operator_name, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        active().tick()
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        budget = active()
        budget.tick()
        if isinstance(argument, slice):   # as jinja2 slices: plain Python, errors included
            return budget.new(obj[argument])
        return super().getitem(obj, argument)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        budget = active()
        budget.tick()
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        owner = getattr(__obj, "__self__", None)   # of a method: its object (or class)
        estimate = METHOD_SIZES.get(getattr(__obj, "__name__", ""))
        if estimate is not None and (isinstance(owner, (str, bytes, int)) or owner is dict):
            if __obj.__name__ in ("join", "fromkeys") and args:
                args = (materialized(args[0]), *args[1:])
            budget.check_size(estimate(budget, owner, *args, **kwargs))
        return budget.new(__context.call(__obj, *args, **kwargs))

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # As jinja2's, with a formatter that counts what each field writes.
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or \
                value.__name__ not in ("format", "format_map") or not isinstance(value.__self__, str):
            return None
        text, is_map = value.__self__, value.__name__ == "format_map"

        def bounded_format(*args: Any, **kwargs: Any) -> str:
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            budget = active()
            formatter = (_BoundedEscapeFormatter(self, budget, escape=text.escape)
                         if isinstance(text, Markup) else _BoundedFormatter(self, budget))
            return type(text)(formatter.vformat(text, args, kwargs))
        return functools.update_wrapper(bounded_format, value)

    # The hooks that _CodeGenerator's code calls.

    def lila_tick(self) -> None:
        active().tick()

    def lila_new(self, value: Any) -> Any:
        budget = active()
        budget.tick()
        return budget.new(value)

    def lila_concat(self, join: Callable, parts: tuple) -> str:
        budget = active()
        budget.tick()
        size = sum(map(budget.size_of, parts))
        budget.check_size(size)
        budget.charge(size)
        return join(parts)

    def lila_emit(self, value: Any) -> Any:
        budget = active()
        budget.tick()
        size = budget.size_of(value)
        budget.check_size(size)
        budget.charge(size)
        return value


# --- what templates get: transformers' apply_chat_template environment ----------------

class _GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: transformers uses it to find the assistant's
    text for training masks; when rendering a prompt it is its body, as written."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Namespace(jinja2.utils.Namespace):
    """namespace() that refuses underscore names, which lead to Python internals, and prints
    as a fixed text: a namespace is the one thing a template can change after making it,
    so what it holds is never printed, compared or measured through it."""

    def __init__(*args: Any, **kwargs: Any):
        self, args = args[0], args[1:]
        attrs = _pairs_dict(*args, **kwargs)
        for name in attrs:
            _check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    def __repr__(self) -> str:
        return "<Namespace>"


def _pairs_dict(*args: Any, **kwargs: Any) -> dict:
    """dict(*args, **kwargs), its keys checked first when they come as pairs."""
    if args and not isinstance(args[0], Mapping):
        pairs = list(args[0])
        distinct_hashes(pair[0] for pair in pairs if isinstance(pair, (list, tuple)) and pair)
        args = (pairs,)
    return dict(*args, **kwargs)


def _namespace(*args: Any, **kwargs: Any) -> _Namespace:
    # A function, not the class, whose mro() would lead to jinja2's own Namespace.
    return _Namespace(*args, **kwargs)


def _check_name(name: Any) -> None:
    if isinstance(name, str) and name.startswith("_"):
        raise SecurityError(f"namespace attribute {name!r} is not allowed")


def _raise_exception(message: Any) -> None:
    raise TemplateRuntimeError(str(message))


def _tojson(value: Any, ensure_ascii: bool = False, indent: int | str | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # transformers' tojson: no HTML escaping. With an indent, every element's line carries
    # its depth's indentation, so the estimate walks the value first.
    budget = active()
    pad = len(indent) if isinstance(indent, str) else max(operator.index(indent or 0), 0)
    budget.check_size(pad)   # json makes the indentation string first
    per_item = 4 + sum(map(len, separators or ())) + (pad > 0)
    total, stack = 0, [(value, 0)]
    while stack and total <= budget.limits.size:
        item, depth = stack.pop()
        total += per_item + depth * pad
        if isinstance(item, Mapping):
            stack += [(part, depth + 1) for pair in item.items() for part in pair]
        elif isinstance(item, (list, tuple)):
            stack += [(part, depth + 1) for part in item]
        else:
            total += 6 * budget.size_of(item)   # \u0000 escapes
    budget.check_size(total)
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    active().check_size(16 * len(fmt))   # %c writes 24 characters for 2
    return datetime.now().strftime(fmt)


def _environment() -> _Sandbox:
    env = _Sandbox(trim_blocks=True, lstrip_blocks=True, optimized=False,
                   extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    env.filters["tojson"] = _tojson
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()
                   if name not in _LEFT_OUT}
    env.tests = {name: _bounded_test(f) for name, f in env.tests.items()}
    del env.globals["lipsum"]
    # dict and namespace are functions, not classes, whose mro() would lead further.
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now,
                       namespace=_namespace, dict=_pairs_dict)
    return env


ENVIRONMENT = _environment()
