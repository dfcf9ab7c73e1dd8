"""TLS for the relay: load a certificate, or mint a development CA and certificate (``--self-signed``).

The official SDKs always dial ``wss`` (protocol.md 1.1), so a development relay needs a certificate clients
trust. ``mint_development_certificate`` writes a small CA (``ca.pem``, the file to trust) and a server
certificate for the given host names signed by it (``cert.pem``, ``key.pem``). Files are reused while they
cover the same names and are valid for at least another day.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from hyco.exceptions import InvalidConfig
from hyco.server.config import TlsConfig

__all__ = ["DevelopmentCertificate", "mint_development_certificate", "server_ssl_context"]

_VALIDITY = datetime.timedelta(days=365)


@dataclass(frozen=True, slots=True)
class DevelopmentCertificate:
    """Paths of a minted development certificate.

    Attributes:
        ca: the CA certificate clients should trust (``NODE_EXTRA_CA_CERTS``, ``SSL_CERT_FILE``, ``--ca``).
        cert: the server certificate chain (server certificate, then the CA).
        key: the server's private key (mode 0600).
        hosts: the host names and IP addresses the certificate covers.
    """

    ca: Path
    cert: Path
    key: Path
    hosts: tuple[str, ...]


def _existing(directory: Path, hosts: tuple[str, ...]) -> DevelopmentCertificate | None:
    from cryptography import x509

    paths = DevelopmentCertificate(directory / "ca.pem", directory / "cert.pem", directory / "key.pem", hosts)
    if not all(p.exists() for p in (paths.ca, paths.cert, paths.key)):
        return None
    try:
        cert = x509.load_pem_x509_certificates(paths.cert.read_bytes())[0]
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound, OSError):
        return None
    covered = {str(n) for n in names.get_values_for_type(x509.DNSName)}
    covered |= {str(n) for n in names.get_values_for_type(x509.IPAddress)}
    fresh = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC) > datetime.timedelta(days=1)
    return paths if fresh and covered == set(hosts) else None


def mint_development_certificate(directory: Path, hosts: tuple[str, ...]) -> DevelopmentCertificate:
    """Create (or reuse) a development CA and a server certificate for ``hosts`` in ``directory``.

    Args:
        directory: where ``ca.pem``, ``cert.pem`` and ``key.pem`` go.
        hosts: DNS names and/or IP addresses; ``localhost`` and ``127.0.0.1`` are always added.

    Raises:
        InvalidConfig: ``cryptography`` is not installed (install ``hyco[server]``) or the files cannot be
            written.
    """
    names = tuple(dict.fromkeys((*hosts, "localhost", "127.0.0.1")))
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        raise InvalidConfig(
            "minting a development certificate needs the 'cryptography' package: pip install 'hyco[server]'"
        ) from None
    existing = _existing(directory, names)
    if existing is not None:
        return existing

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hyco development CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    alt_names: list[x509.GeneralName] = []
    for name in names:
        try:
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt_names.append(x509.DNSName(name))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = DevelopmentCertificate(directory / "ca.pem", directory / "cert.pem", directory / "key.pem", names)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        paths.ca.write_bytes(ca_cert.public_bytes(pem))
        paths.cert.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
        fd = os.open(paths.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(
                key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
            )
    except OSError as exc:
        raise InvalidConfig(
            f"cannot write the development certificate to {str(directory)!r}: {exc}"
        ) from None
    return paths


def server_ssl_context(
    tls: TlsConfig, data_dir: Path
) -> tuple[ssl.SSLContext, DevelopmentCertificate | None]:
    """The server-side SSL context for ``tls``; mints the development certificate when asked.

    Returns:
        The context, and the minted certificate (None when certfile/keyfile were given).

    Raises:
        InvalidConfig: a file is missing or the certificate and key do not match.
    """
    minted = None
    if tls.self_signed:
        minted = mint_development_certificate(data_dir / "tls", tls.self_signed)
        certfile, keyfile = minted.cert, minted.key
    else:
        assert tls.certfile is not None and tls.keyfile is not None
        certfile, keyfile = tls.certfile, tls.keyfile
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except FileNotFoundError as exc:
        raise InvalidConfig(f"server.tls: file not found: {exc.filename}") from None
    except (ssl.SSLError, OSError) as exc:
        raise InvalidConfig(f"server.tls: cannot load {certfile} / {keyfile}: {exc}") from None
    return context, minted
