"""The OpenAPI document (/openapi.json, /docs): bearer auth, examples and each operation's
answers. The answers' shapes are the serializers that render them (messages.api.responses)."""

from __future__ import annotations

from typing import Any, cast

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers

from messages.api.exceptions import RequestTooLarge
from messages.api.responses import (
    BatchResultsSerializer,
    BulkCancelSerializer,
    DeletedSerializer,
    ErrorSerializer,
    HealthSerializer,
    LivenessSerializer,
    MessageDetailSerializer,
    MessageListSerializer,
    ReadinessSerializer,
    ScheduledSerializer,
    ValidationErrorSerializer,
)
from messages.api.serializers import (
    MESSAGE_ID_PATTERN,
    CancelMessagesSerializer,
    EditMessageSerializer,
    ListMessagesSerializer,
    RetryMessageSerializer,
    ScheduleMessageSerializer,
    ScheduleMessagesSerializer,
)

# --- Authentication and custom fields ------------------------------------------------------


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "messages.api.authentication.BearerTokenAuthentication"
    name = "BearerAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The service's API_TOKEN or an API key made in the admin, sent as `Authorization: Bearer <token>`.",
        }


class ScheduleToFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "messages.api.serializers.ScheduleToField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, str]:
        return {
            "type": "string",
            "format": "date-time",
            "description": "ISO 8601 with `Z` or an offset, e.g. 2026-04-15T02:41:45.000Z; or a local time "
            "without an offset, e.g. 2027-03-14T02:30:00, given with `timezone`. A past time is delivered as "
            "soon as possible.",
        }


class InstantFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "messages.api.serializers.InstantField"

    def map_serializer_field(self, auto_schema: AutoSchema, direction: str) -> dict[str, str]:
        return {"type": "string", "format": "date-time", "description": "ISO 8601 with `Z` or an offset."}


def contract_paths(endpoints: list[tuple[Any, ...]], **kwargs: Any) -> list[tuple[Any, ...]]:
    """Preprocessing hook: paths as the contract writes them, `/messages/{id}`, no trailing slash.

    The URL patterns end in `/?` (the slashed form is accepted too), which would otherwise
    document every path with a trailing slash.
    """
    documented = []
    for path, path_regex, method, callback in endpoints:
        named = next((name for name in ("cancel", "batch") if f"(?P<message_id>{name})" in path_regex), None)
        if named:
            # POST /messages/cancel and /messages/batch; their other methods are /messages/{id}'s, documented there.
            if method == "POST":
                documented.append((f"/messages/{named}", path_regex, method, callback))
            continue
        path = path.rstrip("/").replace("{message_id}", "{id}")
        documented.append((path, path_regex.replace("(?P<message_id>", "(?P<id>"), method, callback))
    return documented


# --- Examples ----------------------------------------------------------------------------

CONTRACT_MESSAGE = {
    "id": "unique-message-id",
    "scheduleTo": "2026-04-15T02:41:45.000Z",
    "payload": {"data": "your webhook payload"},
    "webhookUrl": "https://your-webhook-endpoint.com",
}
LISTED_MESSAGE = {
    "messageId": "unique-message-id",
    "nextRun": "2026-04-15T02:41:45+00:00",
    "trigger": "date[2026-04-15 02:41:45 UTC]",
    "status": "scheduled",
}
MESSAGE_DETAIL = {
    "messageId": "unique-message-id",
    "deliveryId": "msg_01KBG6Z8Q2Y4N7V3M5T9XWJ0RC",
    "status": "retrying",
    "scheduleTo": "2026-04-15T02:41:45+00:00",
    "timezone": None,
    "nextRun": "2026-04-15T02:41:50.120000+00:00",
    "expiresAt": "2026-04-15T03:00:00+00:00",
    "webhookUrl": "https://your-webhook-endpoint.com",
    "payload": {"data": "your webhook payload"},
    "headers": {"Authorization": "********"},
    "maxAttempts": 8,
    "timeoutSeconds": 30.0,
    "attemptCount": 1,
    "lastOutcome": "HTTP 503",
    "createdAt": "2026-04-14T09:12:03.418000+00:00",
    "finishedAt": None,
    "attempts": [
        {
            "number": 1,
            "startedAt": "2026-04-15T02:41:45.031000+00:00",
            "lateMs": 31,
            "durationMs": 212,
            "statusCode": 503,
            "error": None,
            "responseExcerpt": "Service Unavailable",
        }
    ],
    "firstAttemptLateMs": 31,
    "version": 3,
}
HEALTHY = {
    "status": "healthy",
    "redis": "connected",
    "database": "connected",
    "scheduler": "running",
    "scheduled_jobs": 3,
    "worker_clock_skew_ms": 0.4,
    "stuck_messages": 0,
    "failing": [],
}
DEGRADED = {**HEALTHY, "status": "degraded", "scheduler": "stopped", "worker_clock_skew_ms": None, "failing": ["scheduler"]}
UNHEALTHY = {
    "status": "unhealthy",
    "redis": "disconnected",
    "database": "connected",
    "scheduler": "stopped",
    "scheduled_jobs": 3,
    "worker_clock_skew_ms": None,
    "stuck_messages": 0,
    "failing": ["redis"],
}
ALIVE = {"status": "alive"}
READY = {"status": "ready", "database": "connected", "redis": "connected", "failing": []}
UNREADY = {"status": "unready", "database": "connected", "redis": "disconnected", "failing": ["redis"]}


def _example(name: str, value: Any, summary: str = "") -> OpenApiExample:
    return OpenApiExample(name, value=value, summary=summary or name)


def _error(description: str, *examples: tuple[str, str]) -> OpenApiResponse:
    return OpenApiResponse(
        ErrorSerializer,
        description=description,
        examples=[_example(name, {"detail": detail}) for name, detail in examples],
    )


def _invalid(description: str, field: str, message: str) -> OpenApiResponse:
    body = {"detail": f"Invalid {field}: {message}", "errors": {field: [message]}}
    examples = [_example(f"Invalid {field}", body)]
    return OpenApiResponse(ValidationErrorSerializer, description=description, examples=examples)


UNAUTHORIZED = _error(
    "No token, another scheme, or a wrong token.",
    ("No token", "Authentication credentials were not provided."),
    ("Wrong token", "Invalid API token."),
)
THROTTLED = _error(
    "More requests than API_RATE_LIMIT allows for this token, or more failed authentications from this "
    "address than API_FAILED_AUTH_LIMIT allows; the `Retry-After` header says when to retry.",
    ("Rate limited", "Request was throttled. Expected available in 12 seconds."),
    ("Failed authentications", "Too many failed authentications from this address; retry in 42 seconds."),
)
PUBLIC_THROTTLED = _error(
    "More requests from this address than API_PUBLIC_RATE_LIMIT allows; the `Retry-After` header says when to retry.",
    ("Rate limited", "Too many requests from this address; retry in 42 seconds."),
)
TOO_LARGE = _error(
    "The body or the payload is larger than PAYLOAD_MAX_BYTES allows.",
    ("Body too large", str(RequestTooLarge.default_detail)),
)
NOT_JSON = _error(
    "The body is not `application/json`.",
    ("Not JSON", 'Unsupported media type "text/plain" in request.'),
)
NO_SUCH_MESSAGE = _error(
    "No message holds this id (never created, deleted, or delivered and pruned).",
    ("Unknown id", "No message with id 'unique-message-id'."),
)

MESSAGE_ID = OpenApiParameter(
    "id",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    required=True,
    pattern=f"^{MESSAGE_ID_PATTERN}$",
    description="The message's id, as given in POST /messages.",
)
_list_query = ListMessagesSerializer().fields
_list_status = cast(serializers.ChoiceField, _list_query["status"])
_list_limit = cast(serializers.IntegerField, _list_query["limit"])

# --- One decorator per operation, applied in views.py --------------------------------------

IDEMPOTENCY_PARAMETERS = [
    OpenApiParameter(
        "Idempotency-Key",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        pattern="^[!-~]{1,255}$",
        description="Makes a retry safe: the same key with the same body within IDEMPOTENCY_KEY_TTL (24 h) "
        "answers what the first request answered and schedules nothing new, even once the message was "
        "delivered; the same key with another body answers 422. A twin sent while the first is processed "
        "waits for it and gets its answer.",
    ),
    OpenApiParameter(
        "Idempotent-Replayed",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[200],
        description="`true` when the answer is the one kept for this Idempotency-Key.",
    ),
]
KEY_REUSED = _error(
    "The Idempotency-Key was used for a request with another body; nothing is scheduled.",
    (
        "Key reused",
        "This Idempotency-Key was used for a request with another body; use a new key for a new request.",
    ),
)

schedule_message_docs = extend_schema(
    operation_id="scheduleMessage",
    summary="Schedule a webhook call",
    description="At `scheduleTo` the service POSTs `payload` as JSON to `webhookUrl`, retrying network "
    "errors and 5xx. The id is taken until the message is delivered, expired or deleted.",
    parameters=IDEMPOTENCY_PARAMETERS,
    request=ScheduleMessageSerializer,
    examples=[
        OpenApiExample("Contract", value=CONTRACT_MESSAGE, request_only=True),
        OpenApiExample(
            "With headers and retry options",
            value={**CONTRACT_MESSAGE, "headers": {"X-Tenant": "acme"}, "maxAttempts": 5, "timeoutSeconds": 10},
            request_only=True,
        ),
        OpenApiExample(
            "In local time",
            summary="In local time: a time the spring-forward gap skips, sent at 03:30 EDT (07:30 UTC)",
            value={**CONTRACT_MESSAGE, "scheduleTo": "2027-03-14T02:30:00", "timezone": "America/New_York"},
            request_only=True,
        ),
    ],
    responses={
        200: OpenApiResponse(
            ScheduledSerializer,
            description="Scheduled.",
            examples=[_example("Scheduled", {"status": "scheduled", "messageId": "unique-message-id"})],
        ),
        400: _invalid(
            "A field is missing or invalid; nothing is stored.", "scheduleTo", "Must carry a UTC offset, e.g. 'Z' or '+02:00'."
        ),
        401: UNAUTHORIZED,
        429: THROTTLED,
        409: _error(
            "A message with this id is scheduled, retrying or failed.",
            ("Id taken", "A message with id 'unique-message-id' already exists."),
        ),
        413: TOO_LARGE,
        415: NOT_JSON,
        422: KEY_REUSED,
    },
)

schedule_messages_docs = extend_schema(
    operation_id="scheduleMessages",
    summary="Schedule many webhook calls",
    description="Up to BATCH_MAX_MESSAGES (by default 1,000) messages, each as POST /messages takes it, in one "
    "request. Each "
    "is accepted or refused on its own, and `results` answers for each in the same order: scheduled, or the "
    "status and error POST /messages would have given it alone (400 invalid, 409 id taken, also by an earlier "
    "message of the batch, 413 payload too large). A refused message never stops the others; the accepted ones "
    "are stored together, all or none. The body may be up to BATCH_MAX_BYTES (by default 8 MiB). Rate limits "
    "(API_RATE_LIMIT) count a batch as one request.",
    parameters=IDEMPOTENCY_PARAMETERS,
    request=ScheduleMessagesSerializer,
    examples=[
        OpenApiExample(
            "Two messages",
            value={
                "messages": [
                    CONTRACT_MESSAGE,
                    {**CONTRACT_MESSAGE, "id": "second-message-id", "scheduleTo": "2026-04-15T03:00:00Z"},
                ]
            },
            request_only=True,
        ),
    ],
    responses={
        200: OpenApiResponse(
            BatchResultsSerializer,
            description="Each message's answer, in order.",
            examples=[
                _example(
                    "One scheduled, one refused",
                    {
                        "results": [
                            {"status": "scheduled", "messageId": "unique-message-id"},
                            {
                                "messageId": "second-message-id",
                                "error": {
                                    "status": 400,
                                    "detail": "Invalid scheduleTo: Must carry a UTC offset, e.g. 'Z' or '+02:00'.",
                                    "errors": {"scheduleTo": ["Must carry a UTC offset, e.g. 'Z' or '+02:00'."]},
                                },
                            },
                        ]
                    },
                )
            ],
        ),
        400: _invalid(
            'The body is not {"messages": [...]} with 1 to BATCH_MAX_MESSAGES messages; nothing is stored.',
            "messages",
            "At most 1000 messages in one batch (BATCH_MAX_MESSAGES).",
        ),
        401: UNAUTHORIZED,
        429: THROTTLED,
        413: _error(
            "The body is larger than BATCH_MAX_BYTES; nothing is stored.",
            ("Too large", "The request body is larger than BATCH_MAX_BYTES (8388608 bytes); send fewer messages per batch."),
        ),
        415: NOT_JSON,
        422: KEY_REUSED,
    },
)

list_messages_docs = extend_schema(
    operation_id="listMessages",
    summary="List pending messages",
    description="Messages not yet delivered, earliest `nextRun` first; `status=failed` and `status=expired` list "
    "those in the order they finished.",
    parameters=[
        OpenApiParameter(
            "status",
            OpenApiTypes.STR,
            enum=list(_list_status.choices),
            description="Only messages in this state; default: all not yet delivered.",
        ),
        OpenApiParameter(
            "limit",
            {
                "type": "integer",
                "minimum": _list_limit.min_value,
                "maximum": _list_limit.max_value,
                "default": _list_limit.default,
            },
            description="Page size.",
        ),
        OpenApiParameter("cursor", OpenApiTypes.STR, description="The `next` value of the previous page."),
        OpenApiParameter("dueAfter", OpenApiTypes.DATETIME, description="Only messages whose next attempt is at or after this."),
        OpenApiParameter("dueBefore", OpenApiTypes.DATETIME, description="Only messages whose next attempt is before this."),
        OpenApiParameter("webhookUrlPrefix", OpenApiTypes.STR, description="Only webhook URLs that start so."),
    ],
    responses={
        200: OpenApiResponse(
            MessageListSerializer,
            description="One page of messages.",
            examples=[
                _example("Contract", {"scheduledJobs": [LISTED_MESSAGE], "count": 1}),
                _example(
                    "Paged",
                    {"scheduledJobs": [LISTED_MESSAGE], "count": 2, "next": "MjAyNi0wNC0xNVQwMjo0MTo0NSswMDowMHwx"},
                    summary="limit=1 of 2: pass `next` as `cursor`",
                ),
            ],
        ),
        400: _invalid("A query parameter is invalid.", "cursor", "Is not a cursor this API gave out."),
        401: UNAUTHORIZED,
        429: THROTTLED,
    },
)

ETAG = OpenApiParameter(
    "ETag",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[200],
    description='The message\'s `version` in quotes, e.g. `"3"`: give it as `If-Match` to PATCH.',
)

get_message_docs = extend_schema(
    operation_id="getMessage",
    summary="One message in full",
    description="A pending or failed message, or else the latest delivered one still kept as history.",
    parameters=[MESSAGE_ID, ETAG],
    responses={
        200: OpenApiResponse(
            MessageDetailSerializer,
            description="The message with its attempts so far.",
            examples=[_example("Retrying after a 503", MESSAGE_DETAIL)],
        ),
        401: UNAUTHORIZED,
        429: THROTTLED,
        404: NO_SUCH_MESSAGE,
    },
)

edit_message_docs = extend_schema(
    operation_id="editMessage",
    summary="Change a waiting message",
    description="Changes a scheduled or retrying message in place, with POST's rules for each field given: "
    "its id, delivery id and attempts stay. Moved later, it is not sent at its old time; moved into the "
    "past, it is sent as soon as possible (never inside this request). A field that cannot change, an "
    "empty body, or an `expiresAt` not after the next attempt answers 400. With `If-Match` (GET's `ETag`), "
    "only if the message is still that version.",
    parameters=[
        MESSAGE_ID,
        OpenApiParameter(
            "If-Match",
            OpenApiTypes.STR,
            OpenApiParameter.HEADER,
            description='The `ETag` of a GET or PATCH answer, e.g. `"3"`: the change is made only if the message '
            "has not changed since (else 412). `*` or no header: whatever its version.",
        ),
        ETAG,
    ],
    request=EditMessageSerializer,
    examples=[
        OpenApiExample("Move it", value={"scheduleTo": "2026-04-15T03:00:00Z"}, request_only=True),
        OpenApiExample(
            "New payload and target",
            value={"payload": {"data": "updated"}, "webhookUrl": "https://your-webhook-endpoint.com/v2"},
            request_only=True,
        ),
    ],
    responses={
        200: OpenApiResponse(
            MessageDetailSerializer,
            description="Changed; the message as GET shows it now.",
            examples=[_example("Changed", {**MESSAGE_DETAIL, "version": 4})],
        ),
        400: _invalid(
            "A field is invalid, cannot change, or none is given; nothing is changed.",
            "id",
            "Cannot be changed; the fields that can are scheduleTo, payload, webhookUrl, headers, maxAttempts, timeoutSeconds.",
        ),
        401: UNAUTHORIZED,
        429: THROTTLED,
        404: NO_SUCH_MESSAGE,
        409: _error(
            "The message is being sent right now, or has been delivered or has failed.",
            ("In flight", "Message 'unique-message-id' is being delivered right now; it can no longer be cancelled or changed."),
            (
                "Finished",
                "Message 'unique-message-id' has been delivered or has failed; it can no longer be changed "
                "(a failed message is sent again by POST /messages/{id}/retry).",
            ),
        ),
        412: _error(
            "The message changed since the version `If-Match` names; nothing is changed.",
            ("Changed since", "Message 'unique-message-id' has changed since the version If-Match names; read it again."),
        ),
        413: TOO_LARGE,
        415: NOT_JSON,
    },
)

cancel_message_docs = extend_schema(
    operation_id="cancelMessage",
    summary="Cancel a message",
    description="Deletes a scheduled, retrying or failed message; its webhook is never called afterwards.",
    parameters=[MESSAGE_ID],
    responses={
        200: OpenApiResponse(
            DeletedSerializer,
            description="Deleted.",
            examples=[_example("Deleted", {"status": "deleted", "messageId": "unique-message-id"})],
        ),
        401: UNAUTHORIZED,
        429: THROTTLED,
        404: NO_SUCH_MESSAGE,
        409: _error(
            "The message is being delivered right now.",
            ("In flight", "Message 'unique-message-id' is being delivered right now; it can no longer be cancelled or changed."),
        ),
    },
)

cancel_messages_docs = extend_schema(
    operation_id="cancelMessages",
    summary="Cancel many messages",
    description="Cancels your messages with the given ids, or every one that matches the filter (all its fields "
    "at once; `status` one of scheduled, retrying, failed, by default all three and those being sent). Works "
    "in batches, at any number. A message being sent right now cannot be cancelled: its id is listed in "
    "`inFlight`. Ids that match nothing are ignored.",
    request=CancelMessagesSerializer,
    examples=[
        OpenApiExample("By ids", value={"ids": ["invoice-42-reminder", "invoice-43-reminder"]}, request_only=True),
        OpenApiExample(
            "By filter",
            value={"filter": {"status": "scheduled", "dueBefore": "2026-12-31T00:00:00Z", "webhookUrlPrefix": "https://old-host/"}},
            request_only=True,
        ),
    ],
    responses={
        200: OpenApiResponse(
            BulkCancelSerializer,
            description="Cancelled.",
            examples=[_example("Cancelled", {"cancelled": 2, "inFlight": []})],
        ),
        400: _invalid(
            "Neither or both of ids and filter, or a field is invalid; nothing is cancelled.",
            "dueBefore",
            "Must carry a UTC offset, e.g. 'Z' or '+02:00'.",
        ),
        401: UNAUTHORIZED,
        # Its body is read with POST /messages' bound: more ids than that holds go in several requests.
        413: _error(
            "The body is larger than PAYLOAD_MAX_BYTES allows; nothing is cancelled.",
            ("Body too large", str(RequestTooLarge.default_detail)),
        ),
        429: THROTTLED,
        415: NOT_JSON,
    },
)

retry_message_docs = extend_schema(
    operation_id="retryMessage",
    summary="Send a failed message again",
    description="Schedules a failed message again, now or at `scheduleTo`, with a fresh set of attempts.",
    parameters=[MESSAGE_ID],
    request=RetryMessageSerializer,
    examples=[
        OpenApiExample("Now", value={}, request_only=True),
        OpenApiExample("Later", value={"scheduleTo": "2026-04-16T08:00:00Z"}, request_only=True),
    ],
    responses={
        200: OpenApiResponse(
            ScheduledSerializer,
            description="Scheduled again.",
            examples=[_example("Scheduled again", {"status": "scheduled", "messageId": "unique-message-id"})],
        ),
        400: _invalid("`scheduleTo` is invalid.", "scheduleTo", "Must carry a UTC offset, e.g. 'Z' or '+02:00'."),
        401: UNAUTHORIZED,
        429: THROTTLED,
        404: NO_SUCH_MESSAGE,
        409: _error(
            "The message has not failed.",
            ("Not failed", "Message 'unique-message-id' has not failed; only failed messages can be retried."),
        ),
        415: NOT_JSON,
    },
)

health_docs = extend_schema(
    operation_id="health",
    summary="Service health",
    description="Checks the database, Redis and the worker + beat pair. No authentication. The report is "
    "at most HEALTH_CACHE_SECONDS (5) old, shared by every web process.",
    auth=[],  # no security requirement at all, rather than spectacular's "optional" {}
    responses={
        200: OpenApiResponse(
            HealthSerializer,
            description="Database and Redis reachable (`degraded` when no worker and beat run).",
            examples=[
                _example("Healthy", HEALTHY),
                _example("Degraded", DEGRADED),
            ],
        ),
        503: OpenApiResponse(
            HealthSerializer,
            description="The database or Redis is unreachable.",
            examples=[_example("Unhealthy", UNHEALTHY)],
        ),
        429: PUBLIC_THROTTLED,
    },
)

liveness_docs = extend_schema(
    operation_id="liveness",
    summary="Liveness probe",
    description="Answers as long as the web process does; reads neither the database nor Redis. No authentication.",
    auth=[],
    responses={
        200: OpenApiResponse(LivenessSerializer, description="The process answers.", examples=[_example("Alive", ALIVE)]),
        429: PUBLIC_THROTTLED,
    },
)

readiness_docs = extend_schema(
    operation_id="readiness",
    summary="Readiness probe",
    description="Checks that the database (`SELECT 1`) and Redis (`PING`) answer, nothing more. No authentication.",
    auth=[],
    responses={
        200: OpenApiResponse(ReadinessSerializer, description="Ready for requests.", examples=[_example("Ready", READY)]),
        503: OpenApiResponse(
            ReadinessSerializer,
            description="The database or Redis does not answer.",
            examples=[_example("Unready", UNREADY)],
        ),
        429: PUBLIC_THROTTLED,
    },
)

metrics_docs = extend_schema(
    operation_id="metrics",
    summary="Prometheus metrics",
    description="Prometheus text format, counting every key's messages. Needs API_TOKEN (other keys get 403), "
    "unless the caller is on a network listed in METRICS_ALLOWED_NETWORKS.",
    responses={
        (200, "text/plain"): OpenApiResponse(
            OpenApiTypes.STR,
            description="Prometheus exposition text.",
            examples=[
                _example(
                    "Metrics",
                    "# HELP scheduler_messages Messages in the database by status.\n"
                    '# TYPE scheduler_messages gauge\nscheduler_messages{status="scheduled"} 3.0\n',
                )
            ],
        ),
        401: UNAUTHORIZED,
        429: THROTTLED,
    },
)
