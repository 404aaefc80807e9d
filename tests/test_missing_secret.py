"""A secret the pipeline does not define reaches exbe as Azure's macro text, and exbe stops before any server.

Azure Pipelines maps an undefined variable into a step's ``env:`` as its literal macro, so a secret variable that is
not set, or a variable group that is not linked, gives exbe ``EXBE_PASSWORD=$(EXBE_PASSWORD)``. Tried as a
password, that text would be a failed logon on every server of the fleet, each one counting towards the account's
lockout; exbe says what is missing instead, with exit code 2.
"""

from __future__ import annotations

import pytest

from exbe.config import Credentials
from exbe.errors import ConfigError

from .conftest import USERNAME
from .exbe_cli import requests_seen, run_exbe


def test_an_unexpanded_password_macro_stops_the_run_before_any_server_is_contacted(fleet, tmp_path, capsys,
                                                                                   monkeypatch) -> None:
    result = run_exbe(fleet, tmp_path, capsys, monkeypatch, "verify", "--all", "--junit", str(tmp_path / "r.xml"),
                      password="$(EXBE_PASSWORD)")
    assert result.code == 2
    assert "EXBE_PASSWORD is the text $(EXBE_PASSWORD): the pipeline variable EXBE_PASSWORD is not defined" in (
        result.err)
    assert requests_seen(fleet) == 0, "no server saw a logon attempt"
    assert not (tmp_path / "r.xml").exists(), "nothing ran, so nothing is reported"


@pytest.mark.parametrize("variable, value", [("EXBE_USERNAME", "$(EXBE_USERNAME)"), ("EXBE_PASSWORD", " $(pw.1) ")])
def test_either_credential_as_a_macro_is_a_configuration_error_naming_the_variable(variable: str, value: str) -> None:
    env = {"EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": "S3cret-enough", variable: value}
    with pytest.raises(ConfigError) as raised:
        Credentials.from_env(env)
    assert raised.value.exit_code == 2
    assert str(raised.value).startswith(f"{variable} is the text {value.strip()}: the pipeline variable ")


def test_a_password_that_merely_contains_a_macro_like_part_is_a_password() -> None:
    credentials = Credentials.from_env({"EXBE_USERNAME": USERNAME, "EXBE_PASSWORD": "pre$(EXBE_PASSWORD)post"})
    assert credentials.password is not None and credentials.password.reveal() == "pre$(EXBE_PASSWORD)post"
