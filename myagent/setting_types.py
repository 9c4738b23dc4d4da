"""Value parsers of the settings table: one function per kind, each returning the value or
raising ValueError with a problem text that a person can act on.

Pure (no I/O beyond looking at a named file or user): the settings table
(myagent/settings.py) names the option or environment variable around the
problem, the CLI prints it as one line.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2,
               "mib": 1024**2, "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4,
               "tb": 1000**4, "tib": 1024**4}
_BINARY = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))
_NAME_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$", re.IGNORECASE)
STORE_SCHEMES = ("memory:", "sqlite://", "redis://", "rediss://", "unix://")


def parse_size(text: str | int) -> int:
    """Parse ``512MB``, ``64KiB``, ``1048576`` into bytes (decimal and binary units)."""
    if isinstance(text, int):
        return text
    match = _SIZE_RE.match(str(text))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError("not a size (examples: 512MiB, 64KiB, 1GB; a bare number is bytes)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def is_bare_number(text: object) -> bool:
    """A size written without a unit (``512``): bytes, and a common slip for MiB."""
    return isinstance(text, str) and text.strip().isdigit()


def format_size(value: float) -> str:
    """``1048576`` -> ``1MiB``; sizes that are not a whole binary unit stay in bytes."""
    for unit, factor in _BINARY:
        if value >= factor and value % factor == 0:
            return f"{int(value // factor)}{unit}"
    return "0" if not value else f"{int(value)} bytes" if value != 1 else "1 byte"


def unit_hint(number: str, minimum: float) -> str:
    """The smallest binary unit that makes a bare ``number`` reach ``minimum``: 512 -> 512MiB."""
    count = float(number)
    for unit, factor in reversed(_BINARY):
        if count * factor >= minimum:
            return f"{number.strip()}{unit}"
    return f"{number.strip()}TiB"


def parse_int(text: object) -> int:
    if isinstance(text, bool):
        raise ValueError("not an integer")
    if isinstance(text, int):
        return text
    try:
        return int(str(text).strip())
    except ValueError:
        raise ValueError("not an integer") from None


def parse_number(text: object, what: str = "a number") -> float:
    try:
        value = float(str(text).strip()) if not isinstance(text, (int, float)) else float(text)
    except ValueError:
        raise ValueError(f"not {what}") from None
    if not math.isfinite(value):
        raise ValueError(f"not {what}: use a finite value")
    return value


def parse_bool(text: object) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("not a boolean (use true or false)")


def check_host(text: str) -> None:
    """An IP address or a host name; a dotted number that is not an IPv4 address (999.1.1.1)
    is refused here, before it reaches a DNS lookup that would take seconds to fail."""
    host = text.strip().strip("[]") if text.startswith("[") else text.strip()
    if host in ("", "0.0.0.0", "::"):
        return
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("not a valid IPv6 address") from None
        return
    if re.fullmatch(r"[\d.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ValueError("not a valid IPv4 address (four numbers from 0 to 255)") from None
        return
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_NAME_RE.match(label) for label in labels):
        raise ValueError("not a valid host name or IP address")


def check_store(text: str) -> None:
    if not text.startswith(STORE_SCHEMES) and text not in ("memory", "memory://"):
        raise ValueError("unknown session store: use memory:, sqlite:///path/to.db or redis://host:port/db")


def check_file(path: str) -> None:
    """An existing, readable regular file."""
    if not os.path.exists(path):
        raise ValueError("no such file")
    if os.path.isdir(path):
        raise ValueError("is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise ValueError("not readable by this user (permission denied)")


def check_dir(path: str) -> None:
    """An existing directory."""
    if not os.path.exists(path):
        raise ValueError("no such directory")
    if not os.path.isdir(path):
        raise ValueError("not a directory")


def check_address(text: str) -> None:
    """An IP address: what a TCP peer is compared with (a name never matches)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise ValueError("not an IP address (the proxy's address as this server sees it)") from None


def check_user(name: str) -> None:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ValueError("no such user on this machine") from None


def check_env_name(name: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError("not an environment variable name")
