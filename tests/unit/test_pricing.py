"""Price tables: longest prefix, defaults, layering and exact Decimal costs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.pricing import NoRateError, PriceTable

D = Decimal
GLOBAL = PriceTable({"27": D("0.25"), "2782": D("0.22"), "1": D("0.10"), "447": D("0.31")})


@pytest.mark.parametrize(
    ("number", "rate"),
    [
        pytest.param("+27821234567", D("0.22"), id="longest prefix wins"),
        pytest.param("+27831234567", D("0.25"), id="shorter prefix when longer misses"),
        pytest.param("27821234567", D("0.22"), id="number without plus"),
        pytest.param("+15551234567", D("0.10"), id="one-digit prefix"),
        pytest.param("+447700900123", D("0.31"), id="three-digit prefix"),
        pytest.param("+27", D("0.25"), id="number shorter than the longest prefix"),
    ],
)
def test_longest_prefix(number: str, rate: Decimal) -> None:
    assert GLOBAL.rate_for(number) == rate


def test_prefixes_may_be_written_with_a_plus() -> None:
    table = PriceTable({"+27": D("0.25"), "+2782": D("0.22")})
    assert table.rate_for("+27821234567") == D("0.22")
    assert dict(table.prefixes) == {"27": D("0.25"), "2782": D("0.22")}


def test_default_when_no_prefix_matches() -> None:
    table = PriceTable({"27": D("0.25")}, default=D("0.35"))
    assert table.rate_for("+33612345678") == D("0.35")


def test_no_rate_names_the_prefix_not_the_whole_number() -> None:
    with pytest.raises(NoRateError) as caught:
        GLOBAL.rate_for("+33612345678")
    assert caught.value.prefix == "33612"
    assert "+33612" in str(caught.value)
    assert "345678" not in str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_empty_table_has_no_rate() -> None:
    with pytest.raises(NoRateError):
        PriceTable().rate_for("+27821234567")


@pytest.mark.parametrize(
    ("segments", "rate", "cost"),
    [
        (3, "0.1", "0.3"),
        (7, "0.0075", "0.0525"),
        (1, "0.22", "0.22"),
        (0, "0.22", "0.00"),
    ],
)
def test_cost_is_exact(segments: int, rate: str, cost: str) -> None:
    table = PriceTable({"27": D(rate)})
    result = table.cost(segments, "+27821234567")
    assert (type(result), result) == (Decimal, D(cost))


def test_costs_add_up_without_drift() -> None:
    table = PriceTable({"27": D("0.1")})
    assert sum(table.cost(1, "+27821234567") for _ in range(10)) == D("1.0")


def test_negative_segments_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        GLOBAL.cost(-1, "+27821234567")


ACCOUNT = PriceTable({"27": D("0.20")}, default=D("0.50"))
WORLD = PriceTable({"2782": D("0.22"), "44": D("0.30")}, default=D("0.35"))


@pytest.mark.parametrize(
    ("account", "number", "rate"),
    [
        pytest.param(ACCOUNT, "+27821234567", D("0.20"), id="account prefix beats longer global"),
        pytest.param(ACCOUNT, "+447700900123", D("0.30"), id="global prefix beats account default"),
        pytest.param(ACCOUNT, "+33612345678", D("0.50"), id="account default beats global default"),
        pytest.param(
            PriceTable({"27": D("0.20")}), "+33612345678", D("0.35"), id="then global default"
        ),
        pytest.param(None, "+27821234567", D("0.22"), id="no account table"),
    ],
)
def test_layering_order(account: PriceTable | None, number: str, rate: Decimal) -> None:
    assert PriceTable.layered(account, WORLD).rate_for(number) == rate


def test_layered_without_any_default_has_no_rate() -> None:
    table = PriceTable.layered(PriceTable({"27": D("0.2")}), PriceTable({"44": D("0.3")}))
    with pytest.raises(NoRateError):
        table.rate_for("+33612345678")


def test_layering_an_already_layered_table_keeps_its_order() -> None:
    middle = PriceTable.layered(PriceTable({"27": D("0.20")}), PriceTable({"44": D("0.40")}))
    table = PriceTable.layered(middle, WORLD)
    assert [table.rate_for(n) for n in ("+2782", "+44", "+33")] == [
        D("0.20"),
        D("0.40"),
        D("0.35"),
    ]


@pytest.mark.parametrize(
    ("prefixes", "default", "message"),
    [
        pytest.param({"27a": D("0.1")}, None, "digits", id="non-digit prefix"),
        pytest.param({"": D("0.1")}, None, "digits", id="empty prefix"),
        pytest.param({"27": 0.1}, None, "Decimal", id="float rate"),
        pytest.param({"27": D("-0.1")}, None, "non-negative", id="negative rate"),
        pytest.param({"27": D("NaN")}, None, "non-negative", id="NaN rate"),
        pytest.param({}, 0.35, "Decimal", id="float default"),
        pytest.param({"27": D("0.1"), "+27": D("0.2")}, None, "twice", id="conflicting duplicate"),
    ],
)
def test_invalid_tables_are_refused(
    prefixes: dict[str, Decimal], default: Decimal | None, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PriceTable(prefixes, default)


def test_table_is_a_snapshot_of_its_prefixes() -> None:
    source = {"27": D("0.25")}
    table = PriceTable(source)
    source["27"] = D("9")
    assert table.rate_for("+27821234567") == D("0.25")
    with pytest.raises(TypeError):
        table.prefixes["27"] = D("1")  # type: ignore[index]


def test_tables_with_the_same_rates_are_equal() -> None:
    assert PriceTable({"+27": D("0.25")}) == PriceTable({"27": D("0.25")})
