"""The flags only the organization jobs (`exbe auth`, `exbe federation`) take, and their thresholds."""

from __future__ import annotations

import dataclasses

from ..auth_rule import Thresholds


@dataclasses.dataclass(frozen=True)
class JobFlags:
    """The flags only the organization jobs take."""

    hybrid: bool = False  # `exbe auth --hybrid`: the admin acknowledges the hybrid steps
    ignore_unreachable: bool = False  # `--ignore-unreachable`: act although a server could not be read
    cer: str | None = None  # `exbe auth --cer FILE`: where the next certificate's public part goes (hybrid)
    publish: bool = False  # `exbe federation --publish`
    domain: str | None = None  # `exbe federation --domain`: the domain whose TXT proof is printed
    thresholds: Thresholds = Thresholds()  # exbe.defaults.auth_certificate
