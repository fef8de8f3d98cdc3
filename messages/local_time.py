"""scheduleTo in local time: a wall-clock time without an offset, in a named IANA zone.

The rule, as the README and /openapi.json state it: a time inside a spring-forward gap is moved
forward by the length of the gap (02:30 on the night New York skips 02:00-03:00 is 03:30 EDT); a
time a fall-back overlap makes ambiguous means its first occurrence (01:30 EDT, not EST). Both
are what PEP 495 gives a time with fold=0, so zoneinfo applies the rule itself.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from zoneinfo import ZoneInfo, available_timezones

ZONE_NAME_MAX_LENGTH = 64


class UnknownTimeZone(ValueError):
    pass


@cache
def _zone_names() -> frozenset[str]:
    # The names zoneinfo knows (the system's database, else the tzdata package). Checked against
    # this set rather than by ZoneInfo(name) alone, which would also read any file path it is given.
    return frozenset(available_timezones())


def time_zone(name: str) -> ZoneInfo:
    if name not in _zone_names():
        raise UnknownTimeZone(name)
    return ZoneInfo(name)


def resolve_local_time(local: datetime, zone_name: str) -> datetime:
    """The instant, in UTC, of the wall-clock time `local` (naive) in the zone `zone_name`."""
    if local.tzinfo is not None:
        raise ValueError("a local time carries no offset")
    return local.replace(tzinfo=time_zone(zone_name), fold=0).astimezone(UTC)
