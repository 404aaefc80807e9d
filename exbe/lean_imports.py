"""Import Invoke and urllib3 without ``importlib.metadata``: a fixed cost of every exbe process, paid for nothing.

Invoke's package ``__init__`` imports ``importlib.metadata`` only to set ``invoke.__version__``; urllib3 2.x imports
it (``urllib3.http2``) only for a check in ``inject_into_urllib3``, which exbe never calls. Importing it and
searching ``sys.path`` for a distribution costs more than exbe's own modules (issue 26). While those packages are
imported, ``importlib.metadata`` is a small stand-in whose ``version(name)`` reads the ``Version:`` line of the
distribution's ``*.dist-info/METADATA`` beside the package, and asks the real ``importlib.metadata`` when it cannot
find one; the stand-in leaves ``sys.modules`` as soon as the import is done, so anything imported later gets the
real module.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

METADATA = "importlib.metadata"


def version(name: str) -> str:
    """A distribution's version, as ``importlib.metadata.version(name)`` gives it."""
    spec = importlib.util.find_spec(name)
    if spec is not None and spec.origin is not None:
        for info in sorted(Path(spec.origin).parent.parent.glob(f"{name}-*.dist-info")):
            try:
                with (info / "METADATA").open(encoding="utf-8") as headers:
                    for line in headers:
                        if line.startswith("Version:"):
                            return line.split(":", 1)[1].strip()
                        if not line.strip():
                            break  # the headers ended
            except OSError:
                continue
    real = importlib.import_module(METADATA)
    return str(real.version(name))


def import_without_metadata(module: str) -> None:
    """Import ``module`` with the stand-in in place (a plain import if ``importlib.metadata`` is already loaded)."""
    if module in sys.modules or METADATA in sys.modules:
        importlib.import_module(module)
        return
    stand_in = types.ModuleType(METADATA, "exbe's start-up stand-in (exbe.lean_imports)")
    stand_in.version = version  # type: ignore[attr-defined]
    sys.modules[METADATA] = stand_in
    try:
        importlib.import_module(module)
    finally:
        if sys.modules.get(METADATA) is stand_in:
            del sys.modules[METADATA]


import_without_metadata("invoke")
