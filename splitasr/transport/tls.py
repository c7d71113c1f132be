"""TLS for the transport: server and channel credentials from PEM files, checked up front.

gRPC reads PEM bytes lazily: a wrong file would surface only at the first connection, as
an opaque handshake failure. Here every file is read and parsed by Python's :mod:`ssl`
(certificate chain and key loaded together, so a key that does not match its certificate
is caught) before gRPC sees it, and any problem is one :class:`ConfigError` line naming
the file.

* :func:`server_credentials` -> ``grpc.ssl_server_credentials`` (``splitasr serve
  --tls-cert --tls-key``);
* :func:`channel_credentials` -> ``grpc.ssl_channel_credentials`` with the given CA bundle
  or, without one, the system's trusted roots (``splitasr edge transcribe --tls-ca`` /
  ``--tls``).
"""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from splitasr.errors import ConfigError

MAX_PEM_BYTES = 1024 * 1024  # a certificate chain or key is a few kB; refuse anything absurd


def _read_pem(path: str | Path, what: str) -> bytes:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_PEM_BYTES:
            raise ConfigError(f"{path}: {what} is larger than {MAX_PEM_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{path}: the {what} is not a PEM file (no -----BEGIN line)")
    return data


def server_credentials(cert_file: str | Path, key_file: str | Path) -> grpc.ServerCredentials:
    """Credentials for a TLS server from a PEM certificate chain and its PEM private key
    (unencrypted). Raises :class:`ConfigError` when a file is missing, unreadable, not PEM,
    or the key does not belong to the certificate."""
    cert = _read_pem(cert_file, "TLS certificate")
    key = _read_pem(key_file, "TLS private key")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(cert_file), str(key_file), password=lambda: b"")
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(
            f"{cert_file}, {key_file}: not a usable certificate and matching unencrypted key ({reason})"
        ) from None
    return grpc.ssl_server_credentials([(key, cert)])


def channel_credentials(ca_file: str | Path | None = None) -> grpc.ChannelCredentials:
    """Credentials for a TLS channel that trusts the PEM certificates in ``ca_file`` (a
    self-signed server certificate is its own CA) or, with ``None``, the system's roots."""
    if ca_file is None:
        return grpc.ssl_channel_credentials()
    ca = _read_pem(ca_file, "TLS CA certificate")
    try:
        ssl.create_default_context(cadata=ca.decode("ascii", errors="replace"))
    except (ssl.SSLError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{ca_file}: not a usable CA certificate ({reason})") from None
    return grpc.ssl_channel_credentials(root_certificates=ca)


__all__ = ["MAX_PEM_BYTES", "channel_credentials", "server_credentials"]
