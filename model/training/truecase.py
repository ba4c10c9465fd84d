"""Giving lower-cased text its capitals back, learnt from text in its original case.

The rules a story in English follows: a sentence's first word has a capital, so has "I", and some
words have one wherever they stand (names: "Lily", "Tom"), while others have one only in some
places ("Mom" when a child speaks to her, "mom" in "her mom"). So the truecaser counts, in the
cased text, how each word is written in the middle of a sentence, after each word before it and
on its own; a word is written as it was most often in the same place (the pair's counts when the
pair was seen often enough, else the word's own), and a sentence's first word then gets a capital
first letter. Unknown words stay as they are.

A word is a run of letters, digits and apostrophes; a sentence starts a paragraph, follows `.`,
`!` or `?`, or opens a quotation (a quote mark right before the word, after a space).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
SENTENCE_END = re.compile(r"[.!?]")
OPENING_QUOTE = re.compile(r"(?:^|\s)[\"“‘']$")
MOJIBAKE_SOURCES = "“”‘’–—…«»¡¿ñáéíóúàèçüöäÑÉ€™"


def fix_mojibake(text: str) -> str:
    """UTF-8 read as Windows-1252 and then lower-cased ("â€œ" for "“"), turned back.

    Each replacement is computed from the character it stands for: its UTF-8 bytes decoded as
    Windows-1252 (bytes that code page lacks were dropped, as they are in such text), lower-cased.
    Longest first, so "â€œ" is not read as "â€" and a stray "œ".
    """
    table = {}
    for char in MOJIBAKE_SOURCES:
        garbled = char.encode("utf-8").decode("cp1252", errors="ignore").lower()
        if len(garbled) > 1:
            table[garbled] = char
    for garbled in sorted(table, key=len, reverse=True):
        text = text.replace(garbled, table[garbled])
    return text


START, MID, AFTER_QUOTE = "start", "mid", "after-quote"
ITEM = re.compile(rf"{WORD.pattern}|[^\s\w]")


@dataclass(frozen=True)
class Token:
    start: int
    end: int
    place: str
    """START (a sentence's first word), MID, or AFTER_QUOTE: after a quotation that ends with
    `.`, `!` or `?` (`"Hi!" she said` goes on; `"Hi!" The dog ran` starts anew): learnt."""
    before: str
    """The item before: a lower-cased word or a punctuation mark ("" at the paragraph's start)."""
    after: str


def words(text: str) -> list[Token]:
    """Every word of a text, with its place in the sentence and its neighbours; a new line
    starts a new paragraph."""
    items = [(m.start(), m.end(), m.group()) for m in ITEM.finditer(text)]
    tokens, previous_end = [], 0
    for index, (start, end, item) in enumerate(items):
        if not WORD.fullmatch(item):
            continue
        gap = text[previous_end:start]
        ended = SENTENCE_END.search(gap)
        if not tokens or "\n" in gap or OPENING_QUOTE.search(gap):
            place = START
        elif ended:
            place = AFTER_QUOTE if re.search(r"[\"”’']", gap[ended.end() :]) else START
        else:
            place = MID
        before = items[index - 1][2].lower() if index else ""
        after = items[index + 1][2].lower() if index + 1 < len(items) else ""
        tokens.append(Token(start, end, place, before, after))
        previous_end = end
    return tokens


def capitalised(word: str) -> str:
    return word[:1].upper() + word[1:]


@dataclass
class Truecaser:
    """Counts of how each lower-cased word was written, in each place and beside each neighbour."""

    min_count: int = 3
    counts: dict[tuple[str, ...], Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    rare: dict[str, Counter[bool]] = field(default_factory=lambda: defaultdict(Counter))
    """For words never seen: whether words seen once were capitalised, by the item before them
    (after "named" a new word is a name). Estimated from the words seen once, as unknown words
    are estimated in tagging."""

    @staticmethod
    def contexts(token: Token, key: str) -> list[tuple[str, ...]]:
        """Most specific first: both neighbours, the one before, the one after, the word alone;
        then the same outside quotations' ends."""
        place = AFTER_QUOTE if token.place == AFTER_QUOTE else MID
        chain = [
            (place, token.before, key, token.after),
            (place, token.before, key, ""),
            (place, "", key, token.after),
            (place, "", key),
        ]
        return chain if place == MID else chain + [(MID, "", key)]

    def learn(self, paragraphs: Iterable[str]) -> Truecaser:
        seen: list[tuple[Token, str]] = []
        for paragraph in paragraphs:
            for token in words(paragraph):
                if token.place == START:
                    continue
                word = paragraph[token.start : token.end]
                seen.append((token, word))
                for context in self.contexts(token, word.lower()):
                    self.counts[context][word] += 1
        for token, word in seen:
            if sum(self.counts[MID, "", word.lower()].values()) == 1:
                self.rare[token.before][word[:1].isupper()] += 1
        return self

    def form(self, token: Token, key: str, names: set[str]) -> str:
        """How `key` is written in the middle of a sentence, in this place; `names` holds the
        unknown words this story has already shown to be names."""
        chain = self.contexts(token, key)
        for context in chain:
            seen = self.counts.get(context)
            if seen is not None and (sum(seen.values()) >= self.min_count or context == chain[-1]):
                return seen.most_common(1)[0][0]
        if key == "i" or key.startswith(("i'", "i’")):
            return "I" + key[1:]
        rare = self.rare.get(token.before)
        if key in names or (rare is not None and rare[True] > rare[False]):
            names.add(key)
            return capitalised(key)
        return key

    def apply(self, story: str) -> str:
        """One story (paragraphs on lines) with its capitals back."""
        out, last, names = [], 0, set()
        for token in words(story):
            word = self.form(token, story[token.start : token.end].lower(), names)
            out += [story[last : token.start], capitalised(word) if token.place == START else word]
            last = token.end
        out.append(story[last:])
        return "".join(out)


def word_accuracy(predicted: str, truth: str) -> tuple[int, int]:
    """Words written exactly as in `truth` (whitespace-separated), and the number of words."""
    a, b = predicted.split(), truth.split()
    if len(a) != len(b):
        raise ValueError(f"texts differ in length: {len(a)} and {len(b)} words")
    return sum(x == y for x, y in zip(a, b)), len(b)
