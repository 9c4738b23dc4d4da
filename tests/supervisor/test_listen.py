"""Start-up checks of the front: TLS files and bind errors become one ConfigError line."""

from __future__ import annotations

import errno
import socket
import subprocess

import pytest

from myagent.supervisor.exceptions import ConfigError
from myagent.supervisor.listen import bind_error, tls_context


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    root = tmp_path_factory.mktemp("certs")
    for name in ("a", "b"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-keyout", str(root / f"{name}.key"), "-out", str(root / f"{name}.crt"),
                        "-days", "1", "-subj", f"/CN={name}"],
                       check=True, capture_output=True)
    return root


def test_no_certificate_no_context():
    assert tls_context("", "") is None


def test_a_matching_pair_loads(certs):
    assert tls_context(str(certs / "a.crt"), str(certs / "a.key")) is not None


@pytest.mark.parametrize("cert, key, expected", [
    ("a.crt", "b.key", "--tls-key .*b.key: .*does not belong to the certificate"),
    ("a.crt", "", "--tls-cert .*a.crt: .*--tls-key"),
    ("a.key", "", "--tls-cert .*a.key: "),  # a key alone is no certificate chain
])
def test_files_that_do_not_load_name_the_option(certs, cert, key, expected):
    with pytest.raises(ConfigError, match=expected):
        tls_context(str(certs / cert), str(certs / key) if key else "")


def test_not_a_pem_file(tmp_path):
    junk = tmp_path / "junk.pem"
    junk.write_text("hello")
    with pytest.raises(ConfigError, match="not a PEM file"):
        tls_context(str(junk), "")


def test_a_port_in_use_is_one_line_naming_the_option():
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        probe = socket.socket()
        with pytest.raises(OSError) as info:
            probe.bind(("127.0.0.1", port))
        probe.close()
    finally:
        holder.close()
    message = str(bind_error(info.value, "127.0.0.1", port, "--status-port"))
    assert message.startswith(f"--status-port {port}: address already in use on 127.0.0.1") and "\n" not in message


@pytest.mark.parametrize("exc, expected", [
    (OSError(errno.EACCES, "permission denied"), "--port 80: permission denied (ports below 1024"),
    (OSError(errno.EADDRNOTAVAIL, "cannot assign"), "--host 10.1.2.3: not an address of this machine"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "--host 10.1.2.3: cannot resolve"),
    (OSError(errno.EMFILE, "Too many open files"), "--host 10.1.2.3 --port 80: cannot listen: Too many open files"),
])
def test_bind_errors(exc, expected):
    assert str(bind_error(exc, "10.1.2.3", 80)).startswith(expected)
