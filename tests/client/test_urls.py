"""myagent/client/urls.py: every form a person types, for both the WebSocket and the HTTP side."""

from __future__ import annotations

import pytest

from myagent.client.urls import http_url, ws_url


@pytest.mark.parametrize("typed, ws, http", [
    ("ws://127.0.0.1:8080", "ws://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("127.0.0.1:8080", "ws://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("localhost:9000", "ws://localhost:9000", "http://localhost:9000"),
    ("https://agent.example.com/a/", "wss://agent.example.com/a/", "https://agent.example.com/a"),
    ("wss://agent.example.com", "wss://agent.example.com", "https://agent.example.com"),
    ("HTTP://h:1/?token=x", "ws://h:1/?token=x", "http://h:1"),
    ("  [::1]:8080 ", "ws://[::1]:8080", "http://[::1]:8080"),
])
def test_every_form_maps_to_both_schemes(typed, ws, http):
    assert ws_url(typed) == ws
    assert http_url(typed) == http


@pytest.mark.parametrize("typed, says", [
    ("ftp://h:1", "unsupported scheme 'ftp'"),
    ("http://", "no host name"),
    ("h:99999", "port must be a number"),
    ("h:port", "port must be a number"),
])
def test_bad_urls_are_refused_with_a_reason(typed, says):
    for convert in (ws_url, http_url):
        with pytest.raises(ValueError, match=says):
            convert(typed)


def test_status_refuses_a_bad_url_in_one_line_with_exit_2():
    import io

    from rich.console import Console

    from myagent.client.status import EXIT_UNREACHABLE, run

    out = io.StringIO()
    assert run("ftp://h:1", console=Console(file=out, width=200)) == EXIT_UNREACHABLE
    assert out.getvalue().strip() == ("'ftp://h:1': unsupported scheme 'ftp'; use ws://, wss://, http://, "
                                      "https:// or HOST:PORT")
