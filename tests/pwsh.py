"""A small tree-sitter-pwsh reading of PowerShell text for tests: syntax errors, commands, functions, PS7-only syntax.

There is no PowerShell here; tree-sitter proves syntax, ps_commands.json (Microsoft's documentation) proves names.
"""

from __future__ import annotations

import dataclasses
import functools
import re

import tree_sitter
import tree_sitter_pwsh

#: Node types that exist only in PowerShell 7 syntax.
PS7_NODE_TYPES = frozenset({
    "??", "??=", "&&", "||", "ternary_expression", "null_coalesce_expression", "pipeline_chain_tail", "clean",
    "parallel_statement",
})

#: Node types Windows PowerShell 4.0 cannot parse (added in 5.0). A script is parsed whole before any of it runs, so
#: with one of these anywhere the platform check at its top would never get to say why.
PS5_NODE_TYPES = frozenset({"class_statement", "enum_statement", "using_statement"})

#: PowerShell 7-only features that are plain text to the grammar (parameters, names, member access).
PS7_TEXT = re.compile(
    r"\?\.|\?\[|-Parallel\b|-AsHashtable\b|-EscapeHandling\b|-SkipCertificateCheck\b|utf8NoBOM|\bJoin-String\b"
    r"|\bTest-Json\b|\$IsWindows\b|\$IsLinux\b|\$IsMacOS\b",
    re.IGNORECASE,
)


@dataclasses.dataclass(frozen=True)
class Command:
    """One invocation of a command by name, with the ``-Parameter`` names written after it."""

    name: str
    parameters: tuple[str, ...]
    line: int


@functools.cache
def _parser() -> tree_sitter.Parser:
    return tree_sitter.Parser(tree_sitter.Language(tree_sitter_pwsh.language()))


def parse(text: str) -> tree_sitter.Tree:
    return _parser().parse(text.encode("utf-8"))


def _walk(node: tree_sitter.Node):
    yield node
    for child in node.children:
        yield from _walk(child)


def _text(node: tree_sitter.Node) -> str:
    return node.text.decode("utf-8") if node.text is not None else ""


def syntax_errors(text: str) -> list[str]:
    """ERROR and missing nodes, as 'line N: ...' strings (empty when the text parses cleanly)."""
    problems = []
    for node in _walk(parse(text).root_node):
        if node.is_error or node.is_missing:
            kind = "missing " + node.type if node.is_missing else "cannot parse"
            problems.append(f"line {node.start_point[0] + 1}: {kind} {_text(node)[:60]!r}")
    return problems


def commands(text: str) -> list[Command]:
    """Every command invoked by a literal name (``& $block`` and method calls are not commands)."""
    found = []
    for node in _walk(parse(text).root_node):
        if node.type != "command":
            continue
        name = next((c for c in node.children if c.type == "command_name"), None)
        if name is None:
            continue
        elements = next((c for c in node.children if c.type == "command_elements"), None)
        parameters = tuple(_text(c).lstrip("-").rstrip(":") for c in (elements.children if elements else [])
                           if c.type == "command_parameter")
        found.append(Command(_text(name), parameters, node.start_point[0] + 1))
    return found


def functions(text: str) -> dict[str, set[str]]:
    """Functions the script defines -> their parameter names (without ``$``)."""
    defined: dict[str, set[str]] = {}
    for node in _walk(parse(text).root_node):
        if node.type != "function_statement":
            continue
        name = next(c for c in node.children if c.type == "function_name")
        parameters: set[str] = set()
        for inner in _walk(node):
            if inner.type == "script_parameter" and _enclosing_function(inner) == node:
                variable = next(c for c in inner.children if c.type == "variable")
                parameters.add(_text(variable).lstrip("$"))
        defined[_text(name)] = parameters
    return defined


def _enclosing_function(node: tree_sitter.Node) -> tree_sitter.Node | None:
    parent = node.parent
    while parent is not None and parent.type != "function_statement":
        parent = parent.parent
    return parent


def advanced_functions(text: str) -> set[str]:
    """Functions declared with [CmdletBinding(...)]: they accept the common parameters (and -WhatIf when asked)."""
    names = set()
    for node in _walk(parse(text).root_node):
        if node.type == "function_statement":
            block = next((c for c in node.children if c.type == "script_block"), None)
            param_block = next((c for c in (block.children if block else []) if c.type == "param_block"), None)
            if param_block is not None and "CmdletBinding" in _text(param_block).split("param", 1)[0]:
                names.add(_text(next(c for c in node.children if c.type == "function_name")))
    return names


def ps7_only(text: str) -> list[str]:
    """PowerShell 7-only syntax, as 'line N: ...' strings."""
    problems = [f"line {n.start_point[0] + 1}: {n.type}" for n in _walk(parse(text).root_node)
                if n.type in PS7_NODE_TYPES]
    for match in PS7_TEXT.finditer(text):
        problems.append(f"line {text.count(chr(10), 0, match.start()) + 1}: {match.group(0)}")
    return problems


def newer_than_ps4(text: str) -> list[str]:
    """Syntax that Windows PowerShell 4.0 cannot parse, as 'line N: ...' strings."""
    return [f"line {n.start_point[0] + 1}: {n.type}" for n in _walk(parse(text).root_node) if n.type in PS5_NODE_TYPES]


def tokens(text: str) -> list[tuple[str, str]]:
    """The tokens PowerShell acts on, in order: every leaf but comments and blanks, with the type of the node
    holding it (two texts with the same tokens and the same :func:`shape` mean the same to PowerShell)."""
    return [(n.type, _text(n)) for n in _walk(parse(text).root_node)
            if n.child_count == 0 and n.type != "comment" and _text(n).strip()]


def shape(text: str) -> list[str]:
    """The syntax tree as the sequence of its named node types, comments left out."""
    return [n.type for n in _walk(parse(text).root_node) if n.is_named and n.type != "comment"]
