"""The documentation: the mkdocs site builds with --strict (no broken link or anchor, no page
left out of the nav), and every relative link in README.md points to a file that exists."""

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parents[1]

# [text](target) and [text](target "title"), but not images' or code spans' look-alikes.
MARKDOWN_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def test_site_builds_strict(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(REPO / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, (
        f"mkdocs build --strict failed (exit {result.returncode}):\n"
        f"{result.stdout}\n{result.stderr}"
    )
    assert (tmp_path / "site" / "index.html").is_file()


def relative_links(markdown: str) -> list[str]:
    """Targets of the Markdown links outside code, minus URLs, mail and in-page anchors."""
    links = MARKDOWN_LINK.findall(CODE.sub("", markdown))
    return [
        link
        for link in links
        if not re.match(r"^[a-z][a-z0-9+.-]*:", link, re.IGNORECASE)  # http:, mailto:, …
        and not link.startswith("#")
    ]


def test_readme_relative_links_resolve():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = relative_links(readme)
    assert links, "README.md has no relative links: the docs pages should be linked from it"
    missing = [link for link in links if not (REPO / unquote(link.split("#", 1)[0])).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_link_extraction():
    text = (
        "[a](docs/a.md) [b](https://x.org/b.md) ![img](pic.png) [c](#here) "
        "`[d](docs/d.md)` [e](docs/e.md#part)\n```\n[f](f.md)\n```"
    )
    assert relative_links(text) == ["docs/a.md", "docs/e.md#part"]
