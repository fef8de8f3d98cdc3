"""The HTTP API: validate, call the operation in `messages.scheduling`, shape the answer.

What the operations refuse becomes an HTTP status in one place: messages.api.errors.domain_error."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from messages import health, idempotency, listing, metrics, scheduling
from messages.api import batches, schema
from messages.api.authentication import authenticated_client
from messages.api.negotiation import ContentNegotiation
from messages.api.parsers import BatchJSONParser
from messages.api.permissions import IsOperatorOrFromAllowedNetwork
from messages.api.responses import (
    BatchResultsSerializer,
    BulkCancelSerializer,
    DeletedSerializer,
    HealthSerializer,
    LivenessSerializer,
    MessageDetailSerializer,
    MessageListSerializer,
    ReadinessSerializer,
    ScheduledSerializer,
)
from messages.api.serializers import (
    MESSAGE_ID_PATTERN,
    CancelMessagesSerializer,
    EditMessageSerializer,
    ListMessagesSerializer,
    RetryMessageSerializer,
    ScheduleMessageSerializer,
    ScheduleMessagesSerializer,
    message_filter,
    new_message,
)
from messages.models import Message


def _expected_version(request: Request, message_id: str) -> int | None:
    """If-Match as GET's ETag gives it ("3"; W/"3" and 3 too): None without the header or with `*`
    (any version). A value that names no version matches none (RFC 9110: 412)."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":
        return None
    text = header.strip().removeprefix("W/").strip('"')
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise scheduling.VersionMismatch(message_id)
    return int(text)


REPLAYED_HEADER = "Idempotent-Replayed"
IDEMPOTENCY_KEY = re.compile(rf"[\x21-\x7e]{{1,{idempotency.KEY_MAX_LENGTH}}}")


def idempotency_key(request: Request) -> str | None:
    """The Idempotency-Key header: 1 to 255 visible ASCII characters, or a 400."""
    key = request.headers.get("Idempotency-Key")
    if key is not None and not IDEMPOTENCY_KEY.fullmatch(key):
        raise ValidationError(
            {"Idempotency-Key": [f"Must be 1 to {idempotency.KEY_MAX_LENGTH} visible ASCII characters, without spaces."]}
        )
    return key


def _answered_once(request: Request, *, owner_id: int, path: str, answer: Callable[[], tuple[int, Any]]) -> Response:
    """`answer()`'s status and body; with an Idempotency-Key, once per key and body."""
    key = idempotency_key(request)
    if key is None:
        status, body = answer()
        return Response(body, status=status)
    kept = idempotency.answer_once(
        owner_id=owner_id,
        key=key,
        request_fingerprint=idempotency.fingerprint(method="POST", path=path, data=request.data),
        now=timezone.now(),
        ttl_seconds=settings.IDEMPOTENCY_KEY_TTL,
        answer=answer,
    )
    return Response(kept.body, status=kept.status, headers={REPLAYED_HEADER: "true"} if kept.replayed else None)


def _detail(message: Message) -> Response:
    return Response(MessageDetailSerializer(message).data, headers={"ETag": f'"{message.version}"'})


def _valid_path_id(message_id: str) -> str:
    # An id that can never have been accepted is simply not there.
    if not re.fullmatch(MESSAGE_ID_PATTERN, message_id):
        raise scheduling.MessageNotFound(message_id)
    return message_id


# No docstring: drf-spectacular would make it the description of every operation below.
class ApiView(APIView):
    content_negotiation_class = ContentNegotiation


class MessageCollectionView(ApiView):
    @schema.list_messages_docs
    def get(self, request: Request) -> Response:
        query = ListMessagesSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        page = listing.list_messages(
            owner_id=authenticated_client(request).key_id,
            status=query.validated_data.get("status"),
            limit=query.validated_data["limit"],
            cursor=query.validated_data.get("cursor"),
            narrowed_by=message_filter(query.validated_data),
        )
        return Response(MessageListSerializer(page).data)

    @schema.schedule_message_docs
    def post(self, request: Request) -> Response:
        serializer = ScheduleMessageSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        owner_id = authenticated_client(request).key_id

        def schedule() -> tuple[int, dict]:
            message = scheduling.schedule_message(owner_id=owner_id, new=new_message(data))
            return 200, ScheduledSerializer(message).data

        return _answered_once(request, owner_id=owner_id, path="/messages", answer=schedule)


class MessageDetailView(ApiView):
    @schema.get_message_docs
    def get(self, request: Request, message_id: str) -> Response:
        message = scheduling.find_message(owner_id=authenticated_client(request).key_id, message_id=_valid_path_id(message_id))
        return _detail(message)

    @schema.edit_message_docs
    def patch(self, request: Request, message_id: str) -> Response:
        owner_id = authenticated_client(request).key_id
        message_id = _valid_path_id(message_id)
        serializer = EditMessageSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        scheduling.edit_message(
            owner_id=owner_id,
            message_id=message_id,
            expected_version=_expected_version(request, message_id),
            schedule_to=data.get("scheduleTo"),
            time_zone=data.get("timezone", ""),
            webhook_url=data.get("webhookUrl"),
            payload_json=data.get("payload"),
            headers=data.get("headers"),
            max_attempts=data.get("maxAttempts"),
            timeout_seconds=data.get("timeoutSeconds"),
            expires_at=data["expiresAt"] if "expiresAt" in data else scheduling.UNCHANGED,
        )
        # Read again, as GET shows it: with its attempts, and a claim that may have come since.
        return _detail(scheduling.find_message(owner_id=owner_id, message_id=message_id))

    @schema.cancel_message_docs
    def delete(self, request: Request, message_id: str) -> Response:
        scheduling.cancel_message(owner_id=authenticated_client(request).key_id, message_id=_valid_path_id(message_id))
        return Response(DeletedSerializer(message_id).data)


class MessageCancelView(MessageDetailView):
    # POST /messages/cancel cancels many; GET, PATCH and DELETE of /messages/cancel stay those of
    # a message whose id is "cancel", as before this endpoint existed.

    @schema.cancel_messages_docs
    def post(self, request: Request, message_id: str) -> Response:
        serializer = CancelMessagesSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        narrowing = data.get("filter", {})
        result = scheduling.cancel_messages(
            owner_id=authenticated_client(request).key_id,
            message_ids=data.get("ids"),
            status=narrowing.get("status"),
            narrowed_by=message_filter(narrowing),
        )
        return Response(BulkCancelSerializer(result).data)


class MessageBatchView(MessageDetailView):
    # POST /messages/batch schedules many; GET, PATCH and DELETE of /messages/batch stay those of
    # a message whose id is "batch", as before this endpoint existed.

    def get_parsers(self) -> list[BaseParser]:
        if self.request is not None and self.request.method == "POST":
            return [BatchJSONParser()]
        return super().get_parsers()

    @schema.schedule_messages_docs
    def post(self, request: Request, message_id: str) -> Response:
        serializer = ScheduleMessagesSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        owner_id = authenticated_client(request).key_id

        def schedule() -> tuple[int, dict]:
            items = batches.schedule_batch(owner_id=owner_id, items=serializer.validated_data["messages"])
            return 200, BatchResultsSerializer({"results": items}).data

        return _answered_once(request, owner_id=owner_id, path="/messages/batch", answer=schedule)


class MessageRetryView(ApiView):
    @schema.retry_message_docs
    def post(self, request: Request, message_id: str) -> Response:
        serializer = RetryMessageSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        message = scheduling.retry_message(
            owner_id=authenticated_client(request).key_id,
            message_id=_valid_path_id(message_id),
            schedule_to=serializer.validated_data.get("scheduleTo"),
            expires_at=serializer.validated_data.get("expiresAt", scheduling.UNCHANGED),
        )
        return Response(ScheduledSerializer(message).data)


class MetricsView(ApiView):
    permission_classes = [IsOperatorOrFromAllowedNetwork]

    @schema.metrics_docs
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(generate_latest(metrics.scheduler_registry()), content_type=CONTENT_TYPE_LATEST)


class HealthView(ApiView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @schema.health_docs
    def get(self, request: Request) -> Response:
        report = health.current_health()
        return Response(HealthSerializer(report).data, status=200 if report.is_healthy else 503)


# Reads nothing, no database, no Redis (no throttle either): that the process answers is all it says.
class LivenessView(ApiView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @schema.liveness_docs
    def get(self, request: Request) -> Response:
        return Response(LivenessSerializer({"status": "alive"}).data)


class ReadinessView(ApiView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @schema.readiness_docs
    def get(self, request: Request) -> Response:
        report = health.check_readiness()
        return Response(ReadinessSerializer(report).data, status=200 if report.is_ready else 503)
