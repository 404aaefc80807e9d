"""pypsrp's PSRP messages with each pool and pipeline id parsed once, not at every message (issue 26).

pypsrp 0.9.1 keeps a message's two ids (the runspace pool's and the pipeline's) as ``uuid.UUID`` objects and makes
them anew for every message: ``Message.__init__`` parses both from their text and builds an empty id besides, and
``Message.unpack`` builds both from the received bytes, turns them into text and hands that to ``__init__``, which
parses it again -- 136 ``UUID`` constructions per verified server (yappi), for the same three or four ids. Here
pypsrp's own ``Message.__init__``, ``Message.unpack``, ``Fragmenter.fragment`` and ``Fragmenter.defragment`` run
as written, where ``uuid.UUID`` remembers the ids it has made (a ``UUID`` cannot be changed, so one object can stand
for every message with that id) and ``Message`` is that message class. Nothing else differs: the same bytes are
sent, the same messages handed back. Where pypsrp's functions have another shape (a closure), its own classes run.
"""

from __future__ import annotations

import functools
import types
import uuid
from collections.abc import Callable
from typing import Any

#: ids remembered: a server's pool and pipeline ids (a handful) are reused while it runs; older ones fall out
_IDS_KEPT = 4096


@functools.cache
def fast_fragmenter() -> type:
    """pypsrp's ``Fragmenter``, its messages' ids parsed once (module doc). Give it to a pool by class, before the
    pool opens: ``pool._fragmenter.__class__ = fast_fragmenter()``."""
    import pypsrp.messages
    import pypsrp.powershell

    ids = types.ModuleType(uuid.__name__, uuid.__doc__)
    ids.__dict__.update({name: value for name, value in vars(uuid).items() if not name.startswith("__")})
    ids.UUID = functools.lru_cache(maxsize=_IDS_KEPT)(uuid.UUID)  # type: ignore[attr-defined]
    message_globals = {**vars(pypsrp.messages), "uuid": ids}
    fragmenter_globals = dict(vars(pypsrp.powershell))
    pypsrp_message, pypsrp_fragmenter = pypsrp.messages.Message, pypsrp.powershell.Fragmenter
    rebound = [_rebound(function, message_globals)
               for function in (pypsrp_message.__init__, pypsrp_message.unpack)]
    rebound += [_rebound(function, fragmenter_globals)
                for function in (pypsrp_fragmenter.fragment, pypsrp_fragmenter.defragment)]
    if any(function is None for function in rebound):
        return pypsrp_fragmenter
    init, unpack_function, fragment, defragment = rebound

    class Message(pypsrp_message):  # type: ignore[misc,valid-type]
        __init__ = init
        unpack = staticmethod(unpack_function)  # type: ignore[arg-type]

    class Fragmenter(pypsrp_fragmenter):  # type: ignore[misc,valid-type]
        pass

    Fragmenter.fragment, Fragmenter.defragment = fragment, defragment
    message_globals["Message"] = fragmenter_globals["Message"] = Message
    return Fragmenter


def _rebound(function: Callable[..., Any], module_globals: dict[str, Any]) -> Callable[..., Any] | None:
    """pypsrp's ``function``, the same code, looking its global names up in ``module_globals``."""
    if function.__closure__ is not None or function.__kwdefaults__:
        return None
    made = types.FunctionType(function.__code__, module_globals, function.__name__, function.__defaults__)
    made.__qualname__ = function.__qualname__
    return made
