"""Benchmark ``engine.sms.analyze``: analyses per second on one core.

Run ``python bench/sms.py``. Each case uses a few thousand distinct generated messages
(so nothing can be served from a cache) and runs for about two seconds.
"""

from __future__ import annotations

import random
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.sms import analyze

MESSAGES = 4000
SECONDS = 2.0
WORDS = [
    *("your", "order", "has", "shipped", "and", "will", "arrive", "on", "Monday"),
    *("reply", "STOP", "to", "opt", "out", "hi", "there", "thanks", "for", "being"),
    *("a", "loyal", "customer", "use", "code", "SAVE20", "at", "checkout", "today"),
    *("appointment", "reminder", "call", "us", "on", "021", "555", "0100", "if"),
]
EXTENSION = "{}[]^~|\\€"
EMOJI = ("😀", "🎉", "👍🏽", "🇿🇦", "❤️", "👨‍👩‍👧", "🔥", "✅")
CYRILLIC = [
    "Ваш",
    "заказ",
    "отправлен",
    "и",
    "прибудет",
    "в",
    "понедельник",
    "спасибо",
    "с",
    "нами",
]


def words(rng: random.Random, length: int, vocabulary: list[str]) -> str:
    """Return random words joined by spaces, cut to exactly ``length`` characters."""
    text = rng.choice(vocabulary)
    while len(text) < length:
        text += " " + rng.choice(vocabulary)
    return text[:length]


def ascii_gsm(rng: random.Random) -> str:
    """A 140-character single-segment GSM-7 message."""
    return words(rng, 140, WORDS)


def with_extension(rng: random.Random) -> str:
    """A 300-character GSM-7 message with extension characters (multipart)."""
    chars = list(words(rng, 300, WORDS))
    for i in rng.sample(range(300), 12):
        chars[i] = rng.choice(EXTENSION)
    return "".join(chars)


def ucs2_emoji(rng: random.Random) -> str:
    """A 120-character Latin message with emoji, which makes it UCS-2 (multipart)."""
    chars = list(words(rng, 120, WORDS))
    for i in sorted(rng.sample(range(120), 4), reverse=True):
        chars[i] = rng.choice(EMOJI)
    return "".join(chars)[:120]


def cyrillic(rng: random.Random) -> str:
    """A 120-unit Cyrillic message ending in an emoji: every character is non-GSM."""
    return words(rng, 118, CYRILLIC) + rng.choice(("😀", "🎉", "🔥"))


CASES: tuple[tuple[str, Callable[[random.Random], str], int | None], ...] = (
    ("140-char ASCII GSM-7", ascii_gsm, 400_000),
    ("300-char GSM-7 with extension chars", with_extension, None),
    ("120-char UCS-2 with emoji", ucs2_emoji, 100_000),
    ("120-unit Cyrillic UCS-2", cyrillic, None),
)


def rate(messages: list[str]) -> float:
    """Analyse ``messages`` round after round for about SECONDS; return analyses/s."""
    done = 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < SECONDS:
        for text in messages:
            analyze(text)
        done += len(messages)
    return done / elapsed


def main() -> None:
    """Print analyses per second and the usual segment count for each case."""
    rng = random.Random(20240601)
    print(f"{'case':<38} {'segments':>8} {'analyses/s':>12} {'target':>10}")
    for name, make, target in CASES:
        messages = list({make(rng) for _ in range(MESSAGES)})
        segments = Counter(analyze(m).segments for m in messages).most_common(1)[0][0]
        wanted = f"{target:,}" if target else "-"
        print(f"{name:<38} {segments:>8} {rate(messages):>12,.0f} {wanted:>10}")


if __name__ == "__main__":
    main()
