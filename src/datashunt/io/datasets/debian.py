"""Debian package synopses labelled with their archive section (a long-tailed topic task with 17
classes), and packages labelled with their section and debtags facets at once (several labels per item).

Built from the local package index (``apt-cache dumpavail``; run ``apt-get update`` first), so it
needs no download beyond the distribution's own package lists. Each item is the one-line
synopsis of a package ("Real-time strategy game of ancient warfare" -> ``games``); the package
name is left out because it often gives the section away. Duplicate synopses are dropped.
Counts follow the archive and are long-tailed (``net`` about 2,000, ``hamradio`` about 140).
"""

import hashlib
import re
import subprocess

import numpy as np
import pandas as pd

from ...exceptions import DataError

SECTIONS = (
    "admin",
    "database",
    "editors",
    "electronics",
    "fonts",
    "games",
    "graphics",
    "hamradio",
    "mail",
    "math",
    "net",
    "science",
    "sound",
    "text",
    "video",
    "web",
    "x11",
)


def paragraphs(text: str, continued: bool = False):
    r"""The fields of each paragraph of a Debian control-style file: first lines only, or with
    ``continued`` each field's continuation lines too, one per line after the first (their one
    leading space removed).

    Examples
    --------
    >>> next(paragraphs("Tag: a::b,\n c::d\nSection: x\n"))
    {'Tag': 'a::b,', 'Section': 'x'}
    >>> next(paragraphs("Tag: a::b,\n c::d\nSection: x\n", continued=True))["Tag"]
    'a::b,\nc::d'
    """
    for paragraph in text.split("\n\n"):
        fields, key = {}, None
        for line in paragraph.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
            elif continued and key is not None and line[:1].isspace():
                fields[key] += "\n" + line[1:]
        yield fields


def long_text(description: str) -> str:
    r"""The long part of a Debian description (the lines after the synopsis, as :func:`paragraphs`
    keeps them) as plain text: lines joined into paragraphs, a ``.`` line between paragraphs
    (a blank line), lines that start with a space (lists, code) kept as they are.

    Examples
    --------
    >>> long_text("Synopsis\nA game of\nwar.\n.\n  * fast\n  * free")
    'A game of war.\n\n  * fast\n  * free'
    """
    blocks, lines = [], []
    for line in description.split("\n")[1:]:
        if line.strip() == ".":
            blocks.append(lines)
            lines = []
        else:
            lines.append(line)
    blocks.append(lines)
    out = []
    for block in blocks:
        kept = []
        for line in block:
            if line[:1].isspace():  # displayed verbatim
                kept.append(line.rstrip())
            elif kept and not kept[-1][:1].isspace():
                kept[-1] += " " + line.strip()
            else:
                kept.append(line.strip())
        if kept:
            out.append("\n".join(kept))
    return "\n\n".join(out)


def parse_index(text: str, extra=()) -> pd.DataFrame:
    """Package, section and synopsis of each paragraph of a Debian package index (and the
    ``extra`` fields asked for, empty where a paragraph lacks them).

    Examples
    --------
    >>> parse_index("Package: 0ad\\nSection: games\\nDescription: Real-time strategy game\\n\\n").values.tolist()
    [['0ad', 'games', 'Real-time strategy game']]
    """
    rows = []
    for fields in paragraphs(text):
        if "Package" in fields and "Section" in fields and fields.get("Description"):
            rows.append(
                (
                    fields["Package"],
                    fields["Section"].split("/")[-1],
                    fields["Description"],
                    *(fields.get(name, "") for name in extra),
                )
            )
    return pd.DataFrame(rows, columns=["package", "section", "text", *extra])


def load_debian_sections(sections=SECTIONS) -> pd.DataFrame:
    """Synopses with columns ``text``, ``label`` (the section) and ``package``, sorted by package name."""
    try:
        done = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DataError(f"apt-cache dumpavail failed ({exc}); this data set needs Debian's apt") from None
    frame = parse_index(done.stdout)
    frame = frame[frame["section"].isin(sections)].sort_values("package")
    frame = frame.drop_duplicates("text").rename(columns={"section": "label"})
    missing = sorted(set(sections) - set(frame["label"]))
    if frame.empty or missing:
        raise DataError(f"the package index lacks section(s) {missing or list(sections)}; run apt-get update first")
    return frame.reset_index(drop=True)[["text", "label", "package"]]


FACETS = ("interface", "role", "use", "implemented-in", "works-with", "scope")  #: debtags facets most packages have


def parse_tags(value: str) -> dict:
    r"""The debtags of a ``Tag`` field, by facet (values in the order given; ``{a,b}`` groups expanded).

    Examples
    --------
    >>> parse_tags("interface::graphical, interface::x11, role::program,\nuse::{editing,viewing}")
    {'interface': ['graphical', 'x11'], 'role': ['program'], 'use': ['editing', 'viewing']}
    """
    out = {}
    for tag in re.findall(r"[^,\s{]+::(?:\{[^}]*\}|[^,\s]+)", value):
        facet, values = tag.split("::", 1)
        for v in values.strip("{}").split(","):
            out.setdefault(facet, []).append(v.strip())
    return out


def load_debian_facets(facets=("interface", "use"), min_count: int = 50) -> pd.DataFrame:
    """Packages with a section and every facet in ``facets``: columns ``text`` (``name: synopsis``),
    ``package``, ``section`` and one column per facet, sorted by package name.

    A package may carry several values of one facet (``interface::graphical`` and
    ``interface::x11``); its label for the facet is the one most packages carry (so every item has
    one class per subtask). Values (and sections) fewer than ``min_count`` packages carry become
    ``other``.
    """
    try:
        done = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise DataError(f"apt-cache dumpavail failed ({exc}); this data set needs Debian's apt") from None
    return facet_table(done.stdout, facets, min_count)


def facet_table(index: str, facets=("interface", "use"), min_count: int = 50) -> pd.DataFrame:
    """:func:`load_debian_facets` from the text of a package index."""
    rows = []
    for fields in paragraphs(index, continued=True):
        tags = parse_tags(fields.get("Tag", ""))
        if (
            fields.get("Package")
            and fields.get("Section")
            and fields.get("Description")
            and all(f in tags for f in facets)
        ):
            synopsis = fields["Description"].split("\n")[0]
            rows.append((f"{fields['Package']}: {synopsis}", fields["Package"], fields["Section"].split("/")[-1], tags))
    if not rows:
        raise DataError(f"no package in the index has a section and the facets {list(facets)}; run apt-get update")
    frame = pd.DataFrame(rows, columns=["text", "package", "section", "tags"]).drop_duplicates("package")
    for facet in facets:
        counts = pd.Series([v for t in frame["tags"] for v in set(t[facet])]).value_counts()
        frame[facet] = [max(t[facet], key=lambda v: (counts[v], v)) for t in frame["tags"]]
    for column in ("section", *facets):
        common = frame[column].value_counts()
        frame[column] = frame[column].where(frame[column].map(common) >= min_count, "other")
    return frame.drop(columns="tags").sort_values("package").reset_index(drop=True)


def facet_split(frame: pd.DataFrame, n_folds: int = 10) -> tuple:
    """Train, validation and test parts fixed by package name (a hash of it: one fold in ``n_folds``
    is test, one validation), so a package stays on its side whatever else changes in the index."""
    fold = np.array([hashlib.sha256(p.encode()).digest()[0] % n_folds for p in frame["package"]])
    return tuple(frame[mask].reset_index(drop=True) for mask in (fold >= 2, fold == 1, fold == 0))
