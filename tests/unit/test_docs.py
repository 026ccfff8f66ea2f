"""The documentation names what the code has (every setting, every metric), the README stays a
quick start, links between documents land on real headings, and no file cites a document the
repository does not ship.

``.venv/bin/python -m tests.unit.test_docs`` prints the settings table of docs/configuration.md,
generated from ``drift_segment_source/config.py``.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drift_segment_source.config import SETTINGS, Setting
from drift_segment_source.metrics import PREFIX

from ..support.paths import ROOT

README_MAX_LINES = 300
CONFIGURATION = ROOT / "docs" / "configuration.md"

# Environment variables docs/configuration.md may name that are not settings of the service:
# each with the file that reads it (the test checks it does).
NOT_SETTINGS = {
    "PROMETHEUS_MULTIPROC_DIR": "drift_segment_source/gunicorn_conf.py",
    "REQUIRE_POSTGRES": "tests/conftest.py",
    "REQUIRE_BROWSER": "tests/support/browser.py",
    "TEST_POSTGRES_URL": "tests/support/postgres.py",
}

# The changelog may say what a past version was built against.
MAY_CITE_HISTORY = ("CHANGELOG.md",)

# Citations of documents this repository does not ship: a contract's sections, a platform
# notes file, tracker issue numbers, the development machine's shared folders. The patterns
# are spelled so that this file does not match them itself.
OUTSIDE_REFERENCES = re.compile(
    r"\bS[P]EC\b|\bREFERENC[E]\.md|\u00a7|\b[Ii]ssues? #?[0-9]+|/wor[k]/")

# Folders of tools' caches and of local runs, never part of the repository (any folder whose
# name starts with a dot is left out too, but .ci; so is a worktree's .git file).
SKIPPED_FOLDERS = {"__pycache__", "instance", "test-artifacts", "build", "dist", "node_modules"}
# A Markdown link to a document, or a path to one (with a folder) written in any file.
MARKDOWN_LINK = re.compile(r"\]\(([^)#\s]+\.md)(#[\w-]+)?\)")
DOCUMENT_PATH = re.compile(r"(?<![\w/.-])((?:\.\./)*(?:[\w.-]+/)+[\w.-]+\.md)(#[\w-]+)?")


def shown_default(default: Any) -> str:
    """A setting's default as the documentation shows it."""
    if default in (None, "", ()):
        return "unset"
    if isinstance(default, bool):
        return "`true`" if default else "`false`"
    if isinstance(default, float) and default.is_integer():
        return f"`{int(default)}`"
    return f"`{default}`"


def shown_range(setting: Setting) -> str:
    """The values a numeric setting may take, as the documentation shows them."""
    return "" if setting.bounds is None else str(setting.bounds)


def settings_table() -> str:
    """The table of every setting, in declaration order, as docs/configuration.md has it."""
    rows = ["| variable | default | range | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        required = f" **Required** ({setting.required_in})." if setting.required_in else ""
        meaning = setting.doc.replace("|", "\\|") + required
        rows.append(f"| `{setting.name}` | {shown_default(setting.default)} | "
                    f"{shown_range(setting)} | {meaning} |")
    return "\n".join(rows) + "\n"


def documented_settings() -> dict[str, str]:
    """Variable → default column, from the rows of docs/configuration.md's tables."""
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| ([^|]*) \|", CONFIGURATION.read_text(),
                      re.MULTILINE)
    return {name: default.strip() for name, default in rows}


def documented_ranges() -> dict[str, str]:
    """Variable → range column, from the rows of docs/configuration.md's settings table."""
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| [^|]* \| ([^|]*) \|",
                      CONFIGURATION.read_text(), re.MULTILINE)
    return {name: allowed.strip() for name, allowed in rows}


# What a benchmark's smoke run writes beside the reports (git-ignored, never shipped).
RUN_OUTPUT = ("-quick.json", "-quick.md")


def repository_files() -> Iterator[Path]:
    """Every text file of the repository (caches, virtualenvs and run output left out)."""
    for folder, subfolders, names in os.walk(ROOT):
        subfolders[:] = sorted(
            name for name in subfolders
            if name not in SKIPPED_FOLDERS and not name.endswith(".egg-info")
            and (not name.startswith(".") or name == ".ci"))
        for name in sorted(names):
            path = Path(folder) / name
            if (name != ".git" and not name.endswith(RUN_OUTPUT) and path.is_file()
                    and b"\0" not in path.read_bytes()):
                yield path


def anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@functools.cache
def anchors_of(document: Path) -> set[str]:
    """The anchors of every heading of a Markdown file (code blocks left out)."""
    text = re.sub(r"^```.*?^```", "", document.read_text(), flags=re.MULTILINE | re.DOTALL)
    return {anchor(heading) for heading in re.findall(r"^#+ (.+)$", text, re.MULTILINE)}


def test_readme_is_a_quick_start_of_at_most_300_lines() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_MAX_LINES
    for command in ("scripts/run", "scripts/test", "scripts/test --fast"):
        assert f"{command}\n" in readme or f"`{command}`" in readme, command
    assert (ROOT / "scripts" / "run").stat().st_mode & 0o111
    assert (ROOT / "scripts" / "test").stat().st_mode & 0o111


def test_configuration_documents_every_setting_with_its_default() -> None:
    documented = documented_settings()
    declared = {setting.name: shown_default(setting.default) for setting in SETTINGS}
    assert sorted(set(declared) - set(documented)) == []
    assert {name: documented[name] for name in declared} == declared


def test_configuration_states_the_range_of_every_numeric_setting() -> None:
    documented = documented_ranges()
    declared = {setting.name: shown_range(setting) for setting in SETTINGS}
    assert {name: documented.get(name) for name in declared} == declared


def test_configuration_names_only_variables_that_exist() -> None:
    named = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|PORT)(?:=[^`]*)?`",
                           CONFIGURATION.read_text()))
    declared = {setting.name for setting in SETTINGS}
    assert sorted(named - declared - set(NOT_SETTINGS)) == []
    for name, reader in NOT_SETTINGS.items():
        assert name in (ROOT / reader).read_text(), f"{reader} no longer reads {name}"


def test_readme_names_only_settings_that_exist() -> None:
    named = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)(?:=[^`]*)?`",
                           (ROOT / "README.md").read_text()))
    assert sorted(named - {setting.name for setting in SETTINGS}) == []


def test_metrics_registry_lists_exactly_the_metrics_defined() -> None:
    registry = (ROOT / "docs" / "metrics.md").read_text()
    documented = set(re.findall(r"^\| `(drift_segment_source_\w+)`", registry, re.MULTILINE))
    source = (ROOT / "drift_segment_source" / "metrics.py").read_text()
    defined = {PREFIX + name for name in re.findall(r'PREFIX \+ "(\w+)"', source)}
    assert len(defined) >= 9
    assert documented == defined


def test_links_to_documents_land_on_a_file_and_heading() -> None:
    broken = []
    for path in repository_files():
        text = path.read_text(errors="replace")
        links = DOCUMENT_PATH.findall(text)
        if path.suffix == ".md":
            links += MARKDOWN_LINK.findall(text)
        else:
            links = [(target, fragment) for target, fragment in links
                     if target.startswith("docs/")]  # elsewhere, only docs/ paths are links
        for target, fragment in links:
            if target.startswith("docs/"):
                document = ROOT / target
            else:
                document = (path.parent / target).resolve()
                if not document.exists() and (ROOT / target).exists():
                    document = ROOT / target  # a path from the repository root
            where = f"{path.relative_to(ROOT)} → {target}{fragment}"
            if not document.is_file():
                broken.append(f"{where}: no such file")
            elif fragment and fragment[1:] not in anchors_of(document):
                broken.append(f"{where}: no such heading")
    assert broken == []


def test_no_file_cites_documents_the_repository_does_not_ship() -> None:
    citing = []
    for path in repository_files():
        relative = path.relative_to(ROOT).as_posix()
        if relative in MAY_CITE_HISTORY:
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE_REFERENCES.search(line):
                citing.append(f"{relative}:{number}: {line.strip()[:100]}")
    assert citing == []


if __name__ == "__main__":
    print(settings_table(), end="")
