"""Writes to the store forever, printing each write once `set` has returned (acknowledged).

Run by `test_crash.py`, which SIGKILLs it at a random moment. Write number i sets three fields
that all encode i, so a half-applied write would show as fields that disagree.

    python -m tests.store.crash_writer DB_PATH FIRST_I
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from core.settings import DecodingSettings
from store import Scope, SqlitePreferencesStore

USER = 1001


def values_of(i: int) -> dict[str, int]:
    return {"seed": i, "top_k": i % 501, "no_repeat_ngram_size": i % 11}


async def main(path: Path, first: int) -> None:
    store = await SqlitePreferencesStore.open(path, config_defaults=DecodingSettings(), max_new_tokens_cap=300)
    print("open", flush=True)
    i = first
    while True:
        await store.set(Scope.USER, USER, values_of(i))
        print(i, flush=True)
        i += 1


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
