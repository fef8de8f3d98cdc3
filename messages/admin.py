"""Django admin for ops staff: look messages up, see their attempts, deliver now, cancel, retry,
and cancel every message the list's filter matches (after a confirmation page that counts them).

Nothing is edited in place: every change goes through messages.scheduling, like the API's.
Ops staff see every key's messages, but never the credentials a client gave for its receiver:
header values and URL userinfo are masked here as in the API.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import flatten_fieldsets
from django.contrib.admin.views.main import ERROR_FLAG, ChangeList
from django.contrib.messages import ERROR, INFO, SUCCESS, WARNING
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, F, Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString

from messages.api_keys import issue_secret, revoke_api_key
from messages.confidential import HeadersUnreadable, masked_headers, masked_url
from messages.delivery import release_stuck_claims, stuck_claims
from messages.listing import MessageFilter
from messages.message_states import CANCELLABLE_STATUSES
from messages.models import HISTORY_STATUSES, ID_HOLDING_STATUSES, ApiKey, DeliveryAttempt, Message, MessageStatus
from messages.row_counts import planner_row_estimate
from messages.scheduling import (
    BulkCancel,
    ExpiresBeforeNextAttempt,
    MessageInFlight,
    MessageNotFailed,
    MessageNotFound,
    cancel_matching,
    cancel_message,
    deliver_message_now,
    retry_message,
)

RUN_ACTIONS_PERMISSION = "run_message_actions"
# Counting further than this reads that many more rows on every page load.
COUNT_CAP = 10_000
# Each message is its own locked transaction: a larger selection belongs in a management command.
MAX_MESSAGES_PER_ACTION = 1_000
URL_SCHEMES = ("http://", "https://")
# scheme://user[:password]@ before the first slash of the authority.
URL_WITH_USERINFO = r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*@"
# The query parameters of the list's filters (list_filter); no other lookup is accepted.
FILTER_LOOKUPS = frozenset({"status__exact", "owner__id__exact", "due", "claim"})

SKIP_REASONS: dict[type[Exception], str] = {
    MessageInFlight: "in flight (its webhook is being called right now)",
    MessageNotFailed: "not failed",
    MessageNotFound: "already delivered or gone",
    ExpiresBeforeNextAttempt: "past their expiresAt",
}


# --- What the list shows -------------------------------------------------------------------


def describe_span(seconds: float) -> str:
    seconds = abs(seconds)
    if seconds < 60:
        return f"{int(seconds)} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def describe_due(due_at: datetime, now: datetime) -> str:
    seconds = (due_at - now).total_seconds()
    return f"in {describe_span(seconds)}" if seconds >= 0 else f"{describe_span(seconds)} late"


def target_host(webhook_url: str) -> str:
    """host[:port] only: the URL itself may carry credentials."""
    parts = urlsplit(webhook_url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or "?"
    host = f"[{host}]" if ":" in host else host  # IPv6, as in the URL
    return f"{host}:{port}" if port else host


def last_result(message: Message) -> str | None:
    if message.last_status_code is not None:
        return f"HTTP {message.last_status_code}"
    return message.last_error or None


def pretty_json(value: Any) -> SafeString:
    # format_html escapes: a payload is untrusted input and may well contain "<script>".
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, ensure_ascii=False))


# --- Filtering and counting on a table of a million rows -----------------------------------


class DueFilter(admin.SimpleListFilter):
    """Buckets of due_at, each a range query the by_due_at index serves."""

    title = "due"
    parameter_name = "due"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("overdue", "Overdue"),
            ("next_hour", "Within the next hour"),
            ("today", "Later today"),
            ("later", "After today"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        bounds = due_bucket_bounds(timezone.now()).get(self.value() or "")
        if bounds is None:
            return queryset
        start, end = bounds
        if start is not None:
            queryset = queryset.filter(due_at__gte=start)
        if end is not None:
            queryset = queryset.filter(due_at__lt=end)
        return queryset


class StuckFilter(admin.SimpleListFilter):
    """Messages left in `sending` whose stale claim recovery could not clear."""

    title = "claim"
    parameter_name = "claim"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("stuck", "Stuck in sending")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Message]) -> QuerySet[Message]:
        if self.value() != "stuck":
            return queryset
        return queryset.filter(pk__in=[message.pk for message in stuck_claims()])


def due_bucket_bounds(now: datetime) -> dict[str, tuple[datetime | None, datetime | None]]:
    """Disjoint [start, end) ranges; "today" ends at midnight in TIME_ZONE."""
    in_an_hour = now + timedelta(hours=1)
    local_now = timezone.localtime(now)
    midnight = datetime.combine(local_now.date() + timedelta(days=1), time.min, tzinfo=local_now.tzinfo)
    end_of_today = max(midnight, in_an_hour)
    return {
        "overdue": (None, now),
        "next_hour": (now, in_an_hour),
        "today": (in_an_hour, end_of_today),
        "later": (end_of_today, None),
    }


class BoundedCountPaginator(Paginator):
    """Counts at most COUNT_CAP rows; the whole table, unfiltered, from PostgreSQL's planner.

    An exact COUNT(*) reads every row. Past the cap the page links stop at COUNT_CAP rows
    (search or filter to narrow down); an estimate may leave the last page short or empty.
    """

    object_list: QuerySet[Any]  # the admin's changelist pages a queryset, never a list

    @cached_property
    def count(self) -> int:
        estimate = self._estimated_table_rows()
        if estimate is not None and estimate > COUNT_CAP:
            return estimate
        return min(self.object_list.order_by().values("pk")[: COUNT_CAP + 1].count(), COUNT_CAP)

    def _estimated_table_rows(self) -> int | None:
        # Filtered lists are counted exactly, up to the cap.
        if self.object_list.query.where:
            return None
        return planner_row_estimate(self.object_list)


# --- The admin -----------------------------------------------------------------------------


class MessageChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: list[str | None] | None = None) -> QuerySet[Message]:
        # A payload may be a megabyte: a page of 100 rows must not read them, it never shows them.
        return super().get_queryset(request, exclude_parameters).defer("payload_json", "headers_sealed")


def to_the_ms(moment: datetime | None) -> str | None:
    """An instant in UTC to the millisecond: lateness is read in milliseconds, not minutes."""
    if moment is None:
        return None
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}.{moment.microsecond // 1000:03d} UTC"


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("number", "due", "started", "late_ms", "duration_ms", "status_code", "error", "response_excerpt")
    readonly_fields = fields

    @admin.display(description="Due")
    def due(self, attempt: DeliveryAttempt) -> str | None:
        return to_the_ms(attempt.due_at)

    @admin.display(description="Started")
    def started(self, attempt: DeliveryAttempt) -> str | None:
        return to_the_ms(attempt.started_at)

    @admin.display(description="Late (ms)")
    def late_ms(self, attempt: DeliveryAttempt) -> int | None:
        return attempt.late_ms

    extra = 0
    can_delete = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[DeliveryAttempt]:
        # Each row's title is str(attempt), which names its message: one join, not a query each.
        return super().get_queryset(request).select_related("message")

    def has_add_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("message_id", "owner", "status", "due", "attempt_count", "last_result", "target_host")
    list_select_related = ("owner",)
    list_filter = ("status", DueFilter, StuckFilter, "owner")
    # Both fields are declared for the search box; get_search_results picks one per term.
    search_fields = ("message_id__exact", "webhook_url__startswith")
    search_help_text = "An exact message id, or the start of a webhook URL (https://host/...)."
    # Pending first in next-run order (by_due_at), then finished history (due_at is empty).
    ordering = (F("due_at").asc(nulls_last=True),)
    list_per_page = 100
    show_full_result_count = False
    paginator = BoundedCountPaginator
    inlines = (DeliveryAttemptInline,)
    actions = ("deliver_now", "cancel", "retry", "release_stuck")
    # Django's own, with a link to cancel every message the filter matches (cancel_matching_view).
    change_list_template = "admin/scheduler/message/change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "message_id",
                    "owner",
                    "status",
                    "version",
                    "shown_webhook_url",
                    "scheduled_for",
                    "time_zone",
                    "next_attempt",
                    "expires_at",
                    "first_attempt_late_ms",
                    "created",
                )
            },
        ),
        (
            "Delivery",
            {
                "fields": (
                    "attempt_count",
                    "attempt_count_at_resend",
                    "max_attempts",
                    "timeout_seconds",
                    "last_status_code",
                    "last_error",
                    "finished_at",
                )
            },
        ),
        ("Claim", {"fields": ("enqueued_at", "claimed_at", "claim_token"), "classes": ("collapse",)}),
        ("Content", {"fields": ("formatted_payload", "formatted_headers")}),
    )
    # All of it: a direct edit of status, due_at, the claim or the counts would bypass the
    # state machine (no lock, no enqueue, no revoke). Changes go through the actions.
    readonly_fields = tuple(flatten_fieldsets(fieldsets))

    @admin.display(description="Schedule to")
    def scheduled_for(self, message: Message) -> str | None:
        return to_the_ms(message.schedule_to)

    @admin.display(description="Next attempt")
    def next_attempt(self, message: Message) -> str | None:
        return to_the_ms(message.due_at)

    @admin.display(description="Created")
    def created(self, message: Message) -> str | None:
        return to_the_ms(message.created_at)

    @admin.display(description="First attempt late (ms)")
    def first_attempt_late_ms(self, message: Message) -> int | None:
        first = message.attempts.filter(number=1).first()
        return None if first is None else first.late_ms

    @admin.display(description="Due / finished", ordering="due_at")
    def due(self, message: Message) -> str | None:
        if message.due_at is not None:
            return format_html(
                '<span title="{}">{}</span>', message.due_at.isoformat(), describe_due(message.due_at, timezone.now())
            )
        if message.finished_at is not None:
            return f"finished {timezone.localtime(message.finished_at):%Y-%m-%d %H:%M:%S %Z}"
        return None

    @admin.display(description="Last result")
    def last_result(self, message: Message) -> str | None:
        return last_result(message)

    @admin.display(description="Target host")
    def target_host(self, message: Message) -> str:
        return target_host(message.webhook_url)

    @admin.display(description="Webhook URL")
    def shown_webhook_url(self, message: Message) -> str:
        return masked_url(message.webhook_url)

    @admin.display(description="Payload")
    def formatted_payload(self, message: Message) -> SafeString:
        return pretty_json(message.payload)

    @admin.display(description="Headers (values masked)")
    def formatted_headers(self, message: Message) -> SafeString | str:
        try:
            return pretty_json(masked_headers(message.headers))
        except HeadersUnreadable:
            return "Unreadable: sealed with a key no longer in HEADER_ENCRYPTION_KEYS."

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return MessageChangeList

    def lookup_allowed(self, lookup: str, value: str, request: HttpRequest | None = None) -> bool:
        # Only the sidebar's filters: Django would otherwise accept any lookup on the model's own
        # fields in the query string (?webhook_url__regex=...), an oracle for URL credentials,
        # payloads and header tokens.
        return lookup in FILTER_LOOKUPS

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Message], search_term: str
    ) -> tuple[QuerySet[Message], bool]:
        # message_id is indexed after the owner (by_owner_message_id_created and the unique
        # constraint): naming every key, a handful, lets the index find an id of any owner.
        # webhook_url has no index: a URL prefix scans the table, so only terms that look like
        # a URL pay for it. An OR of both would scan for every search.
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.startswith(URL_SCHEMES):
            # Never over URLs with credentials: a prefix search would read a password back
            # one character at a time ("https://alice:h" matches, "https://alice:x" does not).
            # The prefix compared with its case on SQLite too (MessageFilter's), as the API's bulk
            # cancel does: cancelling what this search lists must not take /TenantA/ for /tenanta/.
            by_prefix = MessageFilter(webhook_url_prefix=term).apply(queryset)
            return by_prefix.exclude(webhook_url__regex=URL_WITH_USERINFO), False
        every_owner = list(ApiKey.objects.values_list("pk", flat=True))
        return queryset.filter(owner_id__in=every_owner, message_id=term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # messages come in through the API, which validates them

    def has_change_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False  # view-only; see readonly_fields

    def has_delete_permission(self, request: HttpRequest, obj: Message | None = None) -> bool:
        return False  # a plain delete skips cancel_message's lock, in-flight check and revoke

    def has_run_message_actions_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.{RUN_ACTIONS_PERMISSION}")

    @admin.action(description="Deliver now", permissions=[RUN_ACTIONS_PERMISSION])
    def deliver_now(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        self._run_per_message(request, queryset, deliver_message_now, done="Set to deliver now")

    @admin.action(description="Cancel (delete)", permissions=[RUN_ACTIONS_PERMISSION])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        self._run_per_message(request, queryset, cancel_message, done="Cancelled")

    @admin.action(description="Retry failed message", permissions=[RUN_ACTIONS_PERMISSION])
    def retry(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        self._run_per_message(request, queryset, retry_message, done="Scheduled again")

    @admin.action(description="Release stuck message (mark failed)", permissions=[RUN_ACTIONS_PERMISSION])
    def release_stuck(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        selected = list(queryset.order_by().values_list("pk", flat=True)[:MAX_MESSAGES_PER_ACTION])
        released = release_stuck_claims(selected, now=timezone.now())
        if released:
            self.message_user(request, f"Released as failed (retry them when ready): {released}.", SUCCESS)
        if released < len(selected):
            self.message_user(request, f"Skipped {len(selected) - released}: not stuck in sending.", WARNING)

    def get_urls(self) -> list[URLPattern]:
        cancel_matching_url = path(
            "cancel-matching/",
            self.admin_site.admin_view(self.cancel_matching_view),
            name=f"{self.opts.app_label}_{self.opts.model_name}_cancel_matching",
        )
        # Before Django's own: its "<path:object_id>/" would take the path for a message's pk.
        return [cancel_matching_url, *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context and self.may_cancel_matching(request):
            # The list's own query string (its filters and search; not the page, nor the facets,
            # which remove_facet_link drops), so that the confirmation page and the cancel apply
            # exactly the filter the list shows.
            query = context["cl"].remove_facet_link
            context["cancel_matching_url"] = reverse(self._url_name("cancel_matching")) + query
        return response

    def may_cancel_matching(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request) and self.has_run_message_actions_permission(request)

    def cancel_matching_view(self, request: HttpRequest) -> HttpResponse:
        """GET: how many messages the list's filter matches, to confirm; POST: cancels them all,
        of every owner, in batches (scheduling.cancel_matching), beyond the page and
        MAX_MESSAGES_PER_ACTION."""
        if not self.may_cancel_matching(request):
            raise PermissionDenied
        changelist_url = reverse(self._url_name("changelist"))
        try:
            # The list's own filters, search and lookup_allowed, from this URL's query string.
            changelist = self.get_changelist_instance(request)
            in_words = filter_in_words(changelist)
        except IncorrectLookupParameters:
            return HttpResponseRedirect(f"{changelist_url}?{ERROR_FLAG}=1")
        query = changelist.remove_facet_link  # the filters and search, not the page nor facets
        matching: QuerySet[Message] = changelist.queryset
        if request.method == "POST":
            self._report_bulk_cancel(request, cancel_matching(matching=matching))
            return HttpResponseRedirect(changelist_url + query)
        cancellable, in_flight = count_matching(matching)
        context = {
            **self.admin_site.each_context(request),
            "title": "Cancel every matching message",
            "opts": self.opts,
            "cancellable": cancellable,
            "cancellable_in_words": number_of_messages(cancellable),
            "in_flight": in_flight,
            "in_flight_in_words": number_of_messages(in_flight),
            "filter_in_words": in_words,
            "confirm_url": request.path + query,
            "back_url": changelist_url + query,
        }
        return TemplateResponse(request, "admin/scheduler/message/cancel_matching.html", context)

    def _report_bulk_cancel(self, request: HttpRequest, result: BulkCancel) -> None:
        self.message_user(request, f"Cancelled: {number_of_messages(result.cancelled)}.", SUCCESS if result.cancelled else INFO)
        if result.in_flight:
            skipped = f"Skipped {count_of(result.in_flight)} {SKIP_REASONS[MessageInFlight]}: {listed(result.in_flight)}."
            self.message_user(request, skipped, WARNING)

    def _url_name(self, view: str) -> str:
        return f"admin:{self.opts.app_label}_{self.opts.model_name}_{view}"

    def _run_per_message(
        self, request: HttpRequest, queryset: QuerySet[Message], operation: Callable[..., object], *, done: str
    ) -> None:
        selected = list(queryset.order_by().values_list("owner_id", "message_id", "status")[: MAX_MESSAGES_PER_ACTION + 1])
        if len(selected) > MAX_MESSAGES_PER_ACTION:
            self.message_user(request, f"Select at most {MAX_MESSAGES_PER_ACTION} messages at a time.", ERROR)
            return
        succeeded, skipped = run_per_message(selected, operation)
        if succeeded:
            self.message_user(request, f"{done}: {count_of(succeeded)}.", SUCCESS)
        for reason, message_ids in skipped.items():
            self.message_user(request, f"Skipped {count_of(message_ids)} {reason}: {listed(message_ids)}.", WARNING)


def run_per_message(
    selected: list[tuple[int, str, str]], operation: Callable[..., object]
) -> tuple[list[str], dict[str, list[str]]]:
    """Calls `operation` for each (owner, id); returns the ids it succeeded for and the skipped by reason."""
    succeeded: list[str] = []
    skipped: dict[str, list[str]] = defaultdict(list)
    for owner_id, message_id, status in selected:
        if status in HISTORY_STATUSES:
            # History: the operations act on the message now holding the id, which may be
            # a newer one the user did not select.
            skipped[SKIP_REASONS[MessageNotFound]].append(message_id)
            continue
        try:
            operation(owner_id=owner_id, message_id=message_id)
        except tuple(SKIP_REASONS) as error:
            skipped[SKIP_REASONS[type(error)]].append(message_id)
        else:
            succeeded.append(message_id)
    return succeeded, dict(skipped)


def count_of(message_ids: list[str]) -> str:
    return number_of_messages(len(message_ids))


def number_of_messages(number: int) -> str:
    return f"{number:,} message" + ("" if number == 1 else "s")


def count_matching(matching: QuerySet[Message]) -> tuple[int, int]:
    """(cancellable, being sent) of the messages in `matching`. Exact, one COUNT of the rows the
    cancel will walk (never delivered history): the page is shown once before a cancel that
    reads every one of them anyway, not on every list load like BoundedCountPaginator's."""
    counts = (
        matching.order_by()
        .filter(status__in=ID_HOLDING_STATUSES)
        .aggregate(
            cancellable=Count("pk", filter=Q(status__in=CANCELLABLE_STATUSES)),
            in_flight=Count("pk", filter=Q(status=MessageStatus.SENDING)),
        )
    )
    return counts["cancellable"], counts["in_flight"]


def filter_in_words(changelist: ChangeList) -> list[str]:
    """The list's filters and search as its sidebar shows them: ["status: Failed", ...].

    Raises IncorrectLookupParameters for a value the sidebar does not offer: the words could not
    say what it does (DueFilter ignores one it does not know, and would cancel every message).
    """
    words = []
    for spec in changelist.filter_specs:
        if not spec.used_parameters:
            continue
        chosen = [str(choice["display"]) for choice in spec.choices(changelist) if choice["selected"]]
        if not chosen:
            raise IncorrectLookupParameters(f"not a choice of the {spec.title} filter")
        words.append(f"{spec.title}: {' or '.join(chosen)}")
    if changelist.query:
        words.append(f"search: “{changelist.query}”")
    return words


def listed(message_ids: list[str], limit: int = 10) -> str:
    shown = ", ".join(message_ids[:limit])
    return shown if len(message_ids) <= limit else f"{shown} and {len(message_ids) - limit} more"


# --- API keys ------------------------------------------------------------------------------


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are created here or with `manage.py create_api_key` (the secret is shown once) and
    revoked here by staff with the revoke permission; never edited. API_TOKEN's row is listed,
    as the owner of its messages, but is switched off by removing API_TOKEN, not here."""

    list_display = ["name", "prefix", "read_only", "created_at", "last_used_at", "revoked_at"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "read_only"]
    search_fields = ["name", "prefix"]
    actions = ["revoke"]

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        if obj is None:
            return ("name", "read_only")
        return ("name", "prefix", "read_only", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return () if obj is None else self.get_fields(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # revoked keys stay listed, so that their use can be traced

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.revoke_apikey")

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if change:
            return
        secret = issue_secret(obj)
        super().save_model(request, obj, form, change)
        # MESSAGE_STORAGE keeps this in the server-side session until it is shown, once.
        self.message_user(request, f"API key “{obj.name}” created. Copy it now, it is not shown again: {secret}", WARNING)

    @admin.action(description="Revoke selected API keys", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        keys = list(queryset)
        for key in keys:
            if key.is_api_token:
                self.message_user(request, "API_TOKEN is not revoked here: remove it from the environment.", ERROR)
                continue
            revoke_api_key(key)
        revoked = sum(not key.is_api_token for key in keys)
        if revoked:
            self.message_user(request, f"Revoked {revoked} key(s).", SUCCESS)
