#!/usr/bin/env python3
"""Put one benchmark's section into docs/BENCHMARKS.md.

usage: bench-section.py DOC "HEADING" SECTION_TEXT

Replaces the section that starts with "## HEADING" (up to the next "## " heading), or appends the
text when the document has no such section yet. Written to a temporary file and renamed, so an
interrupted benchmark never leaves a half-written document.
"""
import os
import re
import sys


def main() -> None:
    path, heading, section = sys.argv[1], sys.argv[2], sys.argv[3].rstrip("\n") + "\n"
    text = open(path).read() if os.path.exists(path) else "# BlockMigrate benchmarks\n"
    pat = re.compile(r"^## " + re.escape(heading) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pat.search(text):
        text = pat.sub(lambda m: section + ("\n" if m.end() < len(text) else ""), text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
