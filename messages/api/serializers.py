"""The input rules of the API's requests (the answers' shapes are in messages.api.responses)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from yarl import URL

from messages.api.exceptions import RequestTooLarge
from messages.api.shared_fields import SharedFieldsSerializer
from messages.listing import LISTABLE_STATUSES, MessageFilter
from messages.local_time import ZONE_NAME_MAX_LENGTH, UnknownTimeZone, resolve_local_time, time_zone
from messages.models import TIMEOUT_SECONDS_MAX, MessageStatus, encode_payload
from messages.scheduling import NewMessage
from messages.signing import SIGNATURE_HEADERS
from messages.target_policy import host_block_reason, port_block_reason
from messages.webhook_client import IDEMPOTENCY_HEADER, MESSAGE_ID_HEADER

MESSAGE_ID_PATTERN = r"[A-Za-z0-9\-_.:@+=~]{1,200}"
WEBHOOK_URL_MAX_LENGTH = 2048
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,256}")
HEADER_VALUE = re.compile(r"[\t\x20-\x7e\x80-\xff]{0,8192}")
MAX_HEADERS = 50
PAYLOAD_MAX_DEPTH = 200
MAX_ATTEMPTS_MAX = 20
# Set by the connection or by this service on every call: a message may not override them.
RESERVED_HEADERS = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-type",
        "user-agent",
        IDEMPOTENCY_HEADER.lower(),
        MESSAGE_ID_HEADER.lower(),
        *SIGNATURE_HEADERS,
    }
)


def parse_schedule_to(value: Any) -> datetime:
    """ISO 8601 with `Z` or an offset, fractions allowed; returned in UTC."""
    if not isinstance(value, str) or not value.isascii() or not value.strip():
        raise serializers.ValidationError("Must be an ISO 8601 date and time, e.g. 2026-04-15T02:41:45.000Z.")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise serializers.ValidationError(f"{value!r} is not an ISO 8601 date and time.") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise serializers.ValidationError("Must carry a UTC offset, e.g. 'Z' or '+02:00'.")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise serializers.ValidationError("Is outside the representable range of dates.") from None


def validate_webhook_url(value: str) -> str:
    if len(value) > WEBHOOK_URL_MAX_LENGTH:
        raise serializers.ValidationError(f"Must be at most {WEBHOOK_URL_MAX_LENGTH} characters.")
    if not value.isprintable() or any(char.isspace() for char in value):
        raise serializers.ValidationError("Must not contain spaces or control characters.")
    try:
        # yarl: the parser that sends it (messages/webhook_client.py), so what passes here is what
        # the call will use. raw_host is the host as sent (IDNA-encoded, which may fail).
        url = URL(value)
        host, port = url.raw_host, url.port
    except (ValueError, UnicodeError):
        raise serializers.ValidationError("Is not a valid URL.") from None
    if url.scheme not in {"http", "https"} or not host or port is None:
        raise serializers.ValidationError("Must be an absolute http:// or https:// URL.")
    if host.startswith(".") or ".." in host:
        raise serializers.ValidationError("Is not a valid URL: its host has an empty label.")
    reason = host_block_reason(host) or port_block_reason(url)
    if reason:
        raise serializers.ValidationError(f"This target is not allowed: {reason}.")
    return value


def validate_payload(value: Any) -> str:
    """Returns the JSON text that is stored and sent: encoded once, here."""
    if not isinstance(value, (dict, list)):
        raise serializers.ValidationError("Must be a JSON object or array.")
    if _depth(value) > PAYLOAD_MAX_DEPTH:
        # Deeper would reach Python's recursion limit in the checks and encoding below.
        raise serializers.ValidationError(f"Must not nest arrays and objects more than {PAYLOAD_MAX_DEPTH} deep.")
    if _contains_nul(value):
        # PostgreSQL cannot store it in text; refused everywhere, so both databases agree.
        raise serializers.ValidationError("Must not contain the NUL character (\\u0000).")
    try:
        text = encode_payload(value)
    except ValueError:
        # NaN or an infinity: DRF's JSONField refuses it in these words before this runs.
        raise serializers.ValidationError("Value must be valid JSON.") from None
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        raise serializers.ValidationError("Must be valid Unicode: a lone surrogate has no UTF-8 form.") from None
    if size > settings.PAYLOAD_MAX_BYTES:
        # 413, not 400: the request is well-formed, only too large.
        raise RequestTooLarge(f"payload is larger than {settings.PAYLOAD_MAX_BYTES} bytes encoded as JSON.")
    return text


def _depth(value: Any) -> int:
    """How deeply arrays and objects nest, counted without recursion."""
    deepest, to_visit = 0, [(value, 1)]
    while to_visit:
        item, depth = to_visit.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= PAYLOAD_MAX_DEPTH:
            to_visit.extend((child, depth + 1) for child in children)
    return deepest


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(key) or _contains_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    return False


def validate_headers(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise serializers.ValidationError("Must be a JSON object of header names to string values.")
    if len(value) > MAX_HEADERS:
        raise serializers.ValidationError(f"At most {MAX_HEADERS} headers.")
    for name, header_value in value.items():
        if not HEADER_NAME.fullmatch(name):
            raise serializers.ValidationError(f"{name!r} is not a valid header name.")
        if name.lower() in RESERVED_HEADERS:
            raise serializers.ValidationError(f"{name!r} is set by the service or the connection.")
        if not isinstance(header_value, str) or not HEADER_VALUE.fullmatch(header_value):
            raise serializers.ValidationError(f"The value of {name!r} must be a string without line breaks.")
    return value


class StrictStringMixin(serializers.CharField):
    """Refuses numbers and booleans instead of turning them into strings, as the old service did."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid_type")
        return super().to_internal_value(data)


class StrictCharField(StrictStringMixin, serializers.CharField):
    default_error_messages = {"invalid_type": "Must be a string."}


class StrictRegexField(StrictStringMixin, serializers.RegexField):
    default_error_messages = {"invalid_type": "Must be a string."}


# The pattern is a necessary condition only (validate_webhook_url says more): a URL that
# breaks it is always refused, so generated "invalid" requests are never accepted.
@extend_schema_field({"type": "string", "maxLength": WEBHOOK_URL_MAX_LENGTH, "pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://\S+$"})
class WebhookUrlField(StrictCharField):
    """An absolute http(s) URL (validate_webhook_url has the rules)."""


@extend_schema_field({"oneOf": [{"type": "object"}, {"type": "array", "items": {}}]})
class PayloadField(serializers.JSONField):
    """Any JSON object or array (validate_payload refuses the rest)."""


class ScheduleToField(serializers.Field):
    def to_internal_value(self, data: Any) -> datetime:
        return parse_schedule_to(data)

    def to_representation(self, value: datetime) -> str:
        return value.isoformat()


class InstantField(ScheduleToField):
    """An instant: ISO 8601 with `Z` or an offset (never a local time), in UTC."""


def check_expiry(attrs: dict[str, Any]) -> None:
    """expiresAt, when given, is still to come and after scheduleTo (when given)."""
    expires_at, schedule_to = attrs.get("expiresAt"), attrs.get("scheduleTo")
    if expires_at is None:
        return
    if schedule_to is not None and expires_at <= schedule_to:
        raise serializers.ValidationError({"expiresAt": ["Must be later than scheduleTo: the message could never be sent."]})
    if expires_at <= datetime.now(UTC):
        raise serializers.ValidationError({"expiresAt": ["Is already past: the message could never be sent."]})


class ScheduleMessageSerializer(SharedFieldsSerializer):
    id = StrictRegexField(
        # RegexField searches: anchored, or "a/b" would pass on its "a".
        rf"\A{MESSAGE_ID_PATTERN}\Z",
        max_length=200,
        trim_whitespace=False,
        error_messages={"invalid": "Must be 1 to 200 letters, digits or -_.:@+=~ characters."},
    )
    scheduleTo = ScheduleToField()
    payload = PayloadField()
    # DRF ignores what a validator returns; its stubs want validators that return None.
    webhookUrl = WebhookUrlField(trim_whitespace=False, validators=[validate_webhook_url])  # type: ignore[list-item]
    headers = serializers.DictField(
        child=StrictCharField(allow_blank=True, trim_whitespace=False),
        required=False,
        validators=[validate_headers],  # type: ignore[list-item]  # as webhookUrl's
    )
    maxAttempts = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ATTEMPTS_MAX)
    timeoutSeconds = serializers.IntegerField(required=False, min_value=1, max_value=TIMEOUT_SECONDS_MAX)
    timezone = StrictCharField(
        required=False,
        max_length=ZONE_NAME_MAX_LENGTH,
        help_text="An IANA zone, e.g. `America/New_York`: `scheduleTo` is then a local time without an offset. "
        "A time a spring-forward gap skips is moved forward by the gap (02:30 → 03:30 EDT); a time a fall-back "
        "overlap repeats means its first occurrence.",
    )

    expiresAt = InstantField(
        required=False,
        help_text="No attempt starts at or after this instant (an offset, never a local time); the message then ends "
        "`expired`. Later than scheduleTo.",
    )

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and "timezone" in data:
            data = with_local_schedule_resolved(data)
        return super().to_internal_value(data)

    def validate_payload(self, value: Any) -> str:
        return validate_payload(value)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        check_expiry(attrs)
        return attrs


def with_local_schedule_resolved(data: dict[str, Any]) -> dict[str, Any]:
    """The body with its local `scheduleTo` replaced by the instant it means in `timezone`; the
    other rules of scheduleTo (ISO 8601, the range) stay ScheduleToField's."""
    zone, local = data["timezone"], data.get("scheduleTo")
    if not isinstance(zone, str):
        raise serializers.ValidationError({"timezone": ["Must be a string."]})
    try:
        time_zone(zone)
    except UnknownTimeZone:
        raise serializers.ValidationError(
            {"timezone": [f"{zone[:100]!r} is not an IANA time zone name, e.g. 'Europe/Berlin'."]}
        ) from None
    if local is None:
        raise serializers.ValidationError({"scheduleTo": ["This field is required with timezone."]})
    if not isinstance(local, str) or not local.isascii():
        return data
    try:
        moment = datetime.fromisoformat(local)
    except ValueError:
        return data  # ScheduleToField says what is wrong with it
    if moment.tzinfo is not None:
        raise serializers.ValidationError(
            {"scheduleTo": ["Give either an offset here or a timezone, not both: with timezone it is a local time."]}
        )
    try:
        return {**data, "scheduleTo": resolve_local_time(moment, zone).isoformat()}
    except OverflowError:
        raise serializers.ValidationError({"scheduleTo": ["Is outside the representable range of dates."]}) from None


def new_message(validated: dict[str, Any]) -> NewMessage:
    """The message a POST /messages body (validated) asks for."""
    return NewMessage(
        message_id=validated["id"],
        schedule_to=validated["scheduleTo"],
        time_zone=validated.get("timezone", ""),
        webhook_url=validated["webhookUrl"],
        payload_json=validated["payload"],
        headers=validated.get("headers"),
        max_attempts=validated.get("maxAttempts"),
        timeout_seconds=validated.get("timeoutSeconds"),
        expires_at=validated.get("expiresAt"),
    )


def validated_new_message(data: Any, *, checked_urls: dict[str, bool]) -> dict[str, Any]:
    """What ScheduleMessageSerializer makes of one message of a batch, or its refusal.
    `checked_urls`: the webhook URLs already found allowed or not, in this batch."""
    quick = _quickly_validated(data, checked_urls)
    if quick is not None:
        return quick
    serializer = ScheduleMessageSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


MESSAGE_ID = re.compile(MESSAGE_ID_PATTERN)


def _quickly_validated(data: Any, checked_urls: dict[str, bool]) -> dict[str, Any] | None:
    """ScheduleMessageSerializer's validated data for a message whose every field is plainly
    right, checked with the same rules but without DRF's machinery around each field (most of
    the cost of a batch: docs/benchmarks.md); a URL is checked once per batch. None for anything
    else (a refusal, a local time, a type DRF would coerce): the serializer then decides, and
    words any refusal. tests/test_batch.py checks that both agree wherever this one answers."""
    if type(data) is not dict or "timezone" in data or "expiresAt" in data:
        return None
    message_id, schedule_to, webhook_url, payload = (data.get(name) for name in ("id", "scheduleTo", "webhookUrl", "payload"))
    if type(message_id) is not str or not MESSAGE_ID.fullmatch(message_id):
        return None
    if type(webhook_url) is not str or type(payload) not in (dict, list):
        return None
    if webhook_url not in checked_urls:
        try:
            validate_webhook_url(webhook_url)
            checked_urls[webhook_url] = True
        except serializers.ValidationError:
            checked_urls[webhook_url] = False
    if not checked_urls[webhook_url]:
        return None
    try:
        validated: dict[str, Any] = {
            "id": message_id,
            "scheduleTo": parse_schedule_to(schedule_to),
            "payload": validate_payload(payload),
            "webhookUrl": webhook_url,
        }
        if "headers" in data:
            headers = data["headers"]
            if type(headers) is not dict or not all(type(value) is str for value in headers.values()):
                return None
            validated["headers"] = validate_headers(dict(headers))
    except (serializers.ValidationError, RequestTooLarge):
        return None
    for name, most in (("maxAttempts", MAX_ATTEMPTS_MAX), ("timeoutSeconds", TIMEOUT_SECONDS_MAX)):
        if name in data:
            value = data[name]
            if type(value) is not int or not 1 <= value <= most:
                return None
            validated[name] = value
    return validated


@extend_schema_field(ScheduleMessageSerializer(many=True))
class NewMessagesField(serializers.Field):
    """A JSON array of POST /messages bodies, each checked on its own (validated_new_message)."""

    def to_internal_value(self, data: Any) -> list[Any]:
        if not isinstance(data, list):
            raise serializers.ValidationError("Must be a JSON array of messages, each as POST /messages takes it.")
        if not data:
            raise serializers.ValidationError("Must hold at least one message.")
        if len(data) > settings.BATCH_MAX_MESSAGES:
            raise serializers.ValidationError(f"At most {settings.BATCH_MAX_MESSAGES} messages in one batch (BATCH_MAX_MESSAGES).")
        return data


class ScheduleMessagesSerializer(SharedFieldsSerializer):
    messages = NewMessagesField(
        help_text="Up to BATCH_MAX_MESSAGES (by default 1,000) messages, each as POST /messages takes it. Each is accepted or "
        "refused on its own; the accepted ones are stored together, all or none."
    )


class RetryMessageSerializer(SharedFieldsSerializer):
    scheduleTo = ScheduleToField(required=False)
    expiresAt = InstantField(
        required=False, allow_null=True, help_text="Replaces its expiry (`null` takes it away); later than this attempt."
    )


class MessageFilterSerializer(SharedFieldsSerializer):
    status = serializers.ChoiceField(choices=LISTABLE_STATUSES, required=False)
    dueAfter = ScheduleToField(required=False, help_text="Only messages whose next attempt is at or after this.")
    dueBefore = ScheduleToField(required=False, help_text="Only messages whose next attempt is before this.")
    webhookUrlPrefix = StrictCharField(
        required=False, max_length=WEBHOOK_URL_MAX_LENGTH, trim_whitespace=False, help_text="Only webhook URLs that start so."
    )


def message_filter(data: dict[str, Any]) -> MessageFilter:
    return MessageFilter(
        due_after=data.get("dueAfter"), due_before=data.get("dueBefore"), webhook_url_prefix=data.get("webhookUrlPrefix", "")
    )


class ListMessagesSerializer(MessageFilterSerializer):
    limit = serializers.IntegerField(required=False, min_value=1, max_value=10000, default=1000)
    cursor = serializers.CharField(required=False, max_length=512)


CANCEL_IDS_MAX = 10_000


class CancelFilterSerializer(MessageFilterSerializer):
    # Only what a cancel can take: history (delivered, expired) is never cancelled.
    status = serializers.ChoiceField(
        choices=[MessageStatus.SCHEDULED, MessageStatus.RETRYING, MessageStatus.FAILED], required=False
    )


class CancelMessagesSerializer(SharedFieldsSerializer):
    ids = serializers.ListField(
        child=StrictCharField(max_length=200, trim_whitespace=False),
        required=False,
        allow_empty=False,
        max_length=CANCEL_IDS_MAX,
        help_text=f"Up to {CANCEL_IDS_MAX:,} message ids.",
    )
    filter = CancelFilterSerializer(required=False, help_text="Every message of yours that matches all of it.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("ids" in attrs) == ("filter" in attrs):
            raise serializers.ValidationError("Give either ids or filter, not both.")
        return attrs


# What PATCH /messages/{id} may change: POST's fields but the id.
EDITABLE_FIELDS = ("scheduleTo", "timezone", "payload", "webhookUrl", "headers", "maxAttempts", "timeoutSeconds", "expiresAt")


class EditMessageSerializer(ScheduleMessageSerializer):
    # POST's rules for each field given; any field may be left out, but not all of them, and a
    # field that cannot change (the id, or one this version does not know) is refused rather
    # than ignored, so a client never believes it changed something that did not change.

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        del fields["id"]
        for field in fields.values():
            field.required = False
        fields["expiresAt"] = InstantField(
            required=False, allow_null=True, help_text=f"{fields['expiresAt'].help_text} `null` takes the expiry away."
        )
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = self.initial_data if isinstance(self.initial_data, dict) else {}
        for name in given:
            if name not in EDITABLE_FIELDS:
                raise serializers.ValidationError(
                    {name: [f"Cannot be changed; the fields that can are {', '.join(EDITABLE_FIELDS)}."]}
                )
        if not attrs:
            raise serializers.ValidationError(f"Give at least one of {', '.join(EDITABLE_FIELDS)}.")
        check_expiry(attrs)
        return attrs
