"""Real X.509 certificates for the sandbox: a CA for WinRM HTTPS, self-signed and CA-issued Exchange certificates.

RSA key generation is the slow part, so keys come from a process-wide :class:`KeyPool` (a few keys per size, kept as
PEM in a cache directory). Keys repeat across sandbox hosts; :func:`clone_cert` and the pool's ``avoid`` argument
make sure a renewal never reuses the key of the certificate it replaces.

cryptography refuses SHA-1 and MD5 signatures in its certificate builder; old Exchange servers do carry such
certificates, so :func:`_resign` signs the same to-be-signed bytes with the weak hash itself (the AlgorithmIdentifier
of sha256/sha1/md5WithRSAEncryption have the same length, so the DER is patched in place).
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import ipaddress
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .private import DIR_MODE, private_dir, write_private

log = logging.getLogger("exbe.sandbox")

UTC = datetime.timezone.utc

#: AlgorithmIdentifier DER of <hash>WithRSAEncryption (OID 1.2.840.113549.1.1.x, NULL parameters).
_RSA_ALG_ID = {name: bytes.fromhex("300d06092a864886f70d0101") + bytes([last]) + b"\x05\x00"
               for name, last in (("sha256", 0x0B), ("sha1", 0x05), ("md5", 0x04))}
_WEAK_HASHES = {"sha1": hashes.SHA1(), "md5": hashes.MD5()}
#: How Windows (certutil, the MMC) names signature algorithms.
_WINDOWS_SIGNATURE_NAMES = {"sha256": "sha256RSA", "sha384": "sha384RSA", "sha512": "sha512RSA", "sha1": "sha1RSA",
                            "md5": "md5RSA"}
#: Keys kept per size; a host needs about five distinct keys, a renewal one more.
_POOL_SIZE = 8


def _now() -> datetime.datetime:
    return datetime.datetime.now(UTC).replace(microsecond=0)


def spki_id(public_key: Any) -> str:
    """SHA-1 of the SubjectPublicKeyInfo: tells keys apart."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha1(der).hexdigest()


class KeyPool:
    """RSA private keys per size, generated once and optionally persisted as PEM files in ``cache_dir``."""

    def __init__(self, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir
        self._keys: dict[int, list[rsa.RSAPrivateKey]] = {}
        self._lock = threading.Lock()

    def key(self, size: int, *, index: int = 0, avoid: Iterable[str] = ()) -> rsa.RSAPrivateKey:
        """Pooled key number ``index`` (modulo the pool) of ``size`` bits, skipping keys whose :func:`spki_id` is in
        ``avoid``; a new key is generated (and kept) when every pooled key is to be avoided."""
        avoided = set(avoid)
        with self._lock:
            keys = self._load(size)
            for offset in range(len(keys)):
                candidate = keys[(index + offset) % len(keys)]
                if spki_id(candidate.public_key()) not in avoided:
                    return candidate
            fresh = rsa.generate_private_key(public_exponent=65537, key_size=size)
            keys.append(fresh)
            return fresh

    def _load(self, size: int) -> list[rsa.RSAPrivateKey]:
        if size in self._keys:
            return self._keys[size]
        keys: list[rsa.RSAPrivateKey] = []
        for n in range(_POOL_SIZE):
            path = self.cache_dir / f"rsa{size}-{n}.pem" if self.cache_dir else None
            key = _read_key(path) if path and path.exists() else None
            if key is None or key.key_size != size:
                key = rsa.generate_private_key(public_exponent=65537, key_size=size)
                if path:
                    _cache_key(path, key_pem(key))
            keys.append(key)
        self._keys[size] = keys
        return keys


def _read_key(path: Path) -> rsa.RSAPrivateKey | None:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError):
        return None
    return key if isinstance(key, rsa.RSAPrivateKey) else None


def _cache_key(path: Path, text: str) -> None:
    """Keep a generated key in the cache; a cache that cannot be written only costs the next run the generation."""
    try:
        write_private(path, text)
    except OSError as exc:
        log.debug("sandbox key cache: %s not written: %s", path, exc)


def _default_cache_dir() -> Path:
    """``$EXBE_SANDBOX_KEY_CACHE``, else the user's own cache directory (``$XDG_CACHE_HOME`` or ``~/.cache``, on
    Windows ``%LOCALAPPDATA%``) ``/exbe/sandbox-keys``: never a predictable path in a directory others can write."""
    configured = os.environ.get("EXBE_SANDBOX_KEY_CACHE")
    if configured:
        return Path(configured)
    base = os.environ.get("LOCALAPPDATA") if os.name == "nt" else os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "exbe" / "sandbox-keys"


def _private_cache_dir() -> Path | None:
    """The key cache, owner-only (0700); None (keys generated in memory each run) when it cannot be made so."""
    try:
        return private_dir(_default_cache_dir())
    except OSError as exc:
        log.warning("sandbox key cache disabled: %s", exc)
        return None


_POOL: KeyPool | None = None
_POOL_LOCK = threading.Lock()


def key_pool() -> KeyPool:
    """The process-wide pool (cache directory: :func:`_default_cache_dir`, owner-only)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = KeyPool(_private_cache_dir())
        return _POOL


# -- PEM helpers -----------------------------------------------------------------------------------------------------
def key_pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode("ascii")


def cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_key(pem: str) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("the sandbox models RSA keys only")
    return key


@functools.lru_cache(maxsize=4096)
def load_cert(pem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem.encode("ascii"))


def thumbprint(pem: str) -> str:
    """Windows' thumbprint: SHA-1 of the DER encoding, upper-case hex."""
    return hashlib.sha1(load_cert(pem).public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def key_matches(cert_pem_text: str, key_pem_text: str) -> bool:
    return spki_id(load_cert(cert_pem_text).public_key()) == spki_id(load_key(key_pem_text).public_key())


# -- building certificates -------------------------------------------------------------------------------------------
def _name(text: str) -> x509.Name:
    """``"CN=EXCH01"`` or ``"CN=Contoso Issuing CA, O=Contoso"`` (Windows order, most specific first)."""
    oids = {"CN": NameOID.COMMON_NAME, "O": NameOID.ORGANIZATION_NAME, "OU": NameOID.ORGANIZATIONAL_UNIT_NAME,
            "C": NameOID.COUNTRY_NAME, "L": NameOID.LOCALITY_NAME, "S": NameOID.STATE_OR_PROVINCE_NAME,
            "DC": NameOID.DOMAIN_COMPONENT}
    attributes = []
    for part in reversed([p.strip() for p in text.split(",") if p.strip()]):
        key, _, value = part.partition("=")
        attributes.append(x509.NameAttribute(oids[key.strip().upper()], value.strip()))
    return x509.Name(attributes)


def _windows_name(name: x509.Name) -> str:
    labels = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
              NameOID.COUNTRY_NAME: "C", NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "S",
              NameOID.DOMAIN_COMPONENT: "DC"}
    return ", ".join(f"{labels.get(a.oid, a.oid.dotted_string)}={_attribute_text(a.value)}"
                     for a in reversed(list(name)))


def _attribute_text(value: str | bytes) -> str:
    """A name attribute's value as text. Only bit-string attributes (none that the sandbox writes) hold bytes; those
    show as ``#`` and hex, as in RFC 4514, rather than as a Python ``b'...'`` literal."""
    return value if isinstance(value, str) else "#" + value.hex()


def _san(dns_names: Iterable[str], ips: Iterable[str] = ()) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = [x509.DNSName(n) for n in dns_names]
    entries += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    return x509.SubjectAlternativeName(entries)


def _sign(builder: x509.CertificateBuilder, key: rsa.RSAPrivateKey, hash_name: str) -> x509.Certificate:
    hash_name = hash_name.lower()
    cert = builder.sign(key, hashes.SHA256())
    return cert if hash_name == "sha256" else _resign(cert, key, hash_name)


def _resign(cert: x509.Certificate, key: rsa.RSAPrivateKey, hash_name: str) -> x509.Certificate:
    """The same certificate signed with SHA-1 or MD5 (which cryptography's builder refuses)."""
    if hash_name not in _WEAK_HASHES:
        raise ValueError(f"unsupported signature hash {hash_name!r}; use sha256, sha1 or md5")
    der = cert.public_bytes(serialization.Encoding.DER)
    tbs = cert.tbs_certificate_bytes
    old_alg, new_alg = _RSA_ALG_ID["sha256"], _RSA_ALG_ID[hash_name]
    new_tbs = tbs.replace(old_alg, new_alg, 1)
    signature = key.sign(new_tbs, padding.PKCS1v15(), _WEAK_HASHES[hash_name])
    start = der.index(tbs)
    tail = der[start + len(tbs):]
    if not tail.startswith(old_alg) or not tail.endswith(cert.signature) or len(signature) != len(cert.signature):
        raise ValueError("unexpected certificate layout while re-signing")
    bit_string_header = tail[len(old_alg):len(tail) - len(cert.signature)]
    return x509.load_der_x509_certificate(der[:start] + new_tbs + new_alg + bit_string_header + signature)


def _serial() -> int:
    return x509.random_serial_number()


def _exchange_extensions(builder: x509.CertificateBuilder, key: rsa.RSAPrivateKey) -> x509.CertificateBuilder:
    return (builder
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))


def make_self_signed(subject_cn: str, dns_names: list[str], not_before: datetime.datetime,
                     not_after: datetime.datetime, key_size: int = 2048, hash: str = "sha256", *,
                     key: rsa.RSAPrivateKey | None = None, key_index: int = 0,
                     subject: str | None = None) -> tuple[str, str]:
    """A self-signed server certificate as Exchange setup makes it: ``(cert_pem, key_pem)``.

    ``subject`` (e.g. ``"CN=x, O=y"``, most specific first) replaces the plain ``CN=<subject_cn>``."""
    key = key or key_pool().key(key_size, index=key_index)
    name = _name(subject) if subject else x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(_serial()).not_valid_before(not_before).not_valid_after(not_after))
    if dns_names:
        builder = builder.add_extension(_san(dns_names), critical=False)
    cert = _sign(_exchange_extensions(builder, key), key, hash)
    return cert_pem(cert), key_pem(key)


class SandboxCA:
    """A certificate authority: the sandbox's own (WinRM HTTPS) or an organisation's issuing CA."""

    def __init__(self, cert: x509.Certificate, key: rsa.RSAPrivateKey) -> None:
        self.cert = cert
        self.key = key

    @property
    def ca_pem(self) -> str:
        return cert_pem(self.cert)

    @classmethod
    def create(cls, subject: str = "CN=exbe sandbox CA", *, key: rsa.RSAPrivateKey | None = None,
               years: int = 10) -> SandboxCA:
        key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = _name(subject)
        now = _now()
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(_serial()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=365 * years))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))
        return cls(cert, key)

    @classmethod
    def load_or_create(cls, directory: Path) -> SandboxCA:
        """The CA kept in ``directory`` (``sandbox-ca.pem`` + ``sandbox-ca.key``), created on first use."""
        directory = Path(directory)
        cert_file, key_file = directory / "sandbox-ca.pem", directory / "sandbox-ca.key"
        if cert_file.exists() and key_file.exists():
            cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
            key = _read_key(key_file)
            if key is not None and spki_id(cert.public_key()) == spki_id(key.public_key()) \
                    and cert.not_valid_after_utc > _now():
                return cls(cert, key)
        ca = cls.create()
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        write_private(key_file, key_pem(ca.key))
        cert_file.write_text(ca.ca_pem, encoding="ascii")
        return ca

    def issue(self, subject: str, dns_names: list[str], not_before: datetime.datetime,
              not_after: datetime.datetime, *, key: rsa.RSAPrivateKey, ips: Iterable[str] = (),
              hash: str = "sha256") -> x509.Certificate:
        ca_ski = self.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(self.cert.subject)
                   .public_key(key.public_key()).serial_number(_serial())
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .add_extension(_san(dns_names, ips), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
                                  critical=False))
        return _sign(_exchange_extensions(builder, key), self.key, hash)

    def issue_server_cert(self, hostnames: list[str], ips: list[str]) -> tuple[str, str]:
        """A TLS server certificate for a WinRM HTTPS listener: ``(cert_pem, key_pem)``."""
        key = key_pool().key(2048, index=_POOL_SIZE - 1)
        now = _now()
        cert = self.issue(f"CN={hostnames[0] if hostnames else ips[0]}", hostnames,
                          now - datetime.timedelta(days=1), now + datetime.timedelta(days=825), key=key, ips=ips)
        return cert_pem(cert), key_pem(key)


@functools.lru_cache(maxsize=1)
def contoso_issuing_ca() -> SandboxCA:
    """The organisation's issuing CA that signed the public (Default Web Site) certificates; one per process."""
    return SandboxCA.create("CN=Contoso Issuing CA, O=Contoso, C=US", key=key_pool().key(2048, index=_POOL_SIZE - 2))


def make_ca_issued(subject_cn: str, dns_names: list[str], not_before: datetime.datetime,
                   not_after: datetime.datetime, *, key_size: int = 2048, key_index: int = 1,
                   ca: SandboxCA | None = None) -> tuple[str, str]:
    """A certificate issued by the Contoso Issuing CA (or ``ca``): ``(cert_pem, key_pem)``."""
    key = key_pool().key(key_size, index=key_index)
    cert = (ca or contoso_issuing_ca()).issue(f"CN={subject_cn}", dns_names, not_before, not_after, key=key)
    return cert_pem(cert), key_pem(key)


def clone_cert(cert_pem_text: str, new_key: rsa.RSAPrivateKey, not_before: datetime.datetime,
               not_after: datetime.datetime, hash: str = "sha256") -> str:
    """``New-SelfSignedCertificate -CloneCert``: same subject, SANs and extensions, ``new_key``, new validity.

    Raises ValueError when ``new_key`` is the key of the original (a renewal must change the key)."""
    original = load_cert(cert_pem_text)
    if spki_id(original.public_key()) == spki_id(new_key.public_key()):
        raise ValueError("a cloned certificate needs a new key")
    builder = (x509.CertificateBuilder().subject_name(original.subject).issuer_name(original.subject)
               .public_key(new_key.public_key()).serial_number(_serial())
               .not_valid_before(not_before).not_valid_after(not_after))
    for ext in original.extensions:
        if isinstance(ext.value, x509.SubjectKeyIdentifier):
            builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(new_key.public_key()), False)
        elif not isinstance(ext.value, x509.AuthorityKeyIdentifier):
            builder = builder.add_extension(ext.value, ext.critical)
    return cert_pem(_sign(builder, new_key, hash))


def cert_info(pem: str) -> dict[str, Any]:
    """The CERT fields of the facts contract that come from the certificate itself."""
    return dict(_cert_info(pem))


@functools.lru_cache(maxsize=4096)
def _cert_info(pem: str) -> tuple[tuple[str, Any], ...]:
    cert = load_cert(pem)
    public_key = cert.public_key()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns_names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns_names = []
    hash_name = cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else "unknown"
    info = {
        "thumbprint": thumbprint(pem),
        "subject": _windows_name(cert.subject),
        "issuer": _windows_name(cert.issuer),
        "not_before": iso(cert.not_valid_before_utc),
        "not_after": iso(cert.not_valid_after_utc),
        "signature_algorithm": _WINDOWS_SIGNATURE_NAMES.get(hash_name, f"{hash_name}RSA"),
        "key_algorithm": "RSA" if isinstance(public_key, rsa.RSAPublicKey) else type(public_key).__name__,
        "key_size": public_key.key_size if isinstance(public_key, rsa.RSAPublicKey) else 0,
        "dns_names": list(dns_names),
        "self_signed": cert.issuer == cert.subject,
        "serial_number": format(cert.serial_number, "X"),
    }
    return tuple(info.items())


def iso(moment: datetime.datetime) -> str:
    """ISO 8601 UTC with a ``Z``, seconds precision (the contract's time format)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def add_years(moment: datetime.datetime, years: int) -> datetime.datetime:
    """``DateTime.AddYears``: 29 February becomes 28 February in a common year."""
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:
        return moment.replace(year=moment.year + years, day=28)


def parse_iso(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
