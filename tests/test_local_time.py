"""scheduleTo in local time with `timezone`: the gap and overlap rule, through the API too."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from messages.local_time import UnknownTimeZone, resolve_local_time
from messages.models import Message

BODY = {"id": "local", "payload": {"v": 1}, "webhookUrl": "https://example.com/hook"}


@pytest.mark.parametrize(
    ("local", "zone", "instant"),
    [
        # An ordinary summer time: EDT, UTC-4
        ("2027-06-01T09:00:00", "America/New_York", "2027-06-01T13:00:00+00:00"),
        # In the spring-forward gap (02:00-03:00 does not exist): moved forward an hour, 03:30 EDT
        ("2027-03-14T02:30:00", "America/New_York", "2027-03-14T07:30:00+00:00"),
        # In the fall-back overlap (01:00-02:00 happens twice): the first, 01:30 EDT, not EST
        ("2027-11-07T01:30:00", "America/New_York", "2027-11-07T05:30:00+00:00"),
        # Europe's gap, 02:00-03:00 CET: 02:30 is 03:30 CEST
        ("2027-03-28T02:30:00", "Europe/Berlin", "2027-03-28T01:30:00+00:00"),
        # Europe's overlap, 02:00-03:00 twice: the first, CEST
        ("2027-10-31T02:30:00", "Europe/Berlin", "2027-10-31T00:30:00+00:00"),
        # A gap of half an hour (Lord Howe Island: 02:00 -> 02:30)
        ("2027-10-03T02:15:00", "Australia/Lord_Howe", "2027-10-02T15:45:00+00:00"),
        ("2027-06-01T09:00:00", "UTC", "2027-06-01T09:00:00+00:00"),
    ],
)
def test_a_local_time_resolves_to_its_instant_by_the_gap_and_overlap_rule(local, zone, instant):
    assert resolve_local_time(datetime.fromisoformat(local), zone).isoformat() == instant


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../../../etc/passwd", "/usr/share/zoneinfo/UTC", "america/new_york"])
def test_a_name_that_is_no_iana_zone_is_refused(zone):
    with pytest.raises(UnknownTimeZone):
        resolve_local_time(datetime(2027, 6, 1, 9), zone)


@pytest.mark.django_db
def test_a_local_schedule_is_stored_as_its_instant_and_its_zone_and_shown_both(api):
    response = api.post("/messages", {**BODY, "scheduleTo": "2027-03-14T02:30:00", "timezone": "America/New_York"})

    assert response.status_code == 200, response.content
    message = Message.objects.get(message_id="local")
    assert (message.schedule_to, message.due_at) == (datetime(2027, 3, 14, 7, 30, tzinfo=UTC),) * 2
    assert message.time_zone == "America/New_York"
    detail = api.get("/messages/local").json()
    assert (detail["scheduleTo"], detail["timezone"], detail["nextRun"]) == (
        "2027-03-14T07:30:00+00:00",
        "America/New_York",
        "2027-03-14T07:30:00+00:00",
    )
    assert api.get("/messages").json()["scheduledJobs"][0]["nextRun"] == "2027-03-14T07:30:00+00:00"


@pytest.mark.django_db
def test_a_schedule_with_an_offset_shows_no_zone(api):
    api.post("/messages", {**BODY, "scheduleTo": "2027-03-14T02:30:00Z"})

    assert api.get("/messages/local").json()["timezone"] is None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"scheduleTo": "2027-03-14T02:30:00-05:00", "timezone": "America/New_York"}, "scheduleTo"),
        ({"scheduleTo": "2027-03-14T02:30:00Z", "timezone": "UTC"}, "scheduleTo"),
        ({"scheduleTo": "2027-03-14T02:30:00", "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"scheduleTo": "2027-03-14T02:30:00", "timezone": ""}, "timezone"),
        ({"scheduleTo": "2027-03-14T02:30:00", "timezone": 5}, "timezone"),
        ({"scheduleTo": "2027-03-14T02:30:00", "timezone": None}, "timezone"),
        ({"scheduleTo": "not a time", "timezone": "UTC"}, "scheduleTo"),
        ({"scheduleTo": "0001-01-01T00:30:00", "timezone": "Asia/Tokyo"}, "scheduleTo"),
        ({"scheduleTo": "9999-12-31T23:30:00", "timezone": "America/New_York"}, "scheduleTo"),
        ({"timezone": "UTC"}, "scheduleTo"),
        # Without a zone, a time without an offset is refused as before
        ({"scheduleTo": "2027-03-14T02:30:00"}, "scheduleTo"),
    ],
)
def test_a_bad_local_schedule_is_a_400_and_stores_nothing(api, extra, field):
    response = api.post("/messages", {**BODY, **extra}, format="json")

    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_without_a_zone_the_offset_error_is_the_old_one(api):
    response = api.post("/messages", {**BODY, "scheduleTo": "2027-03-14T02:30:00"})

    assert response.json()["errors"]["scheduleTo"] == ["Must carry a UTC offset, e.g. 'Z' or '+02:00'."]


@pytest.mark.django_db
def test_patch_moves_a_message_to_a_local_time_and_an_offset_clears_its_zone(api):
    api.post("/messages", {**BODY, "scheduleTo": "2099-01-01T00:00:00Z"})

    local = api.patch("/messages/local", {"scheduleTo": "2027-11-07T01:30:00", "timezone": "America/New_York"})
    assert local.status_code == 200, local.content
    assert (local.json()["scheduleTo"], local.json()["timezone"]) == ("2027-11-07T05:30:00+00:00", "America/New_York")

    other_payload = api.patch("/messages/local", {"payload": {"v": 2}})
    assert other_payload.json()["timezone"] == "America/New_York"

    absolute = api.patch("/messages/local", {"scheduleTo": "2027-11-07T06:30:00Z"})
    assert (absolute.json()["scheduleTo"], absolute.json()["timezone"]) == ("2027-11-07T06:30:00+00:00", None)


@pytest.mark.django_db
def test_patch_with_a_zone_but_no_time_is_a_400(api):
    api.post("/messages", {**BODY, "scheduleTo": "2099-01-01T00:00:00Z"})

    response = api.patch("/messages/local", {"timezone": "Europe/Berlin"})

    assert response.status_code == 400
    assert "scheduleTo" in response.json()["errors"]
    assert Message.objects.get(message_id="local").time_zone == ""
