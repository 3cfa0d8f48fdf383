"""Debian package synopses labelled with their archive section: a long-tailed topic task with 17 classes.

Built from the local package index (``apt-cache dumpavail``; run ``apt-get update`` first), so it
needs no download beyond the distribution's own package lists. Each item is the one-line
synopsis of a package ("Real-time strategy game of ancient warfare" -> ``games``); the package
name is left out because it often gives the section away. Duplicate synopses are dropped.
Counts follow the archive and are long-tailed (``net`` about 2,000, ``hamradio`` about 140).
"""

import subprocess

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


def paragraphs(text: str):
    """The fields of each paragraph of a Debian control-style file (first lines only: a field's
    continuation lines are left out)."""
    for paragraph in text.split("\n\n"):
        fields = {}
        for line in paragraph.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, value = line.split(":", 1)
                fields[key] = value.strip()
        yield fields


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
