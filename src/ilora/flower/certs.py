"""Certificates and SuperNode keys for a local trial of Flower's Deployment Engine.

:func:`make_trial_credentials` writes, into one directory:

- ``ca.crt``: a self-signed certificate authority (EC P-384, ``days`` of validity); its private
  key is never written, so nothing else can be signed with it later;
- ``server.pem`` / ``server.key``: the SuperLink's TLS certificate, signed by that CA, valid for
  ``localhost``, ``127.0.0.1`` and ``::1`` plus any ``hosts`` given (DNS names or IP addresses);
- ``nodes/node-<i>.key`` / ``nodes/node-<i>.pub``: one NIST P-384 key pair per SuperNode, the
  private key in OpenSSH format (what ``flower-supernode --auth-supernode-private-key`` loads) and
  the public key as one OpenSSH line (what ``flwr supernode register`` loads);
- ``README.md``: what each file is for, and that all of it is for local trials only.

Private keys are written with mode 0600. A production deployment takes its server certificate
from the organisation's CA and creates each SuperNode's key on the SuperNode's own machine.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.oid import NameOID

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
README = """# Certificates and SuperNode keys for a LOCAL TRIAL ONLY

Made by `ilora flower certs`, valid for {days} day(s) from {start}. Do not use them in
production: take the SuperLink's certificate from your organisation's CA, and create each
SuperNode's key pair on its own machine.

- `ca.crt`: the trial CA (its private key was not kept). SuperNodes and the `flwr` CLI trust it
  (`--root-certificates ca.crt`, `root-certificates = "/abs/path/ca.crt"`).
- `server.pem`, `server.key`: the SuperLink's TLS certificate and key, for {hosts}
  (`flower-superlink --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key`).
- `nodes/node-<i>.key`: SuperNode i's private key (`flower-supernode
  --auth-supernode-private-key nodes/node-<i>.key`); `nodes/node-<i>.pub`: its public key
  (`flwr supernode register nodes/node-<i>.pub <connection>`).
"""


class CredentialsExistError(FileExistsError):
    """The target directory already holds trial credentials."""


@dataclass(frozen=True)
class TrialCredentials:
    """Paths of the files :func:`make_trial_credentials` wrote."""

    ca: Path
    server_cert: Path
    server_key: Path
    node_keys: tuple[tuple[Path, Path], ...]  # (private, public) per SuperNode


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ilora local trial"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_trial_credentials(
    out: Path, nodes: int, days: int = 7, hosts: list[str] | None = None, force: bool = False
) -> TrialCredentials:
    """Write a trial CA, the SuperLink's certificate and ``nodes`` SuperNode key pairs to ``out``.

    Args:
        out: the directory to write (created if missing).
        nodes: how many SuperNode key pairs to make (0 or more).
        days: validity of the certificates, from now.
        hosts: extra names or IP addresses the SuperLink's certificate is valid for.
        force: overwrite credentials already in ``out``.

    Raises:
        CredentialsExistError: if ``out/ca.crt`` exists and ``force`` is false.
        ValueError: if ``nodes`` is negative or ``days`` is not positive.

    """
    if nodes < 0 or days < 1:
        raise ValueError(f"need nodes >= 0 and days >= 1, got nodes={nodes}, days={days}")
    if (out / "ca.crt").exists() and not force:
        raise CredentialsExistError(
            f"{out} already holds trial credentials (ca.crt); pick another directory or --force"
        )
    names = list(dict.fromkeys([*LOCAL_HOSTS, *(hosts or [])]))
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)  # clock skew
    end = start + datetime.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_cert = _ca_certificate(ca_key, start, end)
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = _server_certificate(server_key, (ca_key, ca_cert), names, start, end)
    pem = serialization.Encoding.PEM
    ca = _write(out / "ca.crt", ca_cert.public_bytes(pem))
    cert = _write(out / "server.pem", server_cert.public_bytes(pem))
    key = _write(out / "server.key", _pem_key(server_key), private=True)
    pairs = tuple(_node_pair(out / "nodes", i) for i in range(nodes))
    hosts_text = ", ".join(f"`{h}`" for h in names)
    _write(
        out / "README.md", README.format(days=days, start=start.date(), hosts=hosts_text).encode()
    )
    return TrialCredentials(ca, cert, key, pairs)


def _ca_certificate(
    ca_key: ec.EllipticCurvePrivateKey, start: datetime.datetime, end: datetime.datetime
) -> x509.Certificate:
    """Return the trial CA's self-signed certificate, valid from ``start`` to ``end``."""
    return (
        x509.CertificateBuilder()
        .subject_name(_name("ilora trial CA"))
        .issuer_name(_name("ilora trial CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA384())
    )


def _server_certificate(
    server_key: ec.EllipticCurvePrivateKey,
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate],
    names: list[str],
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.Certificate:
    """Return the SuperLink's certificate for ``names``, signed by the CA ``(key, certificate)``."""
    ca_key, ca_cert = ca
    return (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(_san(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA384())
    )


def _node_pair(directory: Path, index: int) -> tuple[Path, Path]:
    """Write SuperNode ``index``'s P-384 key pair in OpenSSH format; return (private, public)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return (
        _write(directory / f"node-{index}.key", private, private=True),
        _write(directory / f"node-{index}.pub", public + f" ilora-node-{index}\n".encode()),
    )
