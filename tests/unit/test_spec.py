"""Campaign files: the model and its loader, every positioned error, examples."""

from __future__ import annotations

import json
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engine.campaign_loader import load_campaign, load_paths
from engine.errors import CampaignFileError
from engine.sms import Mode
from engine.spec import Campaign, Channel
from engine.timing import QuietHours

REPO = Path(__file__).resolve().parents[2]
ACCOUNTS = {"zc-main", "simulator"}

SPRING = """\
# The spring sale, for VIPs.
name: spring-sale
description: VIP spring sale
provider: zc-main
sender: "+27820000000"
channel: sms
schedule:
  at: "2026-03-01 09:00"
  timezone: Africa/Johannesburg
  quiet_hours: "21:00-08:00"
  validity: 6h
audience:
  groups: [vip]
  exclude_groups: [staff]
  contacts: ["+27821234567", "082 123 4568"]
  file: audiences/extra.csv
message:
  body: "Hi {{ first_name | default('there') }}, {{ discount }}% off. Reply STOP to opt out"
  locales:
    es: "Hola {{ first_name | default('') }}, {{ discount }}% de descuento"
  encoding: auto
  max_segments: 3
vars:
  discount: 20
limits:
  rate: 10/s
  budget: 500
  frequency_cap: 1/24h
"""
PATH = Path("campaigns/spring.yaml")


@pytest.fixture(autouse=True)
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in a temporary folder holding ``campaigns/audiences/extra.csv``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "campaigns" / "audiences").mkdir(parents=True)
    (tmp_path / "campaigns" / "audiences" / "extra.csv").write_text("phone\n+27821234569\n")
    return tmp_path


def write(text: str, path: Path = PATH) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load(text: str, **kwargs: object) -> Campaign:
    kwargs.setdefault("accounts", ACCOUNTS)
    kwargs.setdefault("default_region", "ZA")
    return load_campaign(write(text), **kwargs)  # type: ignore[arg-type]


def problems(text: str, **kwargs: object) -> list[str]:
    with pytest.raises(CampaignFileError) as err:
        load(text, **kwargs)
    return err.value.problems


def edit(old: str, new: str, text: str = SPRING) -> str:
    assert old in text
    return text.replace(old, new)


# --- a valid file ----------------------------------------------------------------------


def test_full_example_is_parsed_and_normalised(folder: Path) -> None:
    campaign = load(SPRING)
    assert campaign.name == "spring-sale"
    assert campaign.channel is Channel.SMS
    schedule = campaign.schedule
    assert schedule.kind == "at"
    assert schedule.at == datetime(2026, 3, 1, 9, 0)
    assert schedule.zone == ZoneInfo("Africa/Johannesburg")
    assert schedule.quiet_hours == QuietHours(time(21), time(8))
    assert schedule.validity == timedelta(hours=6)
    assert campaign.audience.contacts == ["+27821234567", "+27821234568"]
    assert campaign.audience.file == (folder / "campaigns/audiences/extra.csv").resolve()
    assert campaign.message.locales["es"].startswith("Hola")
    assert campaign.message.encoding is Mode.AUTO
    assert campaign.vars == {"discount": 20}
    limits = campaign.limits
    assert limits.rate is not None
    assert limits.rate.per_second == 10
    assert limits.budget == Decimal(500)
    assert limits.frequency_cap is not None
    assert (limits.frequency_cap.count, limits.frequency_cap.period) == (1, timedelta(hours=24))


def test_defaults_for_optional_keys() -> None:
    text = (
        "name: minimal\nprovider: simulator\nschedule: {now: true}\n"
        "audience: {groups: demo}\nmessage: {body: Hello}\n"
    )
    campaign = load(text)
    assert campaign.schedule.kind == "now"
    assert campaign.schedule.timezone == "UTC"
    assert campaign.schedule.validity == timedelta(hours=24)
    assert campaign.audience.groups == ["demo"]  # a single group may be written bare
    assert campaign.channel is Channel.SMS
    assert campaign.message.encoding is Mode.AUTO
    assert campaign.limits.budget is None


def test_iso_at_and_yaml_dates_are_accepted() -> None:
    text = edit('at: "2026-03-01 09:00"', "at: 2026-03-01T09:00:30")
    assert load(text).schedule.at == datetime(2026, 3, 1, 9, 0, 30)
    text = edit('at: "2026-03-01 09:00"', 'cron: "0 9 * * *"\n  until: 2026-06-01')
    assert load(text).schedule.until == date(2026, 6, 1)


def test_examples_validate() -> None:
    campaigns, found = load_paths([REPO / "campaigns"], accounts={"simulator"})
    assert found == []
    names = {campaign.name for _, campaign in campaigns}
    assert {"welcome-now", "weekly-digest", "multilingual-promo", "vip-flash-sale"} <= names


# --- one error of each kind, with line and column ---------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "timezone: Africa/Johannesburg",
            "timezone: Afrika/Johannesburg",
            "campaigns/spring.yaml:9:13: schedule.timezone: unknown time zone "
            "'Afrika/Johannesburg'",
        ),
        (
            "name: spring-sale",
            "name: Spring Sale",
            "campaigns/spring.yaml:2:7: name: 'Spring Sale' is not a campaign name: use "
            "lowercase letters, digits, '-' and '_' (at most 64, starting with a letter or digit)",
        ),
        (
            "provider: zc-main",
            "provider: zc-test",
            "campaigns/spring.yaml:4:11: provider: unknown provider account 'zc-test' "
            "(engine.yaml has: simulator, zc-main)",
        ),
        (
            '"2026-03-01 09:00"',
            '"01/03/2026 9am"',
            "campaigns/spring.yaml:8:7: schedule.at: expected a local time 'YYYY-MM-DD HH:MM', "
            "got '01/03/2026 9am'",
        ),
        (
            '"2026-03-01 09:00"',
            '"2026-02-30 09:00"',
            "campaigns/spring.yaml:8:7: schedule.at: not a real date and time: '2026-02-30 09:00'",
        ),
        (
            '"2026-03-01 09:00"',
            '"2026-03-01T09:00+02:00"',
            "campaigns/spring.yaml:8:7: schedule.at: expected a local time 'YYYY-MM-DD HH:MM', "
            "got '2026-03-01T09:00+02:00'",
        ),
        (
            'quiet_hours: "21:00-08:00"',
            'quiet_hours: "9pm-8am"',
            "campaigns/spring.yaml:10:16: schedule.quiet_hours: expected quiet hours as "
            "'HH:MM-HH:MM', got '9pm-8am'",
        ),
        (
            "validity: 6h",
            "validity: six hours",
            "campaigns/spring.yaml:11:13: schedule.validity: not a duration: 'six hours' "
            "(use e.g. 30s, 10m, 6h, 1d)",
        ),
        (
            "validity: 6h",
            "validity: 0s",
            "campaigns/spring.yaml:11:13: schedule.validity: must be longer than zero",
        ),
        (
            "rate: 10/s",
            "rate: 10/week",
            "campaigns/spring.yaml:26:9: limits.rate: not a rate: '10/week' "
            "(use N/s, N/min or N/h)",
        ),
        (
            "budget: 500",
            "budget: -1",
            "campaigns/spring.yaml:27:11: limits.budget: budget must be a number of credits, "
            "zero or more, got -1",
        ),
        (
            "frequency_cap: 1/24h",
            "frequency_cap: once a day",
            "campaigns/spring.yaml:28:18: limits.frequency_cap: not a frequency cap: "
            "'once a day' (use e.g. 1/24h)",
        ),
        (
            "encoding: auto",
            "encoding: utf8",
            "campaigns/spring.yaml:21:13: message.encoding: Input should be 'auto', 'gsm7', "
            "'ucs2' or 'smart'",
        ),
        (
            "channel: sms",
            "channel: telegram",
            "campaigns/spring.yaml:6:10: channel: Input should be 'sms', 'whatsapp', 'facebook' "
            "or 'chat'",
        ),
        (
            "max_segments: 3",
            "max_segments: 0",
            "campaigns/spring.yaml:22:17: message.max_segments: Input should be greater than "
            "or equal to 1",
        ),
        (
            "file: audiences/extra.csv",
            "file: audiences/missing.csv",
            "campaigns/spring.yaml:16:9: audience.file: audience file not found: {folder}/"
            "campaigns/audiences/missing.csv",
        ),
        (
            '  es: "Hola',
            '  "es MX": "Hola',
            "campaigns/spring.yaml:20:14: message.locales.es MX: 'es MX' is not a locale "
            "(use e.g. es, pt-BR)",
        ),
        (
            "  discount: 20",
            "  sale-day: 2026-03-01",
            "campaigns/spring.yaml:24:13: vars.sale-day: 'sale-day' cannot be used in a "
            "template: use letters, digits and '_'",
        ),
        (
            "  rate: 10/s",
            "  rate: 10/s\n  burst: 5",
            "campaigns/spring.yaml:27:3: limits.burst: unknown field",
        ),
        (
            "name: spring-sale",
            "nam: spring-sale",
            "campaigns/spring.yaml:2:1: name: required field is missing",
        ),
    ],
)
def test_each_error_names_file_line_column_and_field(
    folder: Path, old: str, new: str, expected: str
) -> None:
    found = problems(edit(old, new))
    expected = expected.format(folder=folder.resolve())
    assert expected in found
    assert len(found) == (2 if new.startswith("nam:") else 1)  # plus the unknown key 'nam'


def test_template_syntax_error_names_the_template_line() -> None:
    text = edit("{{ discount }}% de", "{{ discount }% de")
    assert problems(text) == [
        "campaigns/spring.yaml:20:9: message.locales.es: template syntax error on template "
        "line 1: unexpected '}'"
    ]
    text = edit(
        "  body: \"Hi {{ first_name | default('there') }}, {{ discount }}% off. Reply STOP to "
        'opt out"',
        "  body: |\n    Hi {{ first_name }},\n    {% if x %}\n    {% endfor %}",
    )
    [found] = problems(text)
    assert found.startswith(
        "campaigns/spring.yaml:18:9: message.body: template syntax error on template line 3: "
        "Encountered unknown tag 'endfor'"
    )


def test_templates_that_include_or_import_are_refused() -> None:
    text = edit('"Hola {{', "\"{% include '/etc/passwd' %}{{")
    assert problems(text) == [
        "campaigns/spring.yaml:20:9: message.locales.es: template line 1: "
        "'{% include %}' is not allowed: a message template cannot use other templates or files"
    ]


def test_unknown_filter_is_a_compile_error() -> None:
    text = edit("default('there')", "shout")
    assert problems(text) == [
        "campaigns/spring.yaml:18:9: message.body: template syntax error on template line 1: "
        "No filter named 'shout'"
    ]


def test_bad_cron_expressions_say_what_is_wrong() -> None:
    def cron(expr: str) -> list[str]:
        return problems(edit('at: "2026-03-01 09:00"', f'cron: "{expr}"'))

    assert cron("0 25 * * *") == [
        "campaigns/spring.yaml:8:9: schedule.cron: invalid cron expression '0 25 * * *': "
        "hour: the last value (25) is higher than the maximum value (23)"
    ]
    assert cron("0 9 * *") == [
        "campaigns/spring.yaml:8:9: schedule.cron: invalid cron expression '0 9 * *': "
        "expected 5 fields (minute hour day-of-month month day-of-week), got 4"
    ]
    assert cron("0 9 * * funday") == [
        "campaigns/spring.yaml:8:9: schedule.cron: invalid cron expression '0 9 * * funday': "
        "day of week: 'funday' is not 0-7 or sun-sat"
    ]
    assert cron("0 0 30 2 *") == [
        "campaigns/spring.yaml:8:9: schedule.cron: cron expression '0 0 30 2 *' never fires"
    ]


def test_schedule_needs_exactly_one_of_at_cron_now() -> None:
    both = edit('at: "2026-03-01 09:00"', 'at: "2026-03-01 09:00"\n  cron: "0 9 * * *"')
    assert problems(both) == [
        "campaigns/spring.yaml:8:3: schedule: give exactly one of at, cron or now: true "
        "(found at and cron)"
    ]
    neither = edit('  at: "2026-03-01 09:00"\n', "  now: false\n")
    assert problems(neither) == [
        "campaigns/spring.yaml:8:3: schedule: give exactly one of at, cron or now: true"
    ]


def test_until_only_with_cron() -> None:
    text = edit('at: "2026-03-01 09:00"', 'at: "2026-03-01 09:00"\n  until: "2026-06-01"')
    assert problems(text) == [
        "campaigns/spring.yaml:9:10: schedule.until: until applies only to a cron schedule"
    ]
    text = edit('at: "2026-03-01 09:00"', 'cron: "0 9 * * *"\n  until: "2026-06-31"')
    assert problems(text) == [
        "campaigns/spring.yaml:9:10: schedule.until: not a real date: '2026-06-31'"
    ]


def test_audience_must_not_be_empty() -> None:
    text = edit(
        '  groups: [vip]\n  exclude_groups: [staff]\n  contacts: ["+27821234567", "082 123 4568"]\n'
        "  file: audiences/extra.csv\n",
        "  exclude_groups: [staff]\n",
    )
    assert problems(text) == [
        "campaigns/spring.yaml:13:3: audience: no recipients: give at least one of groups, "
        "contacts or file"
    ]


def test_contacts_are_checked_one_by_one() -> None:
    text = edit('["+27821234567", "082 123 4568"]', '["+27821234567", "+1555", 27821234567]')
    assert problems(text) == [
        "campaigns/spring.yaml:15:30: audience.contacts.1: invalid phone number '+1555'",
        "campaigns/spring.yaml:15:39: audience.contacts.2: write phone numbers in quotes, e.g. "
        '"+27821234567": YAML read 27821234567 as a number',
    ]


def test_national_numbers_need_a_default_region() -> None:
    assert problems(SPRING, default_region=None) == [
        "campaigns/spring.yaml:15:30: audience.contacts.1: '082 123 4568' has no country code: "
        "write it as +<country code><number>, or set default_region in engine.yaml",
    ]


def test_provider_is_not_checked_without_accounts() -> None:
    assert load(edit("provider: zc-main", "provider: anything"), accounts=None).provider == (
        "anything"
    )


def test_every_problem_of_a_file_is_reported_in_file_order() -> None:
    text = SPRING
    for old, new in [
        ("name: spring-sale", "name: Spring!"),
        ("timezone: Africa/Johannesburg", "timezone: Mars/Olympus"),
        ('at: "2026-03-01 09:00"', 'at: "2026-03-01 09:00"\n  now: true'),
        ("budget: 500", "budget: lots"),
        ("{{ discount }}% de", "{{ discount }% de"),
        ("  discount: 20", "  discount: 20\ncolour: red"),
    ]:
        text = edit(old, new, text)
    found = problems(text)
    assert [line.split(": ")[0:2] for line in found] == [
        ["campaigns/spring.yaml:2:7", "name"],
        ["campaigns/spring.yaml:8:3", "schedule"],
        ["campaigns/spring.yaml:10:13", "schedule.timezone"],
        ["campaigns/spring.yaml:21:9", "message.locales.es"],
        ["campaigns/spring.yaml:26:1", "colour"],
        ["campaigns/spring.yaml:29:11", "limits.budget"],
    ]


def test_yaml_syntax_errors_and_non_mappings() -> None:
    assert problems("name: [unclosed\n") == [
        "campaigns/spring.yaml:2:1: invalid YAML: expected ',' or ']', but got '<stream end>'"
    ]
    assert problems("- a list\n") == [
        "campaigns/spring.yaml:1:1: (file): expected a campaign: a mapping with name, "
        "provider, schedule, audience and message"
    ]
    assert problems("") == [
        "campaigns/spring.yaml:1:1: (file): expected a campaign: a mapping with name, "
        "provider, schedule, audience and message"
    ]


def test_missing_file() -> None:
    with pytest.raises(CampaignFileError) as err:
        load_campaign(Path("campaigns/nope.yaml"))
    assert err.value.problems == ["campaigns/nope.yaml: cannot read: No such file or directory"]


# --- many files ------------------------------------------------------------------------


def test_load_paths_reads_folders_and_reports_all_files_problems() -> None:
    write(SPRING)
    write(edit("name: spring-sale", "name: autumn-sale"), Path("campaigns/autumn.yml"))
    write(edit("timezone: Africa/Johannesburg", "timezone: Nowhere"), Path("campaigns/bad.yaml"))
    write("not: [valid", Path("campaigns/.hidden.yaml"))
    write(SPRING, Path("campaigns/notes.txt"))
    campaigns, found = load_paths([Path("campaigns"), PATH], accounts=ACCOUNTS, default_region="za")
    assert [(str(path), c.name) for path, c in campaigns] == [
        ("campaigns/autumn.yml", "autumn-sale"),
        ("campaigns/spring.yaml", "spring-sale"),
    ]
    assert found == ["campaigns/bad.yaml:9:13: schedule.timezone: unknown time zone 'Nowhere'"]


def test_load_paths_reports_duplicate_names_and_missing_paths() -> None:
    write(SPRING)
    write(SPRING, Path("campaigns/copy.yaml"))
    campaigns, found = load_paths(
        [Path("campaigns"), Path("elsewhere")], accounts=ACCOUNTS, default_region="ZA"
    )
    assert [str(path) for path, _ in campaigns] == ["campaigns/copy.yaml"]
    assert found == [
        "elsewhere: no such file or folder",
        "campaigns/spring.yaml:2:7: name: campaign 'spring-sale' is already defined in "
        "campaigns/copy.yaml",
    ]


# --- stored specs ----------------------------------------------------------------------


def test_spec_round_trip_and_hash() -> None:
    campaign = load(SPRING)
    spec = campaign.spec_json()
    assert spec["limits"] == {"rate": "10/s", "budget": "500", "frequency_cap": "1/1d"}
    assert spec["schedule"]["at"] == "2026-03-01 09:00"
    again = Campaign.from_spec(spec)
    assert again == campaign
    assert again.spec_hash() == campaign.spec_hash()
    changed = Campaign.from_spec({**spec, "vars": {"discount": 25}})
    assert changed.spec_hash() != campaign.spec_hash()


def test_from_spec_skips_file_checks_but_keeps_the_rules() -> None:
    spec = load(SPRING).spec_json()
    spec["audience"]["file"] = "/gone/extra.csv"
    assert Campaign.from_spec(spec).audience.file == Path("/gone/extra.csv")
    spec["schedule"]["cron"] = "0 9 * * *"
    with pytest.raises(ValidationError, match="give exactly one of at, cron or now"):
        Campaign.from_spec(spec)


# --- fuzzing the loader ----------------------------------------------------------------

#: pieces of YAML and Jinja syntax, so generated files reach past the first syntax error
PIECES = st.sampled_from(
    [
        "\n",
        "  ",
        "- ",
        ": ",
        "name: x",
        "provider: zc-main",
        "schedule:",
        "audience:",
        "message:",
        "body: ",
        "locales:",
        "vars:",
        "limits:",
        "at: ",
        "cron: ",
        "now: true",
        "groups: [vip]",
        "&a ",
        "*a",
        "[",
        "]",
        "{",
        "}",
        ",",
        "'",
        '"',
        "!!binary ",
        "!!timestamp ",
        "!!str ",
        "<<: ",
        "? ",
        "|",
        ">",
        "#",
        "%YAML 1.1",
        "---",
        "...",
        "2026-13-45",
        "1e999",
        "0x",
        "{{",
        "}}",
        "{%",
        "%}",
        " for x in y ",
        " endfor ",
        "~",
        "*",
        "**",
        "10",
        "|center(",
        ")",
        "\t",
        "\x00",
        "\ud800",
        "\u2028",
        "é",
        "+27821234567",
    ]
)
#: YAML values built from a grammar: flow lists and maps of odd scalars, anchors and aliases
SCALARS = st.one_of(
    st.sampled_from(
        [
            "2026-13-45",
            "2026-02-30 25:61",
            "1e999",
            "-.inf",
            ".nan",
            "0o777",
            "0x_1",
            "~",
            "null",
            "*a",
            "!!binary x",
            "!!int x",
            "!!float x",
            "!!timestamp 2026-99-99",
            "'q'",
            '"\\0"',
            '"\\ud800"',
            "'{{ x * 10**9 }}'",
            "'{% for a in b %}'",
            "+27821234567",
            "yes",
            "",
        ]
    ),
    st.from_regex(r"[A-Za-z0-9 _:+.-]{0,12}", fullmatch=True),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda items: "[" + ", ".join(items) + "]"),
        st.lists(st.tuples(SCALARS, inner), max_size=4).map(
            lambda pairs: "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"
        ),
        inner.map(lambda v: f"&a {v}"),
    ),
    max_leaves=12,
)
FUZZ = settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def load_or_error(path: Path) -> None:
    """The loader's whole contract: a campaign, or a CampaignFileError of clean lines."""
    try:
        load_campaign(path, accounts=ACCOUNTS)
        return
    except CampaignFileError as exc:
        problems = exc.problems
    assert problems
    assert all(problem.startswith(f"{path}:") and "\n" not in problem for problem in problems)


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_load_or_fail_cleanly(data: bytes) -> None:
    PATH.write_bytes(data)
    load_or_error(PATH)


@FUZZ
@given(st.lists(st.one_of(PIECES, st.text(max_size=20)), max_size=60).map("".join))
def test_any_yamlish_text_loads_or_fails_cleanly(text: str) -> None:
    PATH.write_text(text, encoding="utf-8", errors="surrogatepass")
    load_or_error(PATH)


@FUZZ
@given(
    st.sampled_from(["name", "provider", "schedule", "audience", "message", "vars", "limits"]),
    st.lists(st.one_of(PIECES, st.text(max_size=20)), max_size=30).map("".join),
)
def test_a_valid_campaign_with_one_section_fuzzed_loads_or_fails_cleanly(
    section: str, text: str
) -> None:
    lines = SPRING.replace("  file: audiences/extra.csv\n", "").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{section}:"))
    lines.insert(start + 1, "  " + text.replace("\n", "\n  ") + "\n")
    PATH.write_text("".join(lines), encoding="utf-8", errors="surrogatepass")
    load_or_error(PATH)


@FUZZ
@given(
    st.sampled_from(
        [
            "name",
            "provider",
            "schedule",
            "audience",
            "message",
            "vars",
            "limits",
            "description",
            "channel",
            "sender",
            "x",
        ]
    ),
    VALUES,
)
def test_any_yaml_value_in_any_field_loads_or_fails_cleanly(field: str, value: str) -> None:
    text = SPRING.replace("  file: audiences/extra.csv\n", "")
    kept = [line for line in text.splitlines() if not line.startswith(f"{field}:")]
    PATH.write_text("\n".join([*kept, f"{field}: {value}", ""]), encoding="utf-8")
    load_or_error(PATH)


@FUZZ
@given(st.lists(st.one_of(PIECES, st.text(max_size=10)), max_size=40).map("".join))
def test_any_message_body_loads_or_fails_cleanly(body: str) -> None:
    text = SPRING.replace("  file: audiences/extra.csv\n", "")
    text = text.replace(
        text[text.index("  body: ") : text.index("  locales:")],
        "  body: " + json.dumps(body) + "\n",
    )
    PATH.write_text(text, encoding="utf-8", errors="surrogatepass")
    load_or_error(PATH)
