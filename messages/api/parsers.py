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


class BoundedJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = settings.PAYLOAD_MAX_BYTES + ENVELOPE_BYTES
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise RequestTooLarge()
        try:
            return super().parse(io.BytesIO(body), media_type, parser_context)
        except RecursionError:
            # `[[[[…` a hundred thousand deep: Python's parser gives up before any rule could.
            raise ParseError("JSON parse error - nested too deeply.") from None
