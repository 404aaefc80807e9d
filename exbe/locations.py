"""Where each server stands in the configuration file exbe read: the place an annotation or a JUnit case can point
at, because that is where an admin changes the server's entry.

The inventory is a list, so it comes whole from one file, the highest-ranked of Invoke's configuration files that
defines ``exbe.inventory`` (the ``-f`` file, then ``./exbe.yaml``, then ``~/.exbe.yaml``, then
``/etc/exbe.yaml``). That file is read again as a YAML node tree (JSON is YAML too), which keeps each node's line,
and every entry is located by its ``name``. A location is given only for a file under the working directory (the
checkout root in a pipeline: both platforms take annotation paths relative to it), never guessed: no file, a file
elsewhere, or a file that no longer reads gives no locations at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .config_files import SAFE_LOADER
from .report import Location

#: Invoke's configuration levels that come from files, highest precedence first.
_FILE_LEVELS = ("runtime", "project", "user", "system")


def inventory_locations(config: Any, cwd: Path | None = None) -> dict[str, Location]:
    """``{server name: (file relative to cwd, 1-based line of its entry)}`` for the file that holds the inventory."""
    path = _inventory_file(config)
    if path is None:
        return {}
    base = Path(cwd or os.getcwd()).resolve()
    try:
        relative = path.resolve().relative_to(base)
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return {name: (relative.as_posix(), line) for name, line in _entries(root)}


def _inventory_file(config: Any) -> Path | None:
    for level in _FILE_LEVELS:
        data = getattr(config, f"_{level}", None) or {}
        section = data.get("exbe") if isinstance(data, dict) else None
        if isinstance(section, dict) and section.get("inventory"):
            found = getattr(config, f"_{level}_path", None)
            return Path(found) if found else None
    return None


def _entries(root: yaml.Node | None) -> list[tuple[str, int]]:
    """(name, line) of each entry of ``exbe.inventory`` in a composed document."""
    exbe = _value(root, "exbe")
    inventory = _value(exbe, "inventory")
    if not isinstance(inventory, yaml.SequenceNode):
        return []
    found = []
    for entry in inventory.value:
        name = _value(entry, "name")
        if isinstance(name, yaml.ScalarNode):
            found.append((str(name.value), entry.start_mark.line + 1))
    return found


def _value(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if not isinstance(node, yaml.MappingNode):
        return None
    return next((value for name, value in node.value if isinstance(name, yaml.ScalarNode) and name.value == key),
                None)
