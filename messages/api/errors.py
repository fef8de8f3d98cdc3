"""Every error the API gives is JSON with a `detail` sentence; validation adds `errors`."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler

from messages import idempotency, listing, scheduling
from messages.api.exceptions import Conflict, PreconditionFailed, RequestTooLarge, UnprocessableContent
from messages.api.responses import error_body, validation_error_body


def domain_error(exc: Exception) -> APIException | None:
    """The HTTP form of what the operations in messages.scheduling and messages.listing refuse:
    the one place a domain exception becomes a status."""
    message_id = exc.args[0] if exc.args else ""
    if isinstance(exc, scheduling.MessageNotFound):
        return NotFound(f"No message with id {message_id!r}.")
    if isinstance(exc, scheduling.MessageIdTaken):
        return Conflict(f"A message with id {message_id!r} already exists.")
    if isinstance(exc, scheduling.MessageInFlight):
        return Conflict(f"Message {message_id!r} is being delivered right now; it can no longer be cancelled or changed.")
    if isinstance(exc, scheduling.MessageFinished):
        return Conflict(
            f"Message {message_id!r} has been delivered or has failed; it can no longer be changed "
            "(a failed message is sent again by POST /messages/{id}/retry)."
        )
    if isinstance(exc, scheduling.VersionMismatch):
        return PreconditionFailed(f"Message {message_id!r} has changed since the version If-Match names; read it again.")
    if isinstance(exc, scheduling.MessageNotFailed):
        return Conflict(f"Message {message_id!r} has not failed; only failed messages can be retried.")
    if isinstance(exc, idempotency.IdempotencyKeyReused):
        return UnprocessableContent(
            "This Idempotency-Key was used for a request with another body; use a new key for a new request."
        )
    if isinstance(exc, scheduling.ExpiresBeforeNextAttempt):
        return ValidationError(
            {"expiresAt": ["Must be later than the message's next attempt (scheduleTo, or now): it could never be sent."]}
        )
    if isinstance(exc, listing.InvalidCursor):
        return ValidationError({"cursor": ["Is not a cursor this API gave out."]})
    return None


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = domain_error(exc) or exc
    if isinstance(exc, ValidationError):
        status_code, body = error_answer(exc)
        return Response(body, status=status_code)
    response = exception_handler(exc, context)
    if response is not None and isinstance(response.data, dict) and set(response.data) == {"detail"}:
        response.data = error_body(response.data["detail"])
    return response


def error_answer(exc: Exception) -> tuple[int, dict[str, Any]]:
    """The status and body a request refused with `exc` (validation, a domain refusal, a 413)
    gets: what POST /messages answers, and what a batch says of each message it refuses."""
    exc = domain_error(exc) or exc
    if isinstance(exc, ValidationError):
        detail = exc.detail if isinstance(exc.detail, dict) else {"non_field_errors": exc.detail}
        errors = {field: _messages(value) for field, value in detail.items()}
        return status.HTTP_400_BAD_REQUEST, validation_error_body(_first_error_sentence(errors), errors)
    if isinstance(exc, APIException):
        return exc.status_code, error_body(str(exc.detail))
    raise exc


def _messages(value: Any, prefix: str = "") -> list[str]:
    """A field's errors as a flat list of sentences; nested ones (one header of `headers`) named."""
    if isinstance(value, dict):
        return [message for key, inner in value.items() for message in _messages(inner, f"{prefix}{key}: ")]
    if isinstance(value, list):
        return [message for inner in value for message in _messages(inner, prefix)]
    return [f"{prefix}{value}"]


def _first_error_sentence(errors: dict[str, list[str]]) -> str:
    field, messages = next(iter(errors.items()))
    if field == "non_field_errors":
        return f"Invalid request: {messages[0]}"
    return f"Invalid {field}: {messages[0]}"


def bad_request(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """What Django refuses before DRF sees the request. A body past DATA_UPLOAD_MAX_MEMORY_SIZE
    is the API's 413, as one past the parser's own cap is; the rest a JSON 400, not HTML."""
    if isinstance(exception, RequestDataTooBig):
        return JsonResponse(error_body(str(RequestTooLarge.default_detail)), status=413)
    return JsonResponse(error_body("Bad request."), status=400)


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """A PermissionDenied outside DRF: JSON for the API's paths; the admin keeps its own page."""
    if request.path.startswith("/admin/"):
        # Django always passes the exception; a direct call without one gets an empty one.
        return defaults.permission_denied(request, exception or PermissionDenied())
    return JsonResponse(error_body("You do not have permission to perform this action."), status=403)


def not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse(error_body("Not found."), status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse(error_body("Internal server error."), status=500)
