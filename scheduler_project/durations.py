"""Parses durations written the way operators write them: "5s", "30m", "2h", "1.5", "1d"."""

from django.core.exceptions import ImproperlyConfigured

UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, *, setting: str) -> float:
    value = text.strip().lower()
    for unit in sorted(UNIT_SECONDS, key=len, reverse=True):
        if value.endswith(unit):
            number, multiplier = value[: -len(unit)], UNIT_SECONDS[unit]
            break
    else:
        number, multiplier = value, 1
    try:
        seconds = float(number) * multiplier
    except ValueError:
        raise ImproperlyConfigured(f"{setting}: {text!r} is not a duration like 5s, 30m or 2h.") from None
    if not 0 <= seconds < float("inf"):
        raise ImproperlyConfigured(f"{setting}: {text!r} must be zero or more.")
    return seconds


def parse_duration_list(text: str, *, setting: str) -> tuple[float, ...]:
    return tuple(parse_duration(part, setting=setting) for part in text.split(",") if part.strip())
