"""How exbe reads what the Exchange endpoint returns (deserialized objects as pypsrp hands them over)."""

from __future__ import annotations

from types import SimpleNamespace

from exbe.exchange import normalise
from exbe.transport import PipelineOutput


def obj(type_name: str, **props) -> SimpleNamespace:
    return SimpleNamespace(types=[f"Deserialized.{type_name}", "Deserialized.System.Object"],
                           adapted_properties={}, extended_properties=props)


def read(*objects) -> dict:
    return normalise(PipelineOutput(list(objects), [], [], None))


def test_dotnet_dates_with_seven_fractional_digits_are_read():
    facts = read(obj("Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
                     Thumbprint="ab cd", Services="IMAP, POP, SMTP", NotAfter="2030-01-01T10:00:00.1234567Z",
                     IsSelfSigned=True, FriendlyName="Microsoft Exchange", Subject="CN=EXCH01"))
    cert = facts["certificates"][0]
    assert cert["not_after"] == "2030-01-01T10:00:00Z"
    assert cert["thumbprint"] == "ABCD" and cert["services"] == ["IMAP", "POP", "SMTP"]


def test_services_none_means_no_assignment():
    facts = read(obj("Microsoft.Exchange.Management.SystemConfigurationTasks.ExchangeCertificate",
                     Thumbprint="AB", Services="None"))
    assert facts["certificates"][0]["services"] == []


def test_the_internal_transport_certificate_comes_from_the_transport_server_object():
    facts = read(obj("Microsoft.Exchange.Data.Directory.SystemConfiguration.TransportServer",
                     InternalTransportCertificateThumbprint="ef01"))
    assert facts["internal_transport"] == "EF01"


def test_serialization_signing_is_on_unless_an_override_disables_it():
    assert read()["serialization_signing"] is True
    facts = read(obj("Microsoft.Exchange.Data.Directory.SystemConfiguration.SettingOverride",
                     SectionName="EnableSerializationDataSigning", Parameters=["Enabled=False"]))
    assert facts["serialization_signing"] is False
