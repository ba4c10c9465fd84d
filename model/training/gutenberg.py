"""Turning one raw public-domain book into clean tales.

Project Gutenberg texts carry a licence header and footer, hard-wrapped lines, tables of
contents, illustration captions, footnotes and editorial prefaces. A story model should see
none of it: the prose alone, one tale (or chapter) per document, with its title line first —
the format of `../shared/corpus/tales/` that `model.training.corpus` reads.

The rules are general (they look at the shape of a paragraph, not at one book), so a new work
needs no code; `TITLE_EXCEPTIONS` names the few section titles that are not tales.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

START_MARKERS = (
    re.compile(r"^\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*$", re.M | re.I),
    re.compile(r"^\*END\*?\s*THE SMALL PRINT.*$", re.M | re.I),
)
END_MARKERS = (
    re.compile(r"^\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG.*$", re.M | re.I),
    re.compile(r"^\s*End of (the )?Project Gutenberg.*$", re.M | re.I),
    re.compile(r"^\s*End of this Project Gutenberg.*$", re.M | re.I),
)
PRODUCER_LINE = re.compile(
    r"^(produced by|e-text prepared by|this e-?text|html version|note: project gutenberg|printed and bound).*", re.I
)
SOURCE_NOTE = re.compile(
    r"^\[[^\]]{0,150}\]\.?$"
    r"|^(from|told by|translated from|adapted from) .{0,120}(m[aä]h?rchen|contes|folk|tales|von ).{0,60}$",
    re.I,
)
"""Lang's "[From Ungarische Mährchen.]": where a tale came from, not part of it."""
CAPTION = re.compile(r"\b(facing|frontispiece)\b\s*\d*\s*$|line-art drawing", re.I)
BODY_HEADINGS = re.compile(r"^(the |another )?moral\.?$", re.I)
"""Headings inside a tale (Perrault's verse morals) that must not start a new one."""

NOT_TALES = re.compile(
    r"^(preface|contents|table of contents|introduction|introductory|notes?( and references)?|footnotes?"
    r"|list of illustrations|illustrations|index|glossary|appendix|dedication|transcriber.*|the end"
    r"|finis|errata|bibliography|author'?s note|to my readers|to the (friendly )?reader)\b",
    re.I,
)
"""Section titles whose sections are editorial matter, not stories (the 1922 Perrault introduction
among them)."""

BRACKETED = re.compile(r"\[(illustration|footnote|transcriber|sidenote|note)[^\]]*\]", re.I | re.S)
FOOTNOTE_MARK = re.compile(r"\[(\d+|[A-Z]|\*)\]")
ROMAN_ONLY = re.compile(r"^(chapter\s+)?[IVXLC]+\.?$|^\d+\.?$", re.I)
LEADING_NUMBER = re.compile(r"^((chapter|story|tale)\s+)?([IVXLC]+|\d+)\s*[.:)]?\s+", re.I)
PAGE_NUMBER = re.compile(r"\s{2,}(\d+|[\"”]\s*\d+)$")
SEPARATOR = "<|endoftext|>"


@dataclass(frozen=True)
class Tale:
    """One story (or chapter) of one work; `title` is its heading as printed, tidied."""

    work: str
    title: str
    text: str

    @property
    def words(self) -> int:
        return len(self.text.split())


def decode(raw: bytes) -> str:
    """UTF-8 where it is, else Latin-1 (the `-8.txt` Gutenberg files); newlines made plain."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def strip_licence(text: str) -> str:
    """Keep what lies between the Gutenberg start and end markers (the whole text when absent)."""
    start = 0
    for marker in START_MARKERS:  # in order of trust: the small print may sit in the footer
        found = marker.search(text)
        if found:
            start = found.end()
            break
    end = len(text)
    for marker in END_MARKERS:
        found = marker.search(text, start)
        if found:
            end = min(end, found.start())
    return text[start:end]


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, hard wraps joined, editorial brackets and footnote marks gone."""
    text = BRACKETED.sub("", text)
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.split("\n") if line.strip()]
        if not lines:
            continue
        para = " ".join(lines)
        para = FOOTNOTE_MARK.sub("", para)
        para = re.sub(r"[ \t]+", " ", para).strip()
        para = para.replace("_", "")
        if not para or PRODUCER_LINE.match(para) or SOURCE_NOTE.match(para) or CAPTION.search(para):
            continue
        if not re.fullmatch(r"[*\s.·-]+", para):
            out.append(para)
    return out


def _letters(text: str) -> str:
    return "".join(ch for ch in text if ch.isalpha())


def is_title(para: str) -> bool:
    """A heading: one short line, capitalised like a title, not a sentence or a spoken line."""
    if len(para) > 90 or len(para.split()) > 14 or ROMAN_ONLY.match(para) or BODY_HEADINGS.match(para):
        return False
    if para[0] in "\"'‘“([" or not (para[0].isupper() or para[0].isdigit()):
        return False
    letters = _letters(para)
    if len(letters) < 3:
        return False
    all_caps = letters.isupper()
    if para[-1] in ",;:!?'\"’”-" or (para[-1] == "." and not all_caps and not LEADING_NUMBER.match(para)):
        return False
    words = [w for w in re.findall(r"[A-Za-z][A-Za-z'’-]*", para)]
    significant = [w for w in words if len(w) > 3]
    capitalised = sum(w[0].isupper() for w in significant)
    return all_caps or (bool(significant) and capitalised >= 0.6 * len(significant))


def tidy_title(para: str) -> str:
    """'19 The Fisherman and His Wife', 'I. THE LION AND THE CRANE.' → their words, Title Case."""
    title = PAGE_NUMBER.sub("", para)
    title = LEADING_NUMBER.sub("", title).strip(" .")
    title = re.sub(r"\s*\(.*?\)\s*", " ", title).strip()
    title = re.sub(r"\s{2,}", " ", title)
    if _letters(title).isupper():
        title = " ".join(w.capitalize() if not w.isdigit() else w for w in title.lower().split())
        title = re.sub(r"\b(And|Of|The|A|An|In|On|To|Or|With|By|For|At|From)\b", lambda m: m.group(0).lower(), title)
        title = title[:1].upper() + title[1:]
    return title


def split_tales(work: str, text: str, min_words: int = 150) -> list[Tale]:
    """Cut a cleaned book at its headings; drop editorial sections and fragments too short to be tales.

    A chapter heading followed at once by its title ("CHAPTER I." then "THE CYCLONE") makes one
    heading; contents pages fall out because their "tales" are a run of headings with no prose.
    """
    paras = paragraphs(strip_licence(text))
    tales: list[Tale] = []
    title: str | None = None
    body: list[str] = []

    def flush() -> None:
        if title is not None and body and not NOT_TALES.match(title):
            tale = Tale(work=work, title=title, text="\n\n".join(body))
            if tale.words >= min_words:
                tales.append(tale)

    for para in paras:
        if ROMAN_ONLY.match(para):
            continue  # a part number inside a tale
        if is_title(para):
            if title is not None and not body and re.match(r"^(chapter|story)\b", title, re.I):
                title = tidy_title(para)  # "Chapter I" then its name: keep the name
                continue
            flush()
            title, body = tidy_title(para) or para, []
        elif title is not None:
            body.append(para)
    flush()
    return tales


def render(tales: list[Tale]) -> str:
    """The corpus file format: title line, blank line, paragraphs; tales separated by the token line."""
    parts = [f"{tale.title}\n\n{tale.text}" for tale in tales]
    return f"\n{SEPARATOR}\n".join(parts) + "\n"
