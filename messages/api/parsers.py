"""JSON bodies with a size cap: a request larger than a message can ever be gets 413 unread."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

from messages.api.exceptions import RequestTooLarge

# Room for everything around the payload: id, URL, headers and options.
ENVELOPE_BYTES = 64 * 1024


def message_body_limit() -> int:
    return settings.PAYLOAD_MAX_BYTES + ENVELOPE_BYTES


class BoundedJSONParser(JSONParser):
    def limit(self) -> int:
        return message_body_limit()

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = self.limit()
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise RequestTooLarge(self.too_large_detail())
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            # `[[[[…` a hundred thousand deep: Python's parser gives up before any rule could.
            raise ParseError("JSON parse error - nested too deeply.") from None

    def too_large_detail(self) -> str:
        return str(RequestTooLarge.default_detail)


class BatchJSONParser(BoundedJSONParser):
    """POST /messages/batch: up to BATCH_MAX_BYTES, and always room for one largest message."""

    def limit(self) -> int:
        return max(settings.BATCH_MAX_BYTES, message_body_limit())

    def too_large_detail(self) -> str:
        return f"The request body is larger than BATCH_MAX_BYTES ({self.limit()} bytes); send fewer messages per batch."
