"""Hostile templates: every resource a template can exhaust is capped (issue 18, breaks 1, 10).

Each case here used to take seconds to minutes and gigabytes (or hang) before the limits;
now it is a validate error when it is constant, else a ``RenderError`` for one recipient.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engine import cli
from engine.spec import MessageSpec
from engine.template_limits import Limits
from engine.templates import RenderError, check_syntax, compile_message


def render(body: str, context: dict[str, object] | None = None, **limits: float) -> str:
    spec = MessageSpec(body="ok")
    templates = compile_message(spec.model_copy(update={"body": body}), Limits(**limits))
    return templates.render(context or {}, None).text


@pytest.mark.parametrize(
    "body",
    [
        "{{ 'a' * 10**9 }}",
        "{{ 'a' * 1000000000 }}",
        "{{ ['a'] * 1000000000 }}",
        "{{ 9 ** (9 ** 9) }}",
        "{{ 'a' | center(1000000000) }}",
        "{{ 'a'.center(1000000000) }}",
        "{{ '%1000000000s' | format('a') }}",
        "{{ '%1000000000s' % 'a' }}",
        "{{ '{:>1000000000}'.format('a') }}",
        "{{ 'a\\nb' | indent(1000000000) }}",
        "{{ [1] | batch(1000000000, 'x') | list }}",
        "{{ [1] | slice(1000000000) | list }}",
    ],
)
def test_a_constant_bomb_is_a_validate_error(body: str) -> None:
    problem = check_syntax(body)
    assert problem is not None
    assert problem.startswith("template line 1: ")
    assert "limit" in problem


def test_a_constant_bomb_is_one_line_from_engine_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no engine.yaml: the default configuration
    path = tmp_path / "bomb.yaml"
    path.write_text(
        "name: bomb\nprovider: simulator\nschedule: {now: true}\n"
        "audience: {groups: [all]}\nmessage:\n  body: \"{{ 'a' * 10**9 }}\"\n"
    )
    code = cli.main(["campaign", "validate", str(path)])
    err = capsys.readouterr().err
    assert code == 1
    [line] = [line for line in err.splitlines() if "message.body" in line]
    assert line == (
        f"{path}:6:9: message.body: template line 1: "
        "a value would be longer than the limit of 100000 characters"
    )


DEEP: list[object] = [1] * 40
for _ in range(30):
    DEEP = [DEEP]
#: refused before the value is built (not caught later by the output limit)
RUNTIME_LIMIT = r"value would be longer than the limit of \d+ characters|than the limit of \d+ bits"


@pytest.mark.parametrize(
    ("body", "context"),
    [
        ("{{ x * n }}", {"x": "a", "n": 10**9}),
        ("{{ x | center(n) }}", {"x": "a", "n": 10**9}),
        ("{{ x.ljust(n) }}", {"x": "a", "n": 10**9}),
        ("{{ n ** n }}", {"n": 10**6}),
        ("{{ x | format(n) }}", {"x": "%.1000000000f", "n": 1.0}),
        ("{{ x % n }}", {"x": "%*s", "n": (10**9, "a")}),
        ("{{ x | replace('', x * 1000) }}", {"x": "a" * 1000}),
        ("{{ x.replace('a', x * 99) }}", {"x": "a" * 1000}),
        ("{{ x.expandtabs(99999) }}", {"x": "\t" * 1000}),
        ("{{ x.translate({97: x}) }}", {"x": "a" * 1000}),
        ("{{ ([x * 99999] * 99999) | string }}", {"x": "a"}),
        ("{{ ([x * 99999] * 99999) | join }}", {"x": "a"}),
        ("{{ [x * 99999] * 99999 }}", {"x": "a"}),
        ("{{ x | wordwrap(1, wrapstring=x) }}", {"x": "a" * 1000}),
        (
            "{% set a = x * 90000 %}{% set b = a ~ a %}{% set c = b ~ b %}{{ c | length }}",
            {"x": "a"},
        ),
        ("{% set a = x * 90000 %}{{ a + a }}", {"x": "a"}),
        ("{{ x.encode() * n }}", {"x": "a", "n": 10**9}),
        ("{{ x.encode().center(n) }}", {"x": "a", "n": 10**9}),
        ("{{ x | urlize(target=y) }}", {"x": "a.com " * 2000, "y": "t" * 50_000}),
        ("{{ [[[1]]] | tojson(indent=n) }}", {"n": 10**9}),
        ("{{ x | tojson(indent=2000) }}", {"x": DEEP}),
    ],
)
def test_a_runtime_bomb_is_a_render_error(body: str, context: dict[str, object]) -> None:
    with pytest.raises(RenderError, match=RUNTIME_LIMIT):
        render(body, context)


def test_sum_adds_numbers_only() -> None:
    with pytest.raises(RenderError, match="numbers only"):
        render("{{ [[x] * 5000] * 5000 | sum(start=[]) }}", {"x": "a"})
    assert render("{{ [1, 2.5] | sum }}") == "3.5"


def test_nested_loops_over_a_string_stop_at_the_iteration_limit() -> None:
    body = "{% for a in s %}{% for b in s %}{% for c in s %}{% endfor %}{% endfor %}{% endfor %}"
    with pytest.raises(RenderError, match="loop iterations"):
        render(body, {"s": "x" * 1000})  # 10**9 iterations


def test_output_written_in_a_loop_stops_at_the_output_limit() -> None:
    body = "{% for a in s %}" + "y" * 1000 + "{% endfor %}"
    with pytest.raises(RenderError, match="characters"):
        render(body, {"s": "x" * 10_000})


def test_text_captured_by_a_set_block_counts_towards_the_output() -> None:
    body = "{% set b %}{% for a in s %}{{ x }}{% endfor %}{% endset %}{{ b | length }}"
    with pytest.raises(RenderError, match="characters"):
        render(body, {"s": "x" * 10_000, "x": "y" * 50_000})


def test_exponential_macro_recursion_is_a_render_error() -> None:
    body = "{% macro m(n) %}{% if n %}{{ m(n - 1) ~ m(n - 1) }}{% endif %}{% endmacro %}{{ m(40) }}"
    with pytest.raises(RenderError, match=r"steps|time limit"):
        render(body)


def test_exponential_recursive_loop_is_a_render_error() -> None:
    body = (
        "{% for x in [1, 1] recursive %}{% if loop.depth < 40 %}{{ loop([1, 1]) }}"
        "{% endif %}{% endfor %}"
    )
    with pytest.raises(RenderError, match=r"steps|time limit"):
        render(body)


def test_render_time_is_limited_per_message() -> None:
    with pytest.raises(RenderError, match="time limit"):
        render("{% for a in s %}{{ a }}{% endfor %}", {"s": "x" * 100}, seconds=0)


def test_lists_cannot_be_grown_in_place() -> None:
    with pytest.raises(RenderError, match="sandbox"):
        render(
            "{% set l = [x] %}{% for i in s %}{{ l.extend(l) }}{% endfor %}",
            {"x": "a", "s": "x" * 40},
        )


def test_limits_leave_ordinary_templates_alone() -> None:
    body = (
        "{% for item in items %}{{ loop.index }}. {{ item | upper | center(7) }}"
        "{% if not loop.last %}, {% endif %}{% endfor %} {{ '%05.1f' | format(n) }}"
        " {{ '{:>4}'.format(k) }} {{ ('ab' * 3) ~ '!' }} {{ 2 ** 10 }} {{ words | join(' ') }}"
    )
    context = {"items": ["a", "b"], "n": 3.14159, "k": 7, "words": ["x", "y"]}
    assert render(body, context) == "1.    A   , 2.    B    003.1    7 ababab! 1024 x y"


@pytest.mark.parametrize("value", ["a\x00b", "\ud800"])
def test_a_character_postgresql_text_cannot_hold_is_a_render_error(value: str) -> None:
    with pytest.raises(RenderError, match="cannot be stored"):
        render("Hi {{ x }}", {"x": value})


def test_a_render_error_message_holds_no_nul() -> None:
    with pytest.raises(RenderError) as err:
        render("{{ ('{:' ~ y ~ '}').format(1) }}", {"y": "a\x00b"})
    assert "\x00" not in str(err.value)
