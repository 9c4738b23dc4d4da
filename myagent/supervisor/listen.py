"""What the server checks before it starts anything: its TLS files load and its ports bind.

The server binds its sockets before the zygote loads the agent file, so a port in use,
an address that is not this machine's or a certificate that does not load ends the
start with one line naming the option (ConfigError), before any sandbox exists.
"""

from __future__ import annotations

import errno
import socket
import ssl

from myagent.supervisor.exceptions import ConfigError

# OpenSSL reasons -> what the operator should hear.
_TLS_REASONS = {"PEM_LIB": "not a PEM file", "NO_START_LINE": "not a PEM file",
                "KEY_VALUES_MISMATCH": "the private key does not belong to the certificate",
                "CA_MD_TOO_WEAK": "the certificate's signature algorithm is too weak",
                "EE_KEY_TOO_SMALL": "the certificate's key is too small"}


def tls_context(cert: str, key: str) -> ssl.SSLContext | None:
    """The server-side TLS context of ``--tls-cert``/``--tls-key``; None without a certificate."""
    if not cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key or None)
    except ssl.SSLError as exc:
        text = str(exc.reason or exc)
        key_text = text.upper().replace(" ", "_")
        reason = next((why for code, why in _TLS_REASONS.items() if code in key_text), text)
        where = f"--tls-cert {cert}" + (f" / --tls-key {key}" if key else "")
        hint = "" if key else " (a key in a file of its own goes to --tls-key)"
        raise ConfigError(f"{where}: cannot load the certificate chain and its private key: {reason}{hint}") from None
    except OSError as exc:
        raise ConfigError(f"--tls-cert {cert}: {exc.strerror or exc}") from None
    return context


def bind_error(exc: OSError, host: str, port: int, option: str = "--port") -> ConfigError:
    """One line for a failed bind, naming the option to change."""
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"--host {host}: cannot resolve this name ({exc.strerror})")
    code = exc.errno
    if code == errno.EADDRINUSE:
        return ConfigError(f"{option} {port}: address already in use on {host} (another server is listening "
                           f"there: stop it, or choose another {option}; 0 picks a free port)")
    if code == errno.EACCES:
        return ConfigError(f"{option} {port}: permission denied (ports below 1024 need root or "
                           "CAP_NET_BIND_SERVICE; use a port of 1024 or more)")
    if code == errno.EADDRNOTAVAIL:
        return ConfigError(f"--host {host}: not an address of this machine (use 127.0.0.1, 0.0.0.0 for every "
                           "interface, or one of this machine's addresses)")
    return ConfigError(f"--host {host} {option} {port}: cannot listen: {exc.strerror or exc}")
