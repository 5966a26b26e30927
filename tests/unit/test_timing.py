"""Time maths: schedules firing on the local wall clock (daylight saving, cron) and quiet hours."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from engine.spec import Schedule
from engine.timing import parse_quiet_hours

# --- firing times ----------------------------------------------------------------------


def schedule(**fields: object) -> Schedule:
    return Schedule.model_validate(fields)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc, arg-type]


def test_at_fires_once_strictly_after() -> None:
    at = schedule(at="2026-03-01 09:00", timezone="Africa/Johannesburg")
    assert at.next_fire_time(utc(2026, 3, 1, 6, 59)) == utc(2026, 3, 1, 7, 0)
    assert at.next_fire_time(utc(2026, 3, 1, 7, 0)) is None
    assert schedule(now=True).next_fire_time(utc(2026, 1, 1)) is None


def test_cron_follows_local_time_across_daylight_saving() -> None:
    daily = schedule(cron="0 9 * * *", timezone="America/New_York")
    fires = list(daily.fire_times(utc(2026, 3, 7), utc(2026, 3, 10)))
    assert fires == [utc(2026, 3, 7, 14), utc(2026, 3, 8, 13), utc(2026, 3, 9, 13)]


def test_cron_fires_once_in_the_hour_that_repeats() -> None:
    nightly = schedule(cron="30 1 * * *", timezone="America/New_York")
    fires = list(nightly.fire_times(utc(2026, 10, 31, 12), utc(2026, 11, 2, 12)))
    assert fires == [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]
    quarterly = schedule(cron="*/15 * * * *", timezone="America/New_York")
    fires = list(quarterly.fire_times(utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 7, 30)))
    assert fires == sorted(set(fires))  # never twice, never backwards
    assert fires[:3] == [utc(2026, 11, 1, 5, 45), utc(2026, 11, 1, 7), utc(2026, 11, 1, 7, 15)]


def test_cron_time_skipped_by_the_clocks_fires_after_the_jump() -> None:
    nightly = schedule(cron="30 2 * * *", timezone="America/New_York")
    assert nightly.next_fire_time(utc(2026, 3, 8, 5)) == utc(2026, 3, 8, 7, 30)  # 03:30 EDT
    assert nightly.next_fire_time(utc(2026, 3, 8, 7, 10)) == utc(2026, 3, 8, 7, 30)
    assert nightly.next_fire_time(utc(2026, 3, 8, 7, 30)) == utc(2026, 3, 9, 6, 30)


def test_cron_weekday_numbers_are_standard_cron() -> None:
    after = utc(2026, 3, 4)  # a Wednesday
    monday = schedule(cron="0 9 * * 1").next_fire_time(after)
    sunday = schedule(cron="0 9 * * 0").next_fire_time(after)
    also_sunday = schedule(cron="0 9 * * 7").next_fire_time(after)
    weekend = list(schedule(cron="0 9 * * 6-7").fire_times(after, utc(2026, 3, 9)))
    assert monday == utc(2026, 3, 9, 9)
    assert sunday == also_sunday == utc(2026, 3, 8, 9)
    assert weekend == [utc(2026, 3, 7, 9), utc(2026, 3, 8, 9)]
    named = schedule(cron="0 9 * * MON-FRI/2").fire_times(after, utc(2026, 3, 14))
    assert [fire.strftime("%a") for fire in named] == ["Wed", "Fri", "Mon", "Wed", "Fri"]


def test_until_is_the_last_local_day() -> None:
    weekly = schedule(cron="0 23 * * *", timezone="Africa/Johannesburg", until="2026-06-01")
    assert weekly.next_fire_time(utc(2026, 5, 31, 22)) == utc(2026, 6, 1, 21)  # 23:00 local
    assert weekly.next_fire_time(utc(2026, 6, 1, 21)) is None


def test_next_fire_time_needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="aware"):
        schedule(now=True).next_fire_time(datetime(2026, 1, 1))


# --- quiet hours -----------------------------------------------------------------------


def test_quiet_hours_crossing_midnight() -> None:
    night = parse_quiet_hours("21:00-08:00")
    assert [night.contains(time(h)) for h in (20, 21, 23, 0, 7, 8)] == [
        False, True, True, True, True, False,
    ]  # fmt: skip
    zone = ZoneInfo("Africa/Johannesburg")
    evening = datetime(2026, 3, 1, 22, 30, tzinfo=zone)
    assert night.end_after(evening) == datetime(2026, 3, 2, 8, tzinfo=zone)
    early = datetime(2026, 3, 2, 3, 0, tzinfo=zone)
    assert night.end_after(early) == datetime(2026, 3, 2, 8, tzinfo=zone)
    noon = datetime(2026, 3, 2, 12, tzinfo=zone)
    assert night.end_after(noon) is noon
    assert night.release(utc(2026, 3, 1, 20, 30), zone) == utc(2026, 3, 2, 6)
    assert night.release(utc(2026, 3, 2, 10), zone) == utc(2026, 3, 2, 10)


def test_quiet_hours_within_a_day_and_their_syntax() -> None:
    lunch = parse_quiet_hours("12:00 - 13:30")
    assert (lunch.contains(time(12)), lunch.contains(time(13, 30)), str(lunch)) == (
        True, False, "12:00-13:30",
    )  # fmt: skip
    moment = datetime(2026, 1, 1, 12, 10)
    assert lunch.end_after(moment) == datetime(2026, 1, 1, 13, 30)
    assert parse_quiet_hours("22:00-24:00").contains(time(23, 59))
    for bad in ("25:00-08:00", "08:00-08:00", "8-9"):
        with pytest.raises(ValueError, match=r"quiet hours|time of day"):
            parse_quiet_hours(bad)
