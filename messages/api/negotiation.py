"""DRF's content negotiation, with a shortcut for the usual request: one that accepts anything."""

from __future__ import annotations

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class ContentNegotiation(DefaultContentNegotiation):
    def select_renderer(  # type: ignore[override]  # DRF passes a list and indexes it itself; the stubs say Iterable
        self, request: Request, renderers: list[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        first = renderers[0]
        if (
            not format_suffix
            and not request.META.get("QUERY_STRING")  # so no ?format=
            and request.META.get("HTTP_ACCEPT", "*/*") == "*/*"
            and ";" not in first.media_type
        ):
            # DRF's own answer to "*/*" (or no Accept header): the first renderer whose media
            # type matches, which is the first one unless its type has parameters, with that
            # type. Working it out (headers, query string, media types parsed) costs a POST
            # /messages more than this (docs/benchmarks.md).
            return first, first.media_type
        return super().select_renderer(request, renderers, format_suffix)
