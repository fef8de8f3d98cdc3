"""Every error the API gives is JSON with a `detail` sentence; validation adds `errors`."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ValidationError):
        errors = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        return Response(
            {"detail": _first_error_sentence(errors), "errors": errors},
            status=status.HTTP_400_BAD_REQUEST,
        )
    return exception_handler(exc, context)


def _first_error_sentence(errors: dict[str, Any]) -> str:
    field, messages = next(iter(errors.items()))
    while isinstance(messages, (list, dict)) and messages:
        messages = next(iter(messages.values())) if isinstance(messages, dict) else messages[0]
    if field == "non_field_errors":
        return f"Invalid request: {messages}"
    return f"Invalid {field}: {messages}"


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"detail": "Not found."}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"detail": "Internal server error."}, status=500)
