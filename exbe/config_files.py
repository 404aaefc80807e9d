"""Reading a configuration file within a budget: size, nodes and nesting.

A YAML file can say much more than it holds: 488 bytes of nested aliases (the "billion laughs") stand for hundreds
of millions of values, which Invoke's merge copies one by one (52 s and 1 GB before a traceback). So a file is read
only up to :data:`MAX_BYTES`, composed into YAML's node graph (an alias is one shared node there, so composing costs
what the text costs), and refused when the values it stands for -- every alias expanded -- exceed :data:`MAX_NODES`,
or when it nests deeper than :data:`MAX_DEPTH`. JSON gets the same size and nesting budget. Each refusal, any file
that cannot be read and any syntax error (in YAML's or JSON's own words, with the line and column) is one line naming
the file (:class:`~exbe.errors.ConfigError`, exit code 2), wherever Invoke found it (``-f``, ``./exbe.yaml``,
``~/.exbe.yaml``, ``/etc/exbe.yaml``). YAML is read by PyYAML (:data:`SAFE_LOADER`), never by the pure-Python copy
Invoke vendors.
"""

from __future__ import annotations

import json
import os
from typing import Any

import yaml

from .errors import ConfigError
from .redaction import visible_controls

#: The largest configuration file read: an inventory of a thousand servers is about 100 KB.
MAX_BYTES = 4 * 1024 * 1024
#: The most values (mappings, lists, scalars, keys included) a file may stand for, aliases expanded.
MAX_NODES = 250_000
#: The deepest nesting of mappings and lists (exbe's own shape is four levels deep).
MAX_DEPTH = 64
#: PyYAML's safe loader on libyaml where PyYAML was built with it (its wheels are): the same documents, the same
#: errors, a sixth of the CPU (a 1,000-server inventory: 0.15 s instead of 0.9 s with the pure-Python loader).
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _shown(path: str) -> str:
    """The path in quotes, its controls escaped; a long one cut in the middle, so that the file's name stays."""
    text = repr(visible_controls(str(path), keep=""))
    return text if len(text) <= 80 else f"{text[:30]}...{text[-50:]} ({len(str(path))} characters)"


def _refused(path: str, problem: str) -> ConfigError:
    return ConfigError(f"cannot read config file {_shown(path)}: {problem}")


def read_bytes(path: str) -> bytes:
    """The file's bytes, within :data:`MAX_BYTES`; any failure to read it is one line."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise  # Invoke's loaders skip a missing file (and exbe says so for -f)
    except OSError as exc:
        raise _refused(path, os.strerror(exc.errno) if exc.errno else type(exc).__name__) from None
    if len(data) > MAX_BYTES:
        raise _refused(path, f"it is larger than {MAX_BYTES // (1024 * 1024)} MiB; a configuration file is much "
                             "smaller")
    return data


def _expanded_size(root: yaml.Node) -> int:
    """How many values ``root`` stands for with every alias expanded (shared nodes counted each time they are used);
    stops counting past :data:`MAX_NODES`. Iterative, memoised by node: linear in the composed graph."""
    sizes: dict[int, int] = {}
    stack: list[tuple[yaml.Node, int, bool]] = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        if depth > MAX_DEPTH:
            raise RecursionError
        if id(node) in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if done:
            sizes[id(node)] = min(MAX_NODES + 1, 1 + sum(sizes[id(child)] for child in children))
            continue
        stack.append((node, depth, True))
        stack.extend((child, depth + 1, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]


def read_yaml(path: str) -> Any:
    """A YAML configuration file's data, within the budget."""
    data = read_bytes(path)
    loader: Any = SAFE_LOADER(data)
    try:
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if _expanded_size(node) > MAX_NODES:
                raise _refused(path, f"it stands for more than {MAX_NODES} values once its aliases are expanded "
                                     "(an alias bomb?)")
            return loader.construct_document(node)
        except RecursionError:
            raise _refused(path, f"it nests deeper than {MAX_DEPTH} levels") from None
        except yaml.YAMLError as exc:
            said = " ".join(str(exc).split()).replace('in "<byte string>", ', "at ")
            raise _refused(path, f"it is not valid YAML: {said}") from None
    finally:
        loader.dispose()


def read_json(path: str) -> Any:
    """A JSON configuration file's data, within the size and nesting budget."""
    data = read_bytes(path)
    try:
        return _check_depth(json.loads(data), path)
    except RecursionError:
        raise _refused(path, f"it nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # not JSON, or not UTF-8/16/32 text
        raise _refused(path, f"it is not valid JSON: {' '.join(str(exc).split())}") from None


def _check_depth(data: Any, path: str) -> Any:
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RecursionError
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
    return data
