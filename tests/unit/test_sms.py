"""SMS encoding, unit counting and segmentation: the rules, their boundaries and traps."""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from pathlib import Path

import pytest

from engine.cli import main
from engine.sms import (
    GSM7,
    SMART_LETTERS,
    SMART_TABLE,
    UCS2,
    Analysis,
    Encoding,
    Mode,
    NotGsmError,
    analyze,
    analyze_for,
)

# GSM 03.38 as Unicode code points (after unicode.org's GSM0338.TXT), written apart from
# the module's own table so a slip in either shows up. 0x1B (ESC) is not a character.
GSM_BASIC_REF = frozenset(
    map(
        chr,
        [
            *(0x40, 0xA3, 0x24, 0xA5, 0xE8, 0xE9, 0xF9, 0xEC, 0xF2, 0xC7, 0x0A, 0xD8, 0xF8, 0x0D),
            *(0xC5, 0xE5, 0x394, 0x5F, 0x3A6, 0x393, 0x39B, 0x3A9, 0x3A0, 0x3A8, 0x3A3, 0x398),
            *(0x39E, 0xC6, 0xE6, 0xDF, 0xC9, 0x20, 0x21, 0x22, 0x23, 0xA4),
            *range(0x25, 0x40),  # % & ' ( ) * + , - . / 0-9 : ; < = > ?
            *(0xA1, *range(0x41, 0x5B), 0xC4, 0xD6, 0xD1, 0xDC, 0xA7, 0xBF),
            *(*range(0x61, 0x7B), 0xE4, 0xF6, 0xF1, 0xFC, 0xE0),
        ],
    )
)
GSM_EXTENSION_REF = frozenset(
    map(chr, [0x0C, 0x5E, 0x7B, 0x7D, 0x5C, 0x5B, 0x7E, 0x5D, 0x7C, 0x20AC])
)
GREEK_IN_GSM = "ΔΦΓΛΩΠΨΣΘΞ"
# Greek capitals that look like Latin letters: none of them is in GSM.
GREEK_LOOKALIKES = "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ"


def test_reference_alphabet_sizes() -> None:
    assert (len(GSM_BASIC_REF), len(GSM_EXTENSION_REF)) == (127, 10)


def test_every_bmp_character_is_classified_as_the_standard_says() -> None:
    wrong = []
    for cp in range(0x10000):
        c = chr(cp)
        if unicodedata.category(c) == "Cs":
            continue
        if c in GSM_BASIC_REF or c in GSM_EXTENSION_REF:
            want = (GSM7, 1 if c in GSM_BASIC_REF else 2)
        else:
            want = (UCS2, 1)
        result = analyze(c)
        if (result.encoding, result.units) != want:
            wrong.append(f"U+{cp:04X}")
    assert wrong == []


@pytest.mark.parametrize(
    ("text", "encoding", "units"),
    [
        pytest.param("Ç", GSM7, 1, id="capital C cedilla is GSM"),
        pytest.param("ç", UCS2, 1, id="small c cedilla is not"),
        pytest.param("§", GSM7, 1, id="section sign is GSM"),
        pytest.param("`", UCS2, 1, id="backtick is not"),
        pytest.param("A", GSM7, 1, id="Latin A"),
        pytest.param("\u0391", UCS2, 1, id="Greek Alpha looks like A but is not GSM"),
        pytest.param("\u039f", UCS2, 1, id="Greek Omicron looks like O but is not GSM"),
        pytest.param("δ", UCS2, 1, id="small delta is not GSM"),
        pytest.param("a\nb\rc", GSM7, 5, id="LF and CR are one septet each"),
        pytest.param("\r\n", GSM7, 2, id="CRLF is two septets"),
        pytest.param("@$_", GSM7, 3, id="at dollar underscore are basic"),
        pytest.param("¤¡¿ÑñÜüàß", GSM7, 9, id="basic non-ASCII letters"),
        pytest.param("{}", GSM7, 4, id="braces are extension"),
        pytest.param("^{}\\[~]|", GSM7, 16, id="every ASCII extension char costs two"),
        pytest.param("€", GSM7, 2, id="euro is extension"),
        pytest.param("\f", GSM7, 2, id="form feed is extension"),
        pytest.param("\x1b", UCS2, 1, id="a typed ESC is not GSM"),
        pytest.param("a\u00a0b", UCS2, 3, id="no-break space"),
        pytest.param("a\tb", UCS2, 3, id="tab"),
        pytest.param("‘’", UCS2, 2, id="smart single quotes"),
        pytest.param("“”", UCS2, 2, id="smart double quotes"),
        pytest.param("–—", UCS2, 2, id="en and em dash"),
        pytest.param("…", UCS2, 1, id="ellipsis"),
        pytest.param("\x7f", UCS2, 1, id="DEL"),
        pytest.param("\x00", UCS2, 1, id="NUL"),
        pytest.param("😀", UCS2, 2, id="emoji is a surrogate pair"),
        pytest.param("€ ç", UCS2, 3, id="extension char in UCS-2 is one unit"),
    ],
)
def test_encoding_and_units(text: str, encoding: Encoding, units: int) -> None:
    result = analyze(text)
    assert (result.encoding, result.units) == (encoding, units)


@pytest.mark.parametrize("letter", list(GREEK_IN_GSM))
def test_greek_capitals_in_gsm(letter: str) -> None:
    assert analyze(f"x{letter}y").encoding == GSM7


@pytest.mark.parametrize("letter", list(GREEK_LOOKALIKES))
def test_greek_lookalikes_force_ucs2(letter: str) -> None:
    result = analyze(f"AB{letter}")
    assert (result.encoding, result.non_gsm) == (UCS2, ((2, letter),))


def test_encoding_values_are_the_strings_providers_use() -> None:
    assert (GSM7, UCS2) == ("GSM-7", "UCS-2")


def test_empty_message() -> None:
    assert analyze("") == Analysis("", GSM7, 0, 1, ("",))


def test_result_is_the_same_value_the_constructor_builds() -> None:
    result = analyze("“hi”", smart=True)
    built = Analysis('"hi"', GSM7, 4, 1, ('"hi"',), (("“", '"', 1), ("”", '"', 1)))
    assert (result, hash(result)) == (built, hash(built))


def test_result_is_frozen() -> None:
    result = analyze("hello")
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.units = 1  # type: ignore[misc]


def test_non_gsm_lists_positions_in_the_text() -> None:
    result = analyze("Hi ç 😀 ok`")
    assert result.non_gsm == ((3, "ç"), (5, "😀"), (9, "`"))


def test_gsm_message_has_no_non_gsm() -> None:
    assert analyze("Hello {world}").non_gsm == ()


@pytest.mark.parametrize(
    ("text", "segments", "lengths"),
    [
        pytest.param("a" * 160, 1, [160], id="160 septets: one segment"),
        pytest.param("a" * 161, 2, [153, 8], id="161 septets: two"),
        pytest.param("a" * 306, 2, [153, 153], id="306 septets: two"),
        pytest.param("a" * 307, 3, [153, 153, 1], id="307 septets: three"),
        pytest.param("€" * 80, 1, [80], id="80 euros are 160 septets"),
        pytest.param("€" * 81, 2, [76, 5], id="81 euros: parts of 152 septets"),
        pytest.param("é" * 161, 2, [153, 8], id="non-ASCII basic chars cost one"),
        pytest.param("ç" * 70, 1, [70], id="70 UCS-2 units: one segment"),
        pytest.param("ç" * 71, 2, [67, 4], id="71 units: two"),
        pytest.param("ç" * 134, 2, [67, 67], id="134 units: two"),
        pytest.param("ç" * 135, 3, [67, 67, 1], id="135 units: three"),
        pytest.param("😀" * 35, 1, [35], id="35 emoji are 70 units"),
        pytest.param("😀" * 36, 2, [33, 3], id="36 emoji: parts of 66 units"),
    ],
)
def test_segment_boundaries(text: str, segments: int, lengths: list[int]) -> None:
    result = analyze(text)
    assert (result.segments, [len(p) for p in result.parts]) == (segments, lengths)
    assert "".join(result.parts) == text


@pytest.mark.parametrize(
    ("septet", "first_part"),
    [
        pytest.param(152, "a" * 151 + "€", id="at 152 the pair fills 152-153"),
        pytest.param(153, "a" * 152, id="at 153 the part ends early"),
        pytest.param(154, "a" * 153, id="at 154 it opens the next part"),
    ],
)
def test_escape_pair_is_never_split(septet: int, first_part: str) -> None:
    text = "a" * (septet - 1) + "€" + "b" * 40
    result = analyze(text)
    assert result.parts[0] == first_part
    assert result.parts[1].startswith(text[len(first_part)])


@pytest.mark.parametrize("extension", list("^{}\\[~]|\f"))
def test_every_ascii_extension_char_ends_a_part_early(extension: str) -> None:
    result = analyze("a" * 152 + extension + "b" * 40)
    assert [len(p) for p in result.parts] == [152, 41]


def test_crlf_may_be_split_in_gsm_as_the_reference_counters_do() -> None:
    # Twilio's calculator counts CR LF as two characters: 306 septets are two full parts.
    result = analyze("a" * 152 + "\r\n" + "a" * 152)
    assert result.segments == 2
    assert result.parts == ("a" * 152 + "\r", "\n" + "a" * 152)


@pytest.mark.parametrize(
    ("unit", "first_part"),
    [
        pytest.param(66, "ç" * 65 + "😀", id="at 66 the pair fills 66-67"),
        pytest.param(67, "ç" * 66, id="at 67 the part ends early"),
        pytest.param(68, "ç" * 67, id="at 68 it opens the next part"),
    ],
)
def test_surrogate_pair_is_never_split(unit: int, first_part: str) -> None:
    text = "ç" * (unit - 1) + "😀" + "ç" * 20
    assert analyze(text).parts[0] == first_part


@pytest.mark.parametrize(
    "cluster",
    [
        pytest.param("🇿🇦", id="flag"),
        pytest.param("👍🏽", id="skin tone"),
        pytest.param("👨\u200d👩\u200d👧", id="ZWJ family"),
        pytest.param("1\ufe0f\u20e3", id="keycap"),
    ],
)
def test_grapheme_cluster_straddling_a_boundary_moves_whole(cluster: str) -> None:
    # The cluster starts at unit 66: its first code point fits in the part, the rest not.
    text = "ç" * 65 + cluster + "ç" * 20
    result = analyze(text)
    assert result.parts[0] == "ç" * 65
    assert result.parts[1].startswith(cluster)


def test_combining_mark_stays_with_its_letter() -> None:
    text = "ç" * 66 + "e\u0301" + "ç" * 10
    result = analyze(text)
    assert result.parts[0] == "ç" * 66
    assert result.parts[1].startswith("e\u0301")


def test_combining_mark_after_a_non_ascii_letter_at_the_cut() -> None:
    # Cyrillic e + combining acute: the third e is unit 67, its accent unit 68.
    text = "x" * 62 + "е́" * 4 + "y" * 20
    result = analyze(text)
    assert result.parts[0] == "x" * 62 + "е́" * 2
    assert result.parts[1].startswith("е́")


def test_flags_are_cut_between_flags() -> None:
    result = analyze("🇿🇦" * 20)
    assert [len(p) for p in result.parts] == [32, 8]
    assert all(p == "🇿🇦" * (len(p) // 2) for p in result.parts)


def test_crlf_may_be_split_in_ucs2() -> None:
    text = "ç" * 66 + "\r\n" + "ç" * 10
    assert analyze(text).parts[0] == "ç" * 66 + "\r"


def test_indic_conjunct_may_be_split_after_its_virama() -> None:
    # क्ष is one cluster under Unicode 15.1 (GB9c); the counters end a cluster at the virama.
    result = analyze("a" * 65 + "क्ष" + "a" * 66)
    assert result.encoding is UCS2
    assert result.segments == 2
    assert result.parts == ("a" * 65 + "क्", "ष" + "a" * 66)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("a" * 152 + "\r\n" + "a" * 152, id="CR LF at the cut"),
        pytest.param("a" * 65 + "क्ष" + "a" * 66, id="conjunct at the cut"),
    ],
)
def test_sms_analyze_prices_two_parts_not_three(
    text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The estimate a user sees with ``engine sms analyze --to`` follows the part count."""
    config = tmp_path / "engine.yaml"
    config.write_text("pricing:\n  default: '0.25'\n")
    code = main(["--config", str(config), "sms", "analyze", text, "--to", "+27821234567",
                 "--json"])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (report["segments"], len(report["parts"]), report["cost"]) == (2, 2, "0.50")


def test_virama_stays_with_its_consonant() -> None:
    # The virama is a mark: the cut falls before the consonant it follows, not between.
    result = analyze("a" * 66 + "क्ष" + "a" * 10)
    assert result.parts[0] == "a" * 66
    assert result.parts[1].startswith("क्ष")


def test_prepended_mark_still_joins_a_consonant() -> None:
    # U+0600 (Prepend) + क is a cluster by GB9b, which the counters apply as well.
    result = analyze("ç" * 66 + "\u0600क" + "ç" * 10)
    assert result.parts[0] == "ç" * 66


def test_cluster_larger_than_a_part_is_split_between_code_points() -> None:
    chain = "\u200d".join(["👨"] * 40)  # one grapheme of 119 code units
    result = analyze(chain)
    assert "".join(result.parts) == chain
    # 22 x (man + joiner) is 66 units; the next man is a pair and does not fit.
    assert [len(p.encode("utf-16-le")) // 2 for p in result.parts] == [66, 53]
    assert result.segments == 2


def test_lone_surrogate_is_one_unit_not_an_error() -> None:
    result = analyze("a\ud800b")
    assert (result.encoding, result.units) == (UCS2, 3)


def test_forced_ucs2_counts_a_gsm_text_in_code_units() -> None:
    result = analyze_for("a" * 100, "ucs2")
    assert (result.encoding, result.units, result.segments) == (UCS2, 100, 2)
    assert [len(p) for p in result.parts] == [67, 33]


def test_forced_ucs2_of_a_short_gsm_text() -> None:
    assert analyze_for("hello {x}", Mode.UCS2).units == 9


def test_forced_gsm7_accepts_gsm_text() -> None:
    assert analyze_for("Price: 10€ {ok}", "gsm7") == analyze("Price: 10€ {ok}")


def test_forced_gsm7_rejects_other_characters_and_lists_them() -> None:
    with pytest.raises(NotGsmError) as caught:
        analyze_for("Olá, ça va 😀", "gsm7")
    assert caught.value.offenders == ((2, "á"), (5, "ç"), (11, "😀"))
    assert "'ç' (U+00E7) at 5" in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_forced_gsm7_does_not_transliterate() -> None:
    with pytest.raises(NotGsmError):
        analyze_for("“quoted”", "gsm7")


def test_auto_and_smart_modes() -> None:
    assert analyze_for("“hi”", "auto").encoding == UCS2
    assert analyze_for("“hi”", "smart").text == '"hi"'


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="latin1"):
        analyze_for("hi", "latin1")


# -- smart encoding ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        pytest.param("‘a’ ‚b‛ ′", "'a' 'b' '", id="single quotes and prime"),
        pytest.param("“c” „d‟ ″", '"c" "d" "', id="double quotes and double prime"),
        pytest.param("«e» ‹f›", "\"e\" 'f'", id="guillemets"),
        pytest.param("don´t `x`", "don't 'x'", id="acute and grave accents as apostrophes"),
        pytest.param("a‐b‑c‒d–e—f―g−h", "a-b-c-d-e-f-g-h", id="dashes and minus"),
        pytest.param("wait…", "wait...", id="ellipsis"),
        pytest.param(
            "a\u00a0b\tc\u2000d\u2005e\u200af\u202fg\u205fh\u3000i",
            "a b c d e f g h i",
            id="spaces",
        ),
        pytest.param("a\u200bb\u200cc\u200dd\u2060e\ufefff", "abcdef", id="zero-width removed"),
        pytest.param("âçêõáíóú", "aceoaiou", id="accents GSM lacks"),
        pytest.param("ÀÁÂÃÈÊËÌÍÎÏÒÓÔÕÙÚÛ", "AAAAEEEIIIIOOOOUUU", id="capital accents"),
        pytest.param("Łódź Ćma ŞİŞLİ", "Lodz Cma SISLI", id="Latin Extended-A"),
        pytest.param("São Paulo é ótimo", "Sao Paulo é otimo", id="GSM accents are kept"),
    ],
)
def test_smart_transliterates(text: str, sent: str) -> None:
    result = analyze(text, smart=True)
    assert (result.text, result.encoding) == (sent, GSM7)
    assert "".join(result.parts) == sent


def test_smart_keeps_every_accented_letter_gsm_has() -> None:
    kept = "éèùìòÇÉäöüÄÖÜñÑàåÅæÆøØß"
    result = analyze(kept + "“", smart=True)
    assert result.text == kept + '"'


def test_smart_reports_what_it_replaced() -> None:
    result = analyze("“Olá” … “ok”", smart=True)
    assert result.replacements == (("“", '"', 2), ("á", "a", 1), ("”", '"', 2), ("…", "...", 1))
    assert result.units == len('"Ola" ... "ok"')


def test_smart_leaves_text_alone_when_something_non_gsm_remains() -> None:
    text = "Olá — tudo bem? 😀 ç"
    result = analyze(text, smart=True)
    assert (result.text, result.encoding, result.replacements) == (text, UCS2, ())
    assert result.non_gsm == ((16, "😀"),)
    assert result.units == analyze(text).units


def test_smart_does_not_drop_the_joiner_of_an_emoji_sequence() -> None:
    text = "hi 👨\u200d👩\u200d👧"
    assert analyze(text, smart=True).text == text


def test_smart_on_gsm_text_changes_nothing() -> None:
    assert analyze("Hello {world} €5", smart=True) == analyze("Hello {world} €5")


def test_smart_can_save_segments() -> None:
    text = "It’s your last chance – 20% off everything today! " * 2
    auto, smart = analyze(text), analyze(text, smart=True)
    assert (auto.encoding, auto.segments) == (UCS2, 2)
    assert (smart.encoding, smart.segments) == (GSM7, 1)


def test_smart_removing_everything_leaves_an_empty_message() -> None:
    result = analyze("\u200b\ufeff", smart=True)
    assert (result.text, result.units, result.parts) == ("", 0, ("",))


def test_smart_multipart_text_is_split_after_transliteration() -> None:
    text = "…" * 60  # 180 septets once expanded
    result = analyze(text, smart=True)
    assert result.segments == 2
    assert "".join(result.parts) == "." * 180


def test_smart_table_maps_non_gsm_to_gsm() -> None:
    assert all(analyze(source).encoding == UCS2 for source in SMART_TABLE)
    assert all(set(stand_in) <= GSM_BASIC_REF for stand_in in SMART_TABLE.values())


# Letters with a stroke or similar have no canonical decomposition to their base.
NO_DECOMPOSITION = set("đĐħĦıŀĿłŁŧŦ")


@pytest.mark.parametrize(("base", "letters"), sorted(SMART_LETTERS.items()))
def test_smart_letters_map_to_their_base_letter(base: str, letters: str) -> None:
    for letter in set(letters) - NO_DECOMPOSITION:
        assert unicodedata.normalize("NFD", letter)[0] == base, letter
    assert set(letters).isdisjoint(GSM_BASIC_REF)
