"""SMS encoding and segmentation, counted the way providers bill (3GPP TS 23.038 / 23.040).

A message is GSM-7 when every character is in the GSM 03.38 default alphabet or its
extension table (extension characters cost two septets: ESC + code); any other character
makes the whole message UCS-2, counted in UTF-16 code units. One segment carries 160
septets or 70 code units; a concatenated message carries 153 septets or 67 code units per
part (the rest of the 140 octets is the concatenation header).

Like Twilio's segment calculator and Android, a part boundary never splits an escape pair,
a surrogate pair or a grapheme cluster; the part ends early instead. A single cluster too
big for a whole part is split between code points, the only way to send it at all.
Clusters are those of UAX #29 with the two differences the reference counters have, so
that the engine bills the part counts they show: CR LF may be split (it is two GSM
characters, and Twilio counts it as two), and a virama ends a cluster (the counters
predate the Unicode 15.1 rule GB9c that joins an Indic conjunct such as क्ष into one).

This runs once per recipient, so the common cases avoid per-character Python loops:
ASCII text is classified with one ``bytes.translate``, other text with one regex scan,
and grapheme clusters are only looked at near the cut points of multipart messages.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final

import regex

from engine.errors import EngineError


class Encoding(StrEnum):
    """How the message is encoded on the air interface."""

    GSM7 = "GSM-7"
    UCS2 = "UCS-2"


GSM7: Final = Encoding.GSM7
UCS2: Final = Encoding.UCS2


class Mode(StrEnum):
    """The campaign's ``encoding`` setting (``message.encoding`` in a campaign file)."""

    AUTO = "auto"
    GSM7 = "gsm7"
    UCS2 = "ucs2"
    SMART = "smart"


# The GSM 03.38 default alphabet in code order, 0x00-0x7F, without 0x1B (ESC): ESC only
# introduces the extension table, so an ESC typed into a message is not a GSM character.
GSM_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅå"
    "Δ_ΦΓΛΩΠΨΣΘΞÆæßÉ"  # 0x1B (ESC) would sit between Ξ and Æ
    " !\"#¤%&'()*+,-./"
    "0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNO"
    "PQRSTUVWXYZÄÖÑÜ§"
    "¿abcdefghijklmno"
    "pqrstuvwxyzäöñüà"
)
# The extension table: form feed, ^ { } \ [ ~ ] | and the euro sign.
GSM_EXTENSION: Final = "\f^{}\\[~]|€"

_GSM_CLASS: Final = re.escape(GSM_BASIC + GSM_EXTENSION)
_NON_GSM: Final = re.compile(f"[^{_GSM_CLASS}]")
# Bytes to delete so that what remains of an ASCII text is its extension and non-GSM chars.
_ASCII_BASIC: Final = bytes(c for c in range(128) if chr(c) in GSM_BASIC)
_ASCII_EXTENSION: Final = bytes(c for c in range(128) if chr(c) in GSM_EXTENSION)
# Counting in UTF-8 is several times faster than str.count per character. In GSM text the
# only character encoded with a 0xE2 lead byte is €, so keeping the ASCII extension bytes
# and 0xE2 leaves one byte per extension character.
_NOT_EXTENSION_UTF8: Final = bytes(
    b for b in range(256) if not (chr(b) in GSM_EXTENSION or b == 0xE2)
)
# Characters beyond the BMP are exactly those with a 0xF0-0xF4 lead byte in UTF-8.
_NOT_ASTRAL_UTF8: Final = bytes(b for b in range(256) if not 0xF0 <= b <= 0xF4)

_GRAPHEME: Final = regex.compile(r"\X")
# Where a part may end inside a UAX #29 cluster, as the reference counters allow: between
# CR and LF, and before a consonant that GB9c joins to a virama (InCB=Linker) or to the
# marks after one. Within a \X cluster an InCB=Consonant (GCB Other) after such a mark is
# joined by GB9c alone, so these are exactly the breaks GB9c removed. (?r): the last one.
_INNER_BREAK: Final = regex.compile(
    r"(?r)(?<=\r)(?=\n)|(?<=[\p{InCB=Linker}\p{InCB=Extend}])(?=\p{InCB=Consonant})"
)
# A position between two characters that UAX #29 always breaks: both are plain (GCB Other)
# or control characters, and the pair is not CR LF. Finding one near a cut lets grapheme
# walking start close to the cut instead of at the start of the part. (?r) searches
# backwards, so the match is the nearest such position before the cut.
_SAFE_BOUNDARY: Final = regex.compile(
    r"(?r)(?<=[\p{GCB=Other}\p{GCB=Control}\p{GCB=LF}])"
    r"(?=[\p{GCB=Other}\p{GCB=Control}\p{GCB=CR}\p{GCB=LF}])"
)

# Smart encoding: characters with a natural GSM-7 stand-in. Applied only when it makes
# the whole message GSM-7; otherwise the message is sent exactly as written.
SMART_PUNCTUATION: Final[dict[str, str]] = {
    "\u2018": "'",  # ‘ left single quotation mark
    "\u2019": "'",  # ’ right single quotation mark, the typographic apostrophe
    "\u201a": "'",  # ‚ single low-9 quotation mark
    "\u201b": "'",  # ‛ single high-reversed-9 quotation mark
    "\u2032": "'",  # ′ prime
    "\u2039": "'",  # ‹ single left-pointing angle quotation mark
    "\u203a": "'",  # › single right-pointing angle quotation mark
    "\u00b4": "'",  # ´ acute accent, typed as an apostrophe on some keyboards
    "`": "'",  # grave accent, likewise
    "\u201c": '"',  # “ left double quotation mark
    "\u201d": '"',  # ” right double quotation mark
    "\u201e": '"',  # „ double low-9 quotation mark
    "\u201f": '"',  # ‟ double high-reversed-9 quotation mark
    "\u2033": '"',  # ″ double prime
    "\u00ab": '"',  # « left-pointing double angle quotation mark
    "\u00bb": '"',  # » right-pointing double angle quotation mark
    "\u2010": "-",  # ‐ hyphen
    "\u2011": "-",  # ‑ non-breaking hyphen
    "\u2012": "-",  # ‒ figure dash
    "\u2013": "-",  # – en dash
    "\u2014": "-",  # — em dash
    "\u2015": "-",  # ― horizontal bar
    "\u2212": "-",  # − minus sign
    "\u2026": "...",  # … horizontal ellipsis
}
SMART_SPACES: Final[dict[str, str]] = {
    "\t": " ",  # tab
    "\u00a0": " ",  # no-break space
    "\u2000": " ",  # en quad
    "\u2001": " ",  # em quad
    "\u2002": " ",  # en space
    "\u2003": " ",  # em space
    "\u2004": " ",  # three-per-em space
    "\u2005": " ",  # four-per-em space
    "\u2006": " ",  # six-per-em space
    "\u2007": " ",  # figure space
    "\u2008": " ",  # punctuation space
    "\u2009": " ",  # thin space
    "\u200a": " ",  # hair space
    "\u202f": " ",  # narrow no-break space
    "\u205f": " ",  # medium mathematical space
    "\u3000": " ",  # ideographic space
    "\u200b": "",  # zero-width space: invisible, so dropped
    "\u200c": "",  # zero-width non-joiner
    "\u200d": "",  # zero-width joiner
    "\u2060": "",  # word joiner
    "\ufeff": "",  # zero-width no-break space / byte order mark
}
# Latin-1 and Latin Extended-A letters with a diacritic GSM lacks, by their base letter.
# GSM has é è ù ì ò Ç É ä ö ü Ä Ö Ü ñ Ñ à å Å æ Æ ø Ø ß, so those are absent here.
SMART_LETTERS: Final[dict[str, str]] = {
    "a": "áâãāăą",
    "A": "ÀÁÂÃĀĂĄ",
    "c": "çćĉċč",
    "C": "ĆĈĊČ",
    "d": "ďđ",
    "D": "ĎĐ",
    "e": "êëēĕėęě",
    "E": "ÈÊËĒĔĖĘĚ",
    "g": "ĝğġģ",
    "G": "ĜĞĠĢ",
    "h": "ĥħ",
    "H": "ĤĦ",
    "i": "íîïĩīĭįı",
    "I": "ÌÍÎÏĨĪĬĮİ",
    "j": "ĵ",
    "J": "Ĵ",
    "k": "ķ",
    "K": "Ķ",
    "l": "ĺļľŀł",
    "L": "ĹĻĽĿŁ",
    "n": "ńņň",
    "N": "ŃŅŇ",
    "o": "óôõōŏő",
    "O": "ÒÓÔÕŌŎŐ",
    "r": "ŕŗř",
    "R": "ŔŖŘ",
    "s": "śŝşš",
    "S": "ŚŜŞŠ",
    "t": "ţťŧ",
    "T": "ŢŤŦ",
    "u": "úûũūŭůűų",
    "U": "ÙÚÛŨŪŬŮŰŲ",
    "w": "ŵ",
    "W": "Ŵ",
    "y": "ýÿŷ",
    "Y": "ÝŶŸ",
    "z": "źżž",
    "Z": "ŹŻŽ",
}
SMART_TABLE: Final[dict[str, str]] = {
    **SMART_PUNCTUATION,
    **SMART_SPACES,
    **{letter: base for base, letters in SMART_LETTERS.items() for letter in letters},
}
_SMART_TRANSLATION: Final = str.maketrans(SMART_TABLE)
_STAND_IN: Final = re.compile(f"[{re.escape(''.join(SMART_TABLE))}]")
_NO_STAND_IN: Final = re.compile(f"[^{_GSM_CLASS}{re.escape(''.join(SMART_TABLE))}]")

NonGsm = tuple[tuple[int, str], ...]
Replacements = tuple[tuple[str, str, int], ...]


class NotGsmError(EngineError, ValueError):
    """The campaign forces GSM-7 but the text has characters outside the GSM alphabet."""

    def __init__(self, offenders: NonGsm) -> None:
        self.offenders = offenders
        listed = ", ".join(f"{c!r} (U+{ord(c):04X}) at {i}" for i, c in offenders[:10])
        more = f" and {len(offenders) - 10} more" if len(offenders) > 10 else ""
        super().__init__(f"not in the GSM-7 alphabet: {listed}{more}")


@dataclass(frozen=True, slots=True)
class Analysis:
    """How a message is billed.

    ``text`` is what is counted and sent (after smart transliteration); ``units`` are
    septets (GSM-7) or UTF-16 code units (UCS-2); ``parts`` is the text of each segment;
    ``replacements`` is (original, stand-in, count) for each smart transliteration.
    """

    text: str
    encoding: Encoding
    units: int
    segments: int
    parts: tuple[str, ...]
    replacements: Replacements = ()
    # Which characters ``non_gsm`` reports; None when there are none.
    _offending: re.Pattern[str] | None = field(default=None, repr=False)

    @property
    def non_gsm(self) -> NonGsm:
        """(index in ``text``, char) for each character that rules out GSM-7."""
        # Computed on access: listing every character of a non-Latin message costs more
        # than the rest of the analysis, and sending only needs the counts.
        return () if self._offending is None else _offenders(self.text, self._offending)


# The frozen dataclass __init__ routes every field through object.__setattr__: 1.1 us a
# call, the largest cost of the ASCII fast path. Writing the slots through their
# descriptors builds the same value in about half that, making the fast path ~25% faster.
_FIELD_SETTERS: Final = tuple(
    Analysis.__dict__[name].__set__
    for name in ("text", "encoding", "units", "segments", "parts", "replacements", "_offending")
)


def _analysis(
    text: str,
    encoding: Encoding,
    units: int,
    parts: tuple[str, ...],
    replacements: Replacements,
    offending: re.Pattern[str] | None,
) -> Analysis:
    """Build ``Analysis(text, encoding, units, len(parts), parts, replacements, offending)``."""
    result = object.__new__(Analysis)
    set_text, set_encoding, set_units, set_segments, set_parts, set_replaced, set_offending = (
        _FIELD_SETTERS
    )
    set_text(result, text)
    set_encoding(result, encoding)
    set_units(result, units)
    set_segments(result, len(parts))
    set_parts(result, parts)
    set_replaced(result, replacements)
    set_offending(result, offending)
    return result


def analyze(text: str, *, smart: bool = False) -> Analysis:
    """Return the encoding, units, segments and parts ``text`` is billed as."""
    if text.isascii():
        special = text.encode("ascii").translate(None, _ASCII_BASIC)
        if not special:
            return _gsm7(text, len(text))
        if not special.translate(None, _ASCII_EXTENSION):
            return _gsm7(text, len(text) + len(special))
    elif _NON_GSM.search(text) is None:
        return _gsm7(text, _septets(text))
    if smart:
        return _smart(text)
    return _ucs2(text, _NON_GSM)


def analyze_for(text: str, mode: str) -> Analysis:
    """Analyse ``text`` under a campaign ``encoding`` setting: auto, gsm7, ucs2 or smart."""
    match Mode(mode):
        case Mode.AUTO:
            return analyze(text)
        case Mode.SMART:
            return analyze(text, smart=True)
        case Mode.UCS2:
            return _ucs2(text, _NON_GSM)
        case Mode.GSM7:
            result = analyze(text)
            if result.encoding is UCS2:
                raise NotGsmError(result.non_gsm)
            return result


def _gsm7(text: str, units: int, replacements: Replacements = ()) -> Analysis:
    """Build the result for text known to be all GSM, ``units`` septets long."""
    parts = _split(text, units, _GSM7_RULES)
    return _analysis(text, GSM7, units, parts, replacements, None)


def _ucs2(text: str, offending: re.Pattern[str]) -> Analysis:
    """Build the result for text sent as UCS-2; ``offending`` finds its non-GSM chars."""
    units = _code_units(text)
    parts = _split(text, units, _UCS2_RULES)
    return _analysis(text, UCS2, units, parts, (), offending)


def _smart(text: str) -> Analysis:
    """Transliterate to GSM-7 if that removes every non-GSM character, else leave as is."""
    sent = text.translate(_SMART_TRANSLATION)
    if _NON_GSM.search(sent) is not None:
        return _ucs2(text, _NO_STAND_IN)
    counts = Counter(_STAND_IN.findall(text))
    replaced = tuple((c, SMART_TABLE[c], n) for c, n in counts.items())
    return _gsm7(sent, _septets(sent), replaced)


@dataclass(frozen=True, slots=True)
class _Rules:
    """How one encoding counts and where its parts may end."""

    single: int  # units in a message of one segment
    part: int  # units in each part of a concatenated message
    cost: Callable[[str], int]  # units of a string
    wide: Callable[[str], bool]  # whether a character takes two units
    boundary: Callable[[str, int, int], int]  # a legal cut at or before the given one


def _split(text: str, units: int, rules: _Rules) -> tuple[str, ...]:
    """Cut ``text``, ``units`` long, into the parts it is sent as."""
    if units <= rules.single:
        return (text,)
    # Without any two-unit character a unit is a character: cost is plain len.
    cost = len if units == len(text) else rules.cost
    parts = []
    start = 0
    while units > rules.part:
        end, used = _fit(text, start, rules.part, cost, rules.wide)
        cut = rules.boundary(text, start, end)
        if cut != end:
            used = cost(text[start:cut])
        parts.append(text[start:cut])
        units -= used
        start = cut
    parts.append(text[start:])
    return tuple(parts)


def _fit(
    text: str, start: int, capacity: int, cost: Callable[[str], int], wide: Callable[[str], bool]
) -> tuple[int, int]:
    """Return the largest end with ``text[start:end]`` within ``capacity``, and its cost."""
    end = min(start + capacity, len(text))
    used = cost(text[start:end])
    # The excess is the two-unit characters in the window: usually few, so give back
    # characters from the end one at a time rather than re-measuring slices.
    while used > capacity:
        end -= 1
        used -= 2 if wide(text[end]) else 1
    return end, used


def _gsm7_boundary(text: str, start: int, end: int) -> int:
    """Any GSM-7 cut that ``_fit`` found is legal: it never splits an escape pair."""
    # GSM text has no multi-character cluster but CR LF, which the counters split too.
    return end


def _grapheme_boundary(text: str, start: int, end: int) -> int:
    """Return the last cluster boundary in (start, end], or end if there is none."""
    before, after = text[end - 1], text[end]
    # Any two ASCII characters are separate clusters (UAX #29, CR LF aside: see above).
    if before.isascii() and after.isascii():
        return end
    safe = _SAFE_BOUNDARY.search(text, start + 1, end + 1)
    cut = start if safe is None else safe.start()
    if cut == end:
        return end
    for cluster in _GRAPHEME.finditer(text, cut):
        if cluster.end() > end:
            inner = _INNER_BREAK.search(text, cluster.start() + 1, end + 1)
            cut = cut if inner is None else inner.start()
            break
        cut = cluster.end()
    # One cluster longer than a part (e.g. a huge ZWJ chain): split between code points.
    return cut if cut > start else end


def _septets(text: str) -> int:
    """Count the septets of all-GSM text: extension characters take two."""
    return len(text) + len(text.encode().translate(None, _NOT_EXTENSION_UTF8))


def _code_units(text: str) -> int:
    """Count UTF-16 code units: characters beyond the BMP take a surrogate pair."""
    # surrogatepass: a lone surrogate (from a broken upstream decode) is one code unit,
    # encoded with an 0xED lead byte, rather than an exception.
    utf8 = text.encode("utf-8", "surrogatepass")
    return len(text) + len(utf8.translate(None, _NOT_ASTRAL_UTF8))


_GSM7_RULES: Final = _Rules(
    160, 153, _septets, frozenset(GSM_EXTENSION).__contains__, _gsm7_boundary
)
# "\uffff" < c holds exactly for the characters beyond the BMP: a C call, no Python frame.
_UCS2_RULES: Final = _Rules(70, 67, _code_units, "\uffff".__lt__, _grapheme_boundary)


def _offenders(text: str, pattern: re.Pattern[str]) -> NonGsm:
    """List (index, char) for each character of ``text`` that ``pattern`` matches."""
    return tuple((m.start(), m.group()) for m in pattern.finditer(text))
