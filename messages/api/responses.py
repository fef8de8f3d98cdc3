"""The shapes of the API's answers: each serializer here both renders an answer and documents it
in /openapi.json, so the two cannot drift apart.

Field names are the contract's (camelCase, and /health's snake_case). The old service's bytes
are kept: instants in UTC with a `+00:00` offset (DRF would write `Z`), optional keys left out
rather than null.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.fields import SkipField

from messages.api.shared_fields import SharedFieldsSerializer
from messages.confidential import HeadersUnreadable, masked_headers, masked_url
from messages.models import DeliveryAttempt, Message, MessageStatus

LISTED_STATUSES = [
    MessageStatus.SCHEDULED,
    MessageStatus.SENDING,
    MessageStatus.RETRYING,
    MessageStatus.FAILED,
    MessageStatus.EXPIRED,
]


class UtcInstantField(serializers.DateTimeField):
    # An instant as the old service wrote it: ISO 8601 in UTC, `+00:00`, microseconds if any.
    def to_representation(self, value: datetime) -> str:  # never None: DRF renders None itself
        return value.astimezone(UTC).isoformat()


class OmittedWhenEmptyMixin(serializers.Field):
    # Left out of the answer when empty (None or False), as the old service left such keys out.
    def get_attribute(self, instance: Any) -> Any:
        value = super().get_attribute(instance)
        if value is None or value is False:
            raise SkipField
        return value


class OptionalCharField(OmittedWhenEmptyMixin, serializers.CharField):
    pass


class TrueOrOmittedField(OmittedWhenEmptyMixin, serializers.BooleanField):
    pass


class NullWhenBlankCharField(serializers.CharField):
    def to_representation(self, value: Any) -> str | None:  # type: ignore[override]  # null, not ""
        return str(value) or None


# --- Errors ------------------------------------------------------------------------------


class ErrorSerializer(SharedFieldsSerializer):
    detail = serializers.CharField(help_text="What went wrong, as a sentence.")


class ValidationErrorSerializer(ErrorSerializer):
    # DRF's metaclass moves declared fields off the class: this does not shadow Serializer.errors.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Field name to the list of what is wrong with it; absent when the body is not JSON.",
    )


def error_body(detail: str) -> dict[str, Any]:
    return ErrorSerializer({"detail": detail}).data


def validation_error_body(detail: str, errors: dict[str, list[str]]) -> dict[str, Any]:
    return ValidationErrorSerializer({"detail": detail, "errors": errors}).data


# --- Messages ----------------------------------------------------------------------------


class ScheduledSerializer(SharedFieldsSerializer):
    # Renders a message just scheduled (POST /messages, POST /messages/{id}/retry).
    status = serializers.ChoiceField(choices=[MessageStatus.SCHEDULED], help_text="Always `scheduled`.")
    messageId = serializers.CharField(source="message_id")


class DeletedSerializer(SharedFieldsSerializer):
    # Renders {"status": "deleted", "messageId": id} from the id cancelled.
    status = serializers.SerializerMethodField()
    messageId = serializers.CharField(source="*")

    @extend_schema_field({"type": "string", "enum": ["deleted"], "description": "Always `deleted`."})
    def get_status(self, message_id: str) -> str:
        return "deleted"


class ListedMessageSerializer(SharedFieldsSerializer):
    # One item of GET /messages, as the old service listed its jobs. Renders a row of
    # listing.LISTED_FIELDS.
    messageId = serializers.CharField(source="message_id")
    nextRun = UtcInstantField(source="due_at", allow_null=True, help_text="UTC with a `+00:00` offset; null for a failed message.")
    trigger = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=LISTED_STATUSES)

    @extend_schema_field({"type": "string", "nullable": True, "description": "`date[YYYY-MM-DD HH:MM:SS UTC]`."})
    def get_trigger(self, row: Any) -> str | None:
        return row.due_at.astimezone(UTC).strftime("date[%Y-%m-%d %H:%M:%S UTC]") if row.due_at else None

    def to_representation(self, row: Any) -> dict[str, Any]:
        # The same answer as the fields above give (tests/test_responses.py compares them row
        # by row), written out: a page holds up to 10,000 rows, and rendering them field by
        # field costs several times as much (docs/benchmarks.md).
        due_at = row.due_at.astimezone(UTC) if row.due_at else None
        return {
            "messageId": row.message_id,
            "nextRun": due_at.isoformat() if due_at else None,
            "trigger": due_at.strftime("date[%Y-%m-%d %H:%M:%S UTC]") if due_at else None,
            "status": row.status,
        }


class MessageListSerializer(SharedFieldsSerializer):
    # Renders a listing.MessagePage.
    scheduledJobs = ListedMessageSerializer(source="messages", many=True)
    count = serializers.IntegerField(help_text="All messages that match, not only this page's.")
    countIsEstimate = TrueOrOmittedField(
        source="count_is_estimate",
        required=False,
        help_text="Present (true) only when `count` is PostgreSQL's planner estimate: past 100,000 messages.",
    )
    next = OptionalCharField(
        source="next_cursor",
        required=False,
        help_text="Cursor for the next page (pass as `cursor`); absent on the last page.",
    )


class BatchItemErrorSerializer(ValidationErrorSerializer):
    status = serializers.IntegerField(help_text="What POST /messages would have answered for this message alone: 400, 409 or 413.")


class OptionalBatchItemErrorSerializer(OmittedWhenEmptyMixin, BatchItemErrorSerializer):
    pass


class BatchItemSerializer(SharedFieldsSerializer):
    # One item of POST /messages/batch's results: renders an api.batches.BatchItem.
    status = OptionalCharField(required=False, help_text="`scheduled`; absent when the message was refused.")
    messageId = serializers.CharField(
        source="message_id", allow_null=True, help_text="The message's id; null when it gave none a message could have."
    )
    error = OptionalBatchItemErrorSerializer(
        required=False, help_text="Why it was refused, as POST /messages would have answered; absent when scheduled."
    )

    def to_representation(self, item: Any) -> dict[str, Any]:
        # The same answer as the fields above give (tests/test_batch.py compares them), written
        # out: a batch holds up to 1,000 items.
        if item.error is None:
            return {"status": "scheduled", "messageId": item.message_id}
        return {"messageId": item.message_id, "error": item.error}


class BatchResultsSerializer(SharedFieldsSerializer):
    results = BatchItemSerializer(many=True, help_text="One per message sent, in the same order.")


class BulkCancelSerializer(SharedFieldsSerializer):
    # Renders a scheduling.BulkCancel.
    cancelled = serializers.IntegerField(help_text="How many messages were cancelled: none of them is called after this.")
    inFlight = serializers.ListField(
        source="in_flight",
        child=serializers.CharField(),
        help_text="The ids of matching messages being sent right now, which could not be cancelled.",
    )


class AttemptSerializer(SharedFieldsSerializer):
    number = serializers.IntegerField()
    startedAt = UtcInstantField(source="started_at")
    lateMs = serializers.SerializerMethodField()
    durationMs = serializers.IntegerField(source="duration_ms")
    statusCode = serializers.IntegerField(source="status_code", allow_null=True, help_text="Null when no response came.")
    error = NullWhenBlankCharField(allow_null=True, help_text="e.g. timeout, connection refused.")
    responseExcerpt = serializers.CharField(
        source="response_excerpt",
        help_text="The start of the response body; empty for a receiver on a private network "
        "unless WEBHOOK_KEEP_PRIVATE_RESPONSE_EXCERPTS is on.",
    )

    @extend_schema_field(
        {
            "type": "integer",
            "nullable": True,
            "description": "How late the attempt started against the moment it was due, in milliseconds; null for "
            "attempts recorded before this was kept.",
        }
    )
    def get_lateMs(self, attempt: DeliveryAttempt) -> int | None:
        return attempt.late_ms


class MessageDetailSerializer(SharedFieldsSerializer):
    # GET /messages/{id}: a Message with its attempts.
    messageId = serializers.CharField(source="message_id")
    deliveryId = serializers.CharField(
        source="delivery_id",
        allow_null=True,
        help_text="This message's own id, sent as `webhook-id` and `Idempotency-Key` on every attempt and "
        "resend of it, never for another message (`messageId` is free again once delivered). Null for a "
        "message stored before delivery ids existed: its receivers keep getting `messageId`.",
    )
    status = serializers.ChoiceField(choices=MessageStatus.choices)
    scheduleTo = UtcInstantField(source="schedule_to")
    timezone = NullWhenBlankCharField(
        source="time_zone",
        allow_null=True,
        help_text="The IANA zone `scheduleTo` was given in as a local time; null when it was given with an offset. "
        "`scheduleTo` here is the instant it resolved to, in UTC.",
    )
    nextRun = UtcInstantField(source="due_at", allow_null=True)
    expiresAt = UtcInstantField(
        source="expires_at",
        allow_null=True,
        help_text="No attempt starts at or after it; the message then ends `expired`. Null: it never expires.",
    )
    webhookUrl = serializers.SerializerMethodField()
    payload = serializers.JSONField(help_text="The JSON object or array POSTed to `webhookUrl` on every attempt.")
    headers = serializers.SerializerMethodField()
    maxAttempts = serializers.SerializerMethodField()
    timeoutSeconds = serializers.SerializerMethodField()
    attemptCount = serializers.IntegerField(source="attempt_count")
    lastOutcome = serializers.SerializerMethodField()
    createdAt = UtcInstantField(source="created_at")
    finishedAt = UtcInstantField(source="finished_at", allow_null=True)
    attempts = AttemptSerializer(many=True)
    firstAttemptLateMs = serializers.SerializerMethodField()
    version = serializers.IntegerField(
        help_text="Goes up with every change a client can see (an edit, a claim, an attempt, a resend); the "
        "answer's `ETag` is it in quotes, which PATCH's `If-Match` compares."
    )

    # Credentials given for the receiver are never read back: userinfo and header values masked.
    @extend_schema_field({"type": "string", "description": "With any `user:password@` masked as `********@`."})
    def get_webhookUrl(self, message: Message) -> str:
        return masked_url(message.webhook_url)

    @extend_schema_field(
        {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "The header names given, each value masked as `********`: values are stored "
            "encrypted and never read back.",
        }
    )
    def get_headers(self, message: Message) -> dict[str, str]:
        try:
            return masked_headers(message.headers)
        except HeadersUnreadable:
            return {}

    @extend_schema_field(
        {
            "type": "integer",
            "nullable": True,
            "description": "How late the first attempt started against the moment it was due (`scheduleTo`, or the "
            "time it was moved to), in milliseconds; null before it.",
        }
    )
    def get_firstAttemptLateMs(self, message: Message) -> int | None:
        first = next((attempt for attempt in message.attempts.all() if attempt.number == 1), None)
        return None if first is None else first.late_ms

    @extend_schema_field(OpenApiTypes.INT)
    def get_maxAttempts(self, message: Message) -> int:
        return message.max_attempts or settings.WEBHOOK_MAX_ATTEMPTS

    @extend_schema_field(OpenApiTypes.NUMBER)
    def get_timeoutSeconds(self, message: Message) -> float:
        return message.timeout_seconds or settings.WEBHOOK_TIMEOUT_SECONDS

    @extend_schema_field({"type": "string", "nullable": True, "description": "e.g. `HTTP 503` or `timeout`."})
    def get_lastOutcome(self, message: Message) -> str | None:
        if message.last_status_code is not None:
            return f"HTTP {message.last_status_code}"
        return message.last_error or None


# --- Health and probes -------------------------------------------------------------------

CONNECTION_STATES = ["connected", "disconnected"]


class HealthSerializer(SharedFieldsSerializer):
    # Renders a health.HealthReport.
    status = serializers.ChoiceField(
        choices=["healthy", "degraded", "unhealthy"],
        help_text="healthy, degraded (no live worker and beat, or stuck messages) or unhealthy.",
    )
    redis = serializers.ChoiceField(choices=CONNECTION_STATES)
    database = serializers.ChoiceField(choices=CONNECTION_STATES)
    scheduler = serializers.ChoiceField(choices=["running", "stopped"])
    scheduled_jobs = serializers.IntegerField(
        allow_null=True,
        help_text="Messages not yet delivered: exact up to 100,000, past that PostgreSQL's planner estimate.",
    )
    worker_clock_skew_ms = serializers.FloatField(
        allow_null=True,
        help_text="The dispatching worker's clock minus the database's, in milliseconds.",
    )
    stuck_messages = serializers.IntegerField(
        allow_null=True,
        help_text="Messages left in `sending` whose claim recovery could not clear (release them in the admin).",
    )
    failing = serializers.ListField(child=serializers.CharField(), help_text="The checks that failed.")


class LivenessSerializer(SharedFieldsSerializer):
    status = serializers.ChoiceField(choices=["alive"], help_text="Always `alive`.")


class ReadinessSerializer(SharedFieldsSerializer):
    # Renders a health.ReadinessReport.
    status = serializers.ChoiceField(choices=["ready", "unready"])
    database = serializers.ChoiceField(choices=CONNECTION_STATES)
    redis = serializers.ChoiceField(choices=CONNECTION_STATES)
    failing = serializers.ListField(child=serializers.CharField(), help_text="The checks that failed.")
