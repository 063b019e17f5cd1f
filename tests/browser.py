"""Headless Chromium for the report tests: a missing browser skips the test with the command that installs it
(no test installs system packages)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0"]
# what a page shows when Markdown reaches it unconverted: **bold**, *italic*, `code`, a table row, a heading
RAW_MARKDOWN = re.compile(r"\*\*|`|(?<![\w*])\*\w[^*\n]*\*(?!\w)|^\s*\|.*\|\s*$|^#{1,6} ", re.M)


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("headless Chromium is not installed: `apt-get install chromium` (Debian/Ubuntu)")
    return found


def run(page: Path, profile: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}", *flags, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("script", "style", "title")
        if tag in ("p", "div", "li", "tr", "h1", "h2", "h3", "figcaption", "br"):
            self.parts.append("\n")

    def handle_endtag(self, tag):
        self._skip -= tag in ("script", "style", "title")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def rendered_text(page: Path, profile: Path) -> str:
    """The text a browser shows for `page`: Chromium's DOM after loading it, without tags, scripts and styles."""
    r = run(page, profile, "--dump-dom")
    assert r.returncode == 0 and "<body" in r.stdout, r.stderr[-2000:]
    parser = _Text()
    parser.feed(r.stdout)
    return "".join(parser.parts)
