"""pypsrp's ``Serializer.deserialize`` without its two lookup tables rebuilt on every call (issue 26).

pypsrp 0.9.1's ``deserialize`` writes two tables as literals in its body: the primitive tags (26 lambdas, built for
every element it is given) and, for every object whose class it does not know in advance, about 60 .NET type names
each with its ``ObjectMeta``/``ListMeta``/``DictionaryMeta`` constructed -- 49 µs a time, about 44 times for each
verified server, to look up one entry. :func:`tables_built_once` compiles pypsrp's own function from pypsrp's own source
with only those two expressions changed: every entry of each table is pypsrp's own expression, made a function once,
and a lookup runs only the entry it finds. Each call still gets new objects from that entry's expression, exactly what
pypsrp's literal gives it (pypsrp changes some of them as it goes: nothing is shared between calls). Everything else
is pypsrp's code as written, with pypsrp's file and line numbers (a traceback points into pypsrp). Where the source
cannot be read (a bytecode-only install) or no longer has that shape, it gives None and pypsrp's code runs unchanged.
"""

from __future__ import annotations

import ast
import functools
import linecache
import textwrap
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

_Node = TypeVar("_Node", bound=ast.AST)

#: The names the changed function finds the tables under (in its own globals).
_STRUCTURES = "_exbe_structures"
_PRIMITIVE = "_exbe_primitive"


class _Structures:
    """pypsrp's table of .NET type names, an entry made (new objects) only when looked up."""

    __slots__ = ("_entries",)

    def __init__(self, entries: dict[str, Callable[[], Any]]) -> None:
        self._entries = entries

    def get(self, name: str, default: Any = None) -> Any:
        entry = self._entries.get(name)
        return default if entry is None else entry()


def _primitive(entries: dict[str, Callable[[Any, Any], Any]]) -> Callable[[Any, str], Any]:
    """pypsrp's ``{tag: lambda d: ...}.get(element.tag)``, each lambda given the serializer it closed over."""

    def lookup(serializer: Any, tag: str) -> Any:
        entry = entries.get(tag)
        return None if entry is None else functools.partial(entry, serializer)

    return lookup


def _located(new: _Node, like: ast.AST, *made: ast.AST) -> _Node:
    """``new`` (and the other nodes ``made`` with it) at ``like``'s place in pypsrp's file."""
    for node in (new, *made):
        ast.copy_location(node, like)  # type: ignore[type-var]  # typeshed: an AST node with a location
    return new


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement in ``body``, nested blocks included (expressions are not walked)."""
    for statement in body:
        yield statement
        for field in ("body", "orelse", "finalbody", "handlers"):
            yield from _statements(getattr(statement, field, []))


def _structures_literal(statement: ast.stmt) -> ast.Dict | None:
    """``structures = {"System.Array": ListMeta(), ...}``: the literal, now looked up in :data:`_STRUCTURES`."""
    if not (isinstance(statement, ast.Assign) and len(statement.targets) == 1
            and isinstance(statement.targets[0], ast.Name) and statement.targets[0].id == "structures"
            and isinstance(statement.value, ast.Dict)):
        return None
    literal = statement.value
    statement.value = _located(ast.Name(_STRUCTURES, ast.Load()), literal)
    return literal


def _primitives_literal(statement: ast.stmt) -> ast.Dict | None:
    """``unpack_function: ... = {"S": lambda d: ..., ...}.get(element.tag)``: the literal, now a call of
    :data:`_PRIMITIVE` with the serializer and the tag."""
    if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
            and statement.target.id == "unpack_function"):
        return None
    call = statement.value
    if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "get"
            and isinstance(call.func.value, ast.Dict) and len(call.args) == 1 and not call.keywords):
        return None
    literal = call.func.value
    lookup, serializer = ast.Name(_PRIMITIVE, ast.Load()), ast.Name("self", ast.Load())
    statement.value = _located(ast.Call(lookup, [serializer, call.args[0]], []), call, lookup, serializer)
    return literal


def _entries(table: ast.Dict, arguments: Callable[[ast.expr], ast.expr | None], namespace: dict[str, Any],
             filename: str) -> dict[str, Any] | None:
    """Each entry of a literal table as a function, compiled in ``namespace``; None for a shape not expected."""
    keys: list[str] = []
    values: list[ast.expr] = []
    for key, value in zip(table.keys, table.values, strict=True):
        made = arguments(value)
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)) or made is None:
            return None
        keys.append(key.value)
        values.append(made)
    listed = ast.Expression(_located(ast.List(values, ast.Load()), table))
    made_entries = eval(compile(listed, filename, "eval"), namespace)  # noqa: S307 - pypsrp's own expressions
    return dict(zip(keys, made_entries, strict=True))


def _factory(value: ast.expr) -> ast.expr:
    """``ListMeta()`` -> ``lambda: ListMeta()``."""
    no_arguments = ast.arguments(posonlyargs=[], args=[], kwonlyargs=[], kw_defaults=[], defaults=[])
    return _located(ast.Lambda(no_arguments, value), value)


def _with_serializer(value: ast.expr) -> ast.expr | None:
    """``lambda d: self.x(d)`` -> ``lambda self, d: self.x(d)`` (``self``: the serializer it closed over)."""
    if not (isinstance(value, ast.Lambda) and len(value.args.args) == 1 and not value.args.posonlyargs
            and not value.args.kwonlyargs and not value.args.vararg and not value.args.kwarg
            and not value.args.defaults):
        return None
    serializer = ast.arg("self")
    arguments = ast.arguments(posonlyargs=[], args=[serializer, *value.args.args], kwonlyargs=[], kw_defaults=[],
                              defaults=[])
    return _located(ast.Lambda(arguments, value.body), value, serializer)


def tables_built_once(function: Callable[..., Any], module_globals: dict[str, Any]) -> Callable[..., Any] | None:
    """pypsrp's ``function`` (its ``Serializer.deserialize``) compiled from its source in ``module_globals`` with its
    two tables built once (module doc); None where that cannot be done exactly."""
    code = function.__code__
    lines = linecache.getlines(code.co_filename)
    if not lines:
        return None
    # the def's lines: to the next statement indented no deeper than the def (a signature's closing bracket is not one)
    first = code.co_firstlineno - 1
    indent = len(lines[first]) - len(lines[first].lstrip())
    end = next((i for i in range(first + 1, len(lines))
                if lines[i].strip() and lines[i].lstrip()[0] not in "#)]}"
                and len(lines[i]) - len(lines[i].lstrip()) <= indent), len(lines))
    source = textwrap.dedent("".join(lines[first:end]))
    if source.count("structures") != source.count("structures.get(") + 1:
        return None  # the table is used other than by lookups: this lookup-only stand-in would not do
    try:  # blank lines before it: pypsrp's line numbers
        tree = ast.parse("\n" * first + source)
    except SyntaxError:
        return None
    function_def = tree.body[0] if len(tree.body) == 1 else None
    if not isinstance(function_def, ast.FunctionDef) or function_def.name != function.__name__:
        return None
    found = [(_structures_literal(statement), _primitives_literal(statement))
             for statement in _statements(function_def.body)]
    structures_found = [literal for literal, _ in found if literal is not None]
    primitives_found = [literal for _, literal in found if literal is not None]
    if len(structures_found) != 1 or len(primitives_found) != 1:
        return None
    namespace = dict(module_globals)
    structures = _entries(structures_found[0], _factory, namespace, code.co_filename)
    primitives = _entries(primitives_found[0], _with_serializer, namespace, code.co_filename)
    if structures is None or primitives is None:
        return None
    namespace[_STRUCTURES] = _Structures(structures)
    namespace[_PRIMITIVE] = _primitive(primitives)
    exec(compile(tree, code.co_filename, "exec"), namespace)  # noqa: S102 - pypsrp's own code
    built: Callable[..., Any] = namespace[function.__name__]
    return built
