"""Message templates: sandbox, strict variables, locale fallback, context precedence."""

from __future__ import annotations

import pytest

from engine.errors import EngineError
from engine.spec import MessageSpec
from engine.templates import (
    MessageTemplates,
    Rendered,
    RenderError,
    build_context,
    check_syntax,
    compile_message,
)

BODY = "Hi {{ first_name | default('there') }}, {{ discount }}% off today. Reply STOP to opt out"


def compiled(body: str = BODY, **locales: str) -> MessageTemplates:
    spec = MessageSpec(body=body, locales={tag.replace("__", "-"): s for tag, s in locales.items()})
    return compile_message(spec)


def render(body: str, context: dict[str, object] | None = None) -> str:
    return compiled(body).render(context or {}, None).text


def test_default_filter_covers_a_missing_first_name() -> None:
    templates = compiled()
    assert templates.render({"discount": 20}, None) == Rendered(
        "Hi there, 20% off today. Reply STOP to opt out", None
    )
    assert templates.render({"discount": 20, "first_name": "Ann"}, None).text.startswith("Hi Ann,")


def test_missing_variable_is_a_render_error_naming_it() -> None:
    with pytest.raises(RenderError) as err:
        compiled().render({"first_name": "Ann"}, None)
    assert err.value.variable == "discount"
    assert str(err.value) == "undefined variable 'discount'"
    assert isinstance(err.value, EngineError)


def test_missing_attribute_is_a_render_error_too() -> None:
    with pytest.raises(RenderError) as err:
        render("{{ shop.city }}", {"shop": {"name": "Acme"}})
    assert err.value.variable == "city"
    assert str(err.value) == "undefined value: 'dict object' has no attribute 'city'"


def test_if_on_a_missing_value_needs_is_defined() -> None:
    text = "{% if first_name is defined %}Hi {{ first_name }}{% else %}Hello{% endif %}"
    assert render(text) == "Hello"
    assert render(text, {"first_name": "Ann"}) == "Hi Ann"
    with pytest.raises(RenderError, match="undefined variable 'first_name'"):
        render("{% if first_name %}Hi{% endif %}")


@pytest.mark.parametrize(
    ("locale", "expected", "used"),
    [
        ("es-MX", "Hola mx", "es-MX"),
        ("es-AR", "Hola", "es"),
        ("es", "Hola", "es"),
        ("ES_mx", "Hola mx", "es-MX"),
        ("pt_BR", "Olá", "pt-BR"),
        ("pt-br", "Olá", "pt-BR"),
        ("pt-PT", "Hi", None),
        ("fr-CA", "Hi", None),
        ("", "Hi", None),
        (None, "Hi", None),
    ],
)
def test_locale_falls_back_to_language_then_body(
    locale: str | None, expected: str, used: str | None
) -> None:
    templates = compiled("Hi", es="Hola", es__MX="Hola mx", pt__BR="Olá")
    assert templates.render({}, locale) == Rendered(expected, used)


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ first_name.__class__ }}",
        "{{ discount.__class__.__base__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ range.__self__ }}",
        "{{ '{0.__class__}'.format(first_name) }}",
        "{{ shop.__class__.__init__.__globals__ }}",
        "{{ self.__init__.__globals__ }}",
    ],
)
def test_sandbox_escapes_are_refused(source: str) -> None:
    assert check_syntax(source) is None  # valid syntax: the refusal happens in the sandbox
    with pytest.raises(RenderError):
        render(source, {"first_name": "Ann", "discount": 20, "shop": {}})


def test_sandbox_refusal_says_so() -> None:
    with pytest.raises(RenderError) as err:
        render("{{ first_name.__class__ }}", {"first_name": "Ann"})
    assert str(err.value) == (
        "refused by the template sandbox: access to attribute '__class__' of 'str' object "
        "is unsafe."
    )


@pytest.mark.parametrize(
    ("source", "tag"),
    [
        ("{% include '/etc/passwd' %}", "include"),
        ("{% import '/etc/passwd' as p %}", "import"),
        ("{% from '/etc/passwd' import x %}", "from"),
        ("{% extends '/etc/passwd' %}", "extends"),
    ],
)
def test_templates_cannot_read_files(source: str, tag: str) -> None:
    assert check_syntax(source) == (
        f"template line 1: '{{% {tag} %}}' is not allowed: "
        "a message template cannot use other templates or files"
    )
    unchecked = compile_message(MessageSpec.model_construct(body=source, locales={}))
    with pytest.raises(RenderError, match="may not include or import"):
        unchecked.render({}, None)  # even if it got past validation, the loader refuses


def test_other_render_failures_become_render_errors() -> None:
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        render("{{ discount / 0 }}", {"discount": 20})
    with pytest.raises(RenderError, match="template error: TypeError"):
        render("{{ '%d' | format(first_name) }}", {"first_name": "Ann"})


def test_check_syntax_reports_the_template_line() -> None:
    assert check_syntax(BODY) is None
    assert check_syntax("Hi\n{{ name }") == (
        "template syntax error on template line 2: unexpected '}'"
    )
    assert check_syntax("{{ name | shout }}") == (
        "template syntax error on template line 1: No filter named 'shout'"
    )


def test_block_lines_and_trailing_newline_add_no_characters() -> None:
    body = "Hi{% if vip is defined %}\n{% if vip %}\n VIP\n{% endif %}\n{% endif %}!\n"
    assert render(body, {"vip": True}) == "Hi VIP\n!"
    assert render("Hello\n") == "Hello"


def test_no_globals_are_exposed() -> None:
    with pytest.raises(RenderError, match="undefined variable 'range'"):
        render("{% for i in range(3) %}x{% endfor %}")


def test_context_precedence_and_none_values_left_out() -> None:
    context = build_context(
        {"phone": "+27821234567", "first_name": None, "locale": "es"},
        {"first_name": "Attr", "tier": "gold", "discount": 30, "phone": "attr", "city": None},
        {"discount": 20, "tier": "bronze", "city": "Cape Town", "code": "SPRING"},
    )
    assert context == {
        "phone": "+27821234567",
        "first_name": "Attr",
        "locale": "es",
        "tier": "gold",
        "discount": 30,
        "city": "Cape Town",
        "code": "SPRING",
    }
    no_name = build_context({"first_name": None}, {}, {"discount": 20})
    assert compiled().render(no_name, None).text.startswith("Hi there,")


def test_render_does_not_change_the_context() -> None:
    context = {"discount": 20}
    assert render("{% set discount = 5 %}{{ discount }}", context) == "5"
    assert context == {"discount": 20}
