"""The Django admin as ops staff use it: find messages, read them, deliver now, cancel, retry,
cancel every message a filter matches.

In-process test client, DEBUG off. The actions' enqueues (transaction.on_commit) never fire
inside the test transaction: these tests check the database, not delivery.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from messages import admin as message_admin
from messages import message_states, scheduling
from messages.api_keys import create_api_key
from messages.models import API_TOKEN_KEY_ID, DeliveryAttempt, Message, MessageStatus
from tests.factories import make_message

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple-42"  # noqa: S105 - test users only
CHANGELIST = reverse("admin:scheduler_message_changelist")
CANCEL_MATCHING = f"{CHANGELIST}cancel-matching/"


def change_page(message: Message) -> str:
    return reverse("admin:scheduler_message_change", args=[message.pk])


def make_staff(username: str, *, groups: tuple[str, ...] = (), superuser: bool = False) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", PASSWORD, is_staff=True)
    user.is_superuser = superuser
    user.save()
    user.groups.add(*Group.objects.filter(name__in=groups))
    return user


@pytest.fixture
def superuser_client(client: Client) -> Client:
    client.force_login(make_staff("root", superuser=True))
    return client


@pytest.fixture
def ops_client(client: Client) -> Client:
    client.force_login(make_staff("operator", groups=("ops",)))
    return client


def run_action(client: Client, action: str, *messages: Message):
    return client.post(
        CHANGELIST,
        {"action": action, "_selected_action": [message.pk for message in messages], "index": 0},
        follow=True,
    )


def flashed(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def failed_message(message_id: str) -> Message:
    return make_message(
        message_id=message_id,
        status=MessageStatus.FAILED,
        due_at=None,
        finished_at=timezone.now() - timedelta(hours=1),
        attempt_count=3,
        last_status_code=503,
    )


# --- Signing in and the list ---------------------------------------------------------------


def test_staff_can_sign_in_and_reach_the_message_list(client):
    make_staff("root", superuser=True)

    response = client.post(f"{reverse('admin:login')}?next={CHANGELIST}", {"username": "root", "password": PASSWORD})

    assert response.status_code == 302
    assert response["Location"] == CHANGELIST
    assert client.get(CHANGELIST).status_code == 200


def test_the_list_shows_due_time_relative_to_now_and_the_target_host(superuser_client):
    now = timezone.now()
    make_message(
        message_id="later", due_at=now + timedelta(hours=3, minutes=1), webhook_url="https://hooks.example.com:8443/in?x=1"
    )
    make_message(
        message_id="overdue",
        due_at=now - timedelta(minutes=12, seconds=5),
        webhook_url="https://user:s3cret@other.example.org/hook",
    )
    failed_message("gave-up")

    response = superuser_client.get(CHANGELIST)

    page = response.content.decode()
    assert response.status_code == 200
    assert "in 3 h" in page
    assert "12 min late" in page
    assert "finished " in page
    assert "hooks.example.com:8443" in page
    assert "other.example.org" in page
    assert "HTTP 503" in page
    assert "s3cret" not in page


@pytest.mark.parametrize("rows", [3, 30])
def test_the_list_costs_the_same_number_of_queries_for_3_or_30_rows(superuser_client, django_assert_max_num_queries, rows):
    for number in range(rows):
        make_message(message_id=f"msg-{number}", last_error="ConnectTimeout")

    # Session, user, rows, count (PostgreSQL: its estimate too), the owner filter's keys.
    with django_assert_max_num_queries(6):
        response = superuser_client.get(CHANGELIST)

    assert response.status_code == 200
    assert response.content.decode().count("ConnectTimeout") == rows


def test_the_list_does_not_read_payloads(superuser_client):
    make_message(message_id="big", payload={"blob": "x" * 100_000})

    with CaptureQueriesContext(connection) as queries:
        superuser_client.get(CHANGELIST)

    assert not any('"payload"' in query["sql"] for query in queries.captured_queries)


def test_the_list_never_counts_past_the_cap(monkeypatch):
    monkeypatch.setattr(message_admin, "COUNT_CAP", 2)
    for number in range(3):
        make_message(message_id=f"msg-{number}")

    with CaptureQueriesContext(connection) as queries:
        count = message_admin.BoundedCountPaginator(Message.objects.order_by("pk"), 100).count

    assert count == 2
    # (On PostgreSQL a look at the table's statistics comes first.)
    assert any("LIMIT 3" in query["sql"] for query in queries)


def test_search_by_message_id_finds_exactly_that_message(superuser_client):
    make_message(message_id="order-7")
    make_message(message_id="order-77")

    response = superuser_client.get(CHANGELIST, {"q": "order-7"})

    assert [message.message_id for message in response.context["cl"].result_list] == ["order-7"]


def test_search_by_url_prefix_finds_the_messages_to_that_target(superuser_client):
    make_message(message_id="a", webhook_url="https://a.example.com/hook")
    make_message(message_id="b", webhook_url="https://b.example.com/hook")

    response = superuser_client.get(CHANGELIST, {"q": "https://b.example.com/"})

    assert [message.message_id for message in response.context["cl"].result_list] == ["b"]


def test_the_list_filters_by_status(superuser_client):
    make_message(message_id="waiting")
    failed_message("gave-up")

    response = superuser_client.get(CHANGELIST, {"status__exact": "failed"})

    assert [message.message_id for message in response.context["cl"].result_list] == ["gave-up"]


@pytest.mark.parametrize(
    ("bucket", "expected"),
    [("overdue", "late"), ("next_hour", "soon"), ("later", "next-week")],
)
def test_the_list_filters_by_due_bucket(superuser_client, bucket, expected):
    now = timezone.now()
    make_message(message_id="late", due_at=now - timedelta(minutes=5))
    make_message(message_id="soon", due_at=now + timedelta(minutes=20))
    make_message(message_id="next-week", due_at=now + timedelta(days=7))
    failed_message("gave-up")

    response = superuser_client.get(CHANGELIST, {"due": bucket})

    assert [message.message_id for message in response.context["cl"].result_list] == [expected]


def test_due_buckets_are_disjoint_and_cover_every_future_moment():
    now = timezone.now()

    bounds = message_admin.due_bucket_bounds(now)

    assert bounds["overdue"][1] == bounds["next_hour"][0] == now
    assert bounds["next_hour"][1] == bounds["today"][0]
    assert bounds["today"][1] == bounds["later"][0]
    assert bounds["later"][1] is None


# --- The change page -----------------------------------------------------------------------


def test_the_change_page_shows_the_payload_as_escaped_json_and_the_attempts(superuser_client):
    message = make_message(message_id="detailed", payload={"greeting": "<b>hi</b>"}, headers={"X-Trace": "t-1"})
    DeliveryAttempt.objects.create(
        message=message,
        number=1,
        started_at=timezone.now(),
        duration_ms=120,
        status_code=503,
        response_excerpt="upstream down",
    )

    response = superuser_client.get(change_page(message))

    page = response.content.decode()
    assert response.status_code == 200
    assert "<pre>{\n  &quot;greeting&quot;: &quot;&lt;b&gt;hi&lt;/b&gt;&quot;\n}</pre>" in page
    assert "<b>hi</b>" not in page
    assert "&quot;X-Trace&quot;: &quot;********&quot;" in page  # the name, never the value
    assert "t-1" not in page
    assert "upstream down" in page
    assert "503" in page


def test_the_change_page_shows_times_to_the_millisecond_and_how_late_each_attempt_was(superuser_client):
    due = datetime(2026, 4, 15, 2, 41, 45, 120_000, tzinfo=UTC)
    message = make_message(message_id="timed", status=MessageStatus.FAILED, due_at=None, schedule_to=due)
    DeliveryAttempt.objects.create(
        message=message, number=1, due_at=due, started_at=due + timedelta(milliseconds=37), duration_ms=9, status_code=500
    )

    page = superuser_client.get(change_page(message)).content.decode()

    assert "2026-04-15 02:41:45.120 UTC" in page  # the schedule and the attempt's due time
    assert "2026-04-15 02:41:45.157 UTC" in page  # when the attempt started
    assert '<div class="readonly">37</div>' in page  # the first attempt's lateness, for the message
    assert re.search(r'<td class="field-late_ms">\s*<p>37</p>', page)  # and the attempt's own


def test_the_change_page_offers_no_save_or_delete(superuser_client):
    message = make_message(message_id="read-only")

    page = superuser_client.get(change_page(message)).content.decode()
    superuser_client.post(change_page(message), {"status": "delivered"})

    assert 'name="_save"' not in page
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SCHEDULED
    assert superuser_client.get(reverse("admin:scheduler_message_add")).status_code == 403
    assert superuser_client.get(reverse("admin:scheduler_message_delete", args=[message.pk])).status_code == 403


# --- Actions, as the ops group ------------------------------------------------------------


def test_the_ops_group_may_view_messages_and_run_the_actions():
    group = Group.objects.get(name="ops")

    codenames = set(group.permissions.values_list("codename", flat=True))

    assert codenames == {"view_message", "view_deliveryattempt", "run_message_actions"}


def test_ops_staff_see_the_list_and_the_change_page(ops_client):
    message = make_message(message_id="visible")

    assert ops_client.get(CHANGELIST).status_code == 200
    assert ops_client.get(change_page(message)).status_code == 200


def test_cancel_deletes_the_message(ops_client):
    message = make_message(message_id="unwanted", due_at=timezone.now() + timedelta(days=1))

    response = run_action(ops_client, "cancel", message)

    assert not Message.objects.filter(pk=message.pk).exists()
    assert flashed(response) == ["Cancelled: 1 message."]


def test_deliver_now_moves_the_next_attempt_to_this_moment(ops_client):
    message = make_message(message_id="tomorrow", due_at=timezone.now() + timedelta(days=1))

    run_action(ops_client, "deliver_now", message)

    message.refresh_from_db()
    assert message.status == MessageStatus.SCHEDULED
    assert message.due_at is not None
    assert abs(message.due_at - timezone.now()) < timedelta(seconds=10)


def test_retry_schedules_a_failed_message_again(ops_client):
    message = failed_message("gave-up")

    response = run_action(ops_client, "retry", message)

    message.refresh_from_db()
    assert message.status == MessageStatus.SCHEDULED
    assert message.due_at is not None
    assert abs(message.due_at - timezone.now()) < timedelta(seconds=10)
    assert flashed(response) == ["Scheduled again: 1 message."]


def test_actions_report_the_messages_they_skipped_and_why(ops_client):
    sending = make_message(message_id="on-the-wire", status=MessageStatus.SENDING)
    waiting = make_message(message_id="still-waiting", due_at=timezone.now() + timedelta(hours=1))
    failed = failed_message("gave-up")

    cancelled = run_action(ops_client, "cancel", sending)
    retried = run_action(ops_client, "retry", waiting, failed)

    assert Message.objects.filter(pk=sending.pk).exists()
    assert flashed(cancelled) == ["Skipped 1 message in flight (its webhook is being called right now): on-the-wire."]
    assert flashed(retried) == ["Scheduled again: 1 message.", "Skipped 1 message not failed: still-waiting."]


def test_actions_leave_delivered_history_alone_even_when_its_id_is_in_use_again(ops_client):
    history = make_message(message_id="reused", status=MessageStatus.DELIVERED, due_at=None)
    current = make_message(message_id="reused")

    response = run_action(ops_client, "cancel", history)

    assert Message.objects.filter(pk__in=[history.pk, current.pk]).count() == 2
    assert flashed(response) == ["Skipped 1 message already delivered or gone: reused."]


# --- Who may not ---------------------------------------------------------------------------


def test_staff_outside_the_ops_group_can_neither_see_nor_act(client):
    client.force_login(make_staff("intern"))
    message = make_message(message_id="protected")

    assert client.get(CHANGELIST).status_code == 403
    assert run_action(client, "cancel", message).status_code == 403
    assert Message.objects.filter(pk=message.pk).exists()


def test_staff_who_may_only_view_are_not_offered_the_actions(client):
    viewer = make_staff("viewer")
    viewer.user_permissions.add(*Group.objects.get(name="ops").permissions.exclude(codename="run_message_actions"))
    client.force_login(viewer)
    message = make_message(message_id="protected")

    page = client.get(CHANGELIST)
    run_action(client, "cancel", message)

    assert page.status_code == 200
    assert 'value="cancel"' not in page.content.decode()
    assert Message.objects.filter(pk=message.pk).exists()


# --- Cancel every matching message ----------------------------------------------------------


def remaining() -> set[str]:
    return set(Message.objects.values_list("message_id", flat=True))


@pytest.fixture
def tenants():
    """API_TOKEN's messages in every state, and a failed one of another key's."""
    other, _ = create_api_key(name="tenant-b")
    failed_message("failed-1")
    failed_message("failed-2")
    make_message(message_id="waiting", due_at=timezone.now() + timedelta(days=1))
    make_message(message_id="on-the-wire", status=MessageStatus.SENDING)
    make_message(message_id="delivered", status=MessageStatus.DELIVERED, due_at=None)
    make_message(message_id="theirs", status=MessageStatus.FAILED, due_at=None, owner_id=other.pk)


def test_the_list_links_to_cancelling_every_message_its_filter_matches(ops_client, tenants):
    response = ops_client.get(CHANGELIST, {"status__exact": "failed", "p": 1, "_facets": "True"})

    # The list's filter, not its page or facets
    assert response.context["cancel_matching_url"] == f"{CANCEL_MATCHING}?status__exact=failed"
    assert f'href="{CANCEL_MATCHING}?status__exact=failed"' in response.content.decode()


def test_the_confirmation_counts_what_the_filter_matches_and_cancels_nothing(ops_client, tenants):
    response = ops_client.get(CANCEL_MATCHING, {"status__exact": "failed", "owner__id__exact": API_TOKEN_KEY_ID})

    page = response.content.decode()
    assert response.status_code == 200
    assert response.context["cancellable"] == 2
    assert response.context["in_flight"] == 0
    assert response.context["filter_in_words"] == ["status: Failed", "owner: API_TOKEN (API_TOKEN…)"]
    assert '<strong class="cancellable-count">2 messages</strong>' in page
    assert 'value="Yes, cancel 2 messages"' in page
    assert 'name="csrfmiddlewaretoken"' in page
    assert f'action="{CANCEL_MATCHING}?owner__id__exact={API_TOKEN_KEY_ID}&amp;status__exact=failed"' in page
    assert f'href="{CHANGELIST}?owner__id__exact={API_TOKEN_KEY_ID}&amp;status__exact=failed"' in page
    assert len(remaining()) == 6


def test_the_confirmation_says_how_many_matching_messages_are_being_sent(ops_client, tenants):
    response = ops_client.get(CANCEL_MATCHING, {"owner__id__exact": API_TOKEN_KEY_ID})

    assert response.context["cancellable"] == 3  # two failed, one waiting; never the delivered one
    assert response.context["in_flight"] == 1
    assert '<strong class="in-flight-count">1 message</strong> matching is' in response.content.decode()


def test_confirming_cancels_exactly_the_matching_cancellable_messages(ops_client, tenants):
    query = f"?owner__id__exact={API_TOKEN_KEY_ID}"

    response = ops_client.post(CANCEL_MATCHING + query, follow=True)

    assert response.redirect_chain == [(CHANGELIST + query, 302)]
    assert remaining() == {"on-the-wire", "delivered", "theirs"}
    assert flashed(response) == [
        "Cancelled: 3 messages.",
        "Skipped 1 message in flight (its webhook is being called right now): on-the-wire.",
    ]


def test_confirming_with_a_status_filter_cancels_that_status_of_every_owner(ops_client, tenants):
    response = ops_client.post(f"{CANCEL_MATCHING}?status__exact=failed", follow=True)

    assert remaining() == {"waiting", "on-the-wire", "delivered"}
    assert flashed(response) == ["Cancelled: 3 messages."]


def test_every_matching_message_is_cancelled_past_the_page_in_many_batches(ops_client, monkeypatch):
    # Given more matching messages than a page shows, cancelled four a batch
    monkeypatch.setattr(message_admin.MessageAdmin, "list_per_page", 5)
    monkeypatch.setattr(scheduling, "CANCEL_BATCH", 4)
    batches: list[int] = []
    cancel_many = message_states.cancel_many

    def counting_batches(pks, **kwargs):
        batches.append(len(pks))
        return cancel_many(pks, **kwargs)

    monkeypatch.setattr(message_states, "cancel_many", counting_batches)
    now = timezone.now()
    for number in range(30):
        make_message(message_id=f"due-{number}", due_at=now + timedelta(minutes=number % 7))
    for number in range(10):
        failed_message(f"failed-{number}")
    make_message(message_id="delivered", status=MessageStatus.DELIVERED, due_at=None)

    # When the unfiltered list's messages are counted, then cancelled
    counted = ops_client.get(CANCEL_MATCHING)
    response = ops_client.post(CANCEL_MATCHING, follow=True)

    # Then all forty, in batches of at most four; history stays
    assert counted.context["cancellable"] == 40
    assert counted.context["filter_in_words"] == []
    assert remaining() == {"delivered"}
    assert flashed(response) == ["Cancelled: 40 messages."]
    assert sum(batches) == 40
    assert max(batches) == 4


def test_a_search_term_narrows_the_count_and_the_cancel(ops_client):
    make_message(message_id="lower", webhook_url="https://hooks.example.com/tenanta/1")
    make_message(message_id="upper", webhook_url="https://hooks.example.com/TenantA/1")
    make_message(message_id="order-7")
    term = {"q": "https://hooks.example.com/tenanta/"}

    counted = ops_client.get(CANCEL_MATCHING, term)
    ops_client.post(f"{CANCEL_MATCHING}?q=https://hooks.example.com/tenanta/")
    ops_client.post(f"{CANCEL_MATCHING}?q=order-7")

    assert counted.context["cancellable"] == 1
    assert counted.context["filter_in_words"] == ["search: “https://hooks.example.com/tenanta/”"]
    # The prefix with its case, on SQLite as well
    assert remaining() == {"upper"}


def test_a_due_filter_narrows_the_cancel(ops_client):
    now = timezone.now()
    make_message(message_id="late", due_at=now - timedelta(minutes=5))
    make_message(message_id="next-week", due_at=now + timedelta(days=7))

    ops_client.post(f"{CANCEL_MATCHING}?due=overdue")

    assert remaining() == {"next-week"}


def test_a_stuck_filter_finds_only_messages_that_cannot_be_cancelled(ops_client):
    stuck_message("stuck-one")
    make_message(message_id="waiting")

    counted = ops_client.get(CANCEL_MATCHING, {"claim": "stuck"})
    response = ops_client.post(f"{CANCEL_MATCHING}?claim=stuck", follow=True)

    assert (counted.context["cancellable"], counted.context["in_flight"]) == (0, 1)
    assert 'value="Yes, cancel' not in counted.content.decode()
    assert remaining() == {"stuck-one", "waiting"}
    assert flashed(response)[0] == "Cancelled: 0 messages."


@pytest.mark.parametrize(
    ("query", "status_code"),
    [
        ("?webhook_url__regex=secret", 400),  # not a sidebar filter: lookup_allowed refuses it
        ("?due=someday", 302),  # not a choice: DueFilter would ignore it and match everything
    ],
)
def test_a_filter_the_list_does_not_offer_cancels_nothing(ops_client, tenants, query, status_code):
    shown = ops_client.get(CANCEL_MATCHING + query)
    posted = ops_client.post(CANCEL_MATCHING + query)

    assert (shown.status_code, posted.status_code) == (status_code, status_code)
    if status_code == 302:
        assert shown["Location"] == posted["Location"] == f"{CHANGELIST}?e=1"  # as the list answers it
    assert len(remaining()) == 6


def test_without_the_permission_to_run_actions_there_is_no_link_and_the_page_is_forbidden(client, tenants):
    viewer = make_staff("viewer")
    viewer.user_permissions.add(*Group.objects.get(name="ops").permissions.exclude(codename="run_message_actions"))
    client.force_login(viewer)

    listed = client.get(CHANGELIST)
    shown = client.get(CANCEL_MATCHING)
    posted = client.post(CANCEL_MATCHING)

    assert listed.status_code == 200
    assert "cancel_matching_url" not in listed.context
    assert CANCEL_MATCHING not in listed.content.decode()
    assert (shown.status_code, posted.status_code) == (403, 403)
    assert len(remaining()) == 6


def test_the_page_is_for_signed_in_staff_only(client, tenants):
    response = client.post(CANCEL_MATCHING)

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    assert len(remaining()) == 6


# --- create_admin --------------------------------------------------------------------------


@pytest.fixture
def admin_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_USERNAME", "first-admin")
    monkeypatch.setenv("ADMIN_PASSWORD", PASSWORD)
    monkeypatch.setenv("ADMIN_EMAIL", "first-admin@example.com")


def test_create_admin_creates_a_superuser_from_the_environment(admin_env, capsys):
    call_command("create_admin")

    user = User.objects.get(username="first-admin")
    assert user.is_superuser
    assert user.is_staff
    assert user.check_password(PASSWORD)
    assert "Created superuser 'first-admin'" in capsys.readouterr().out


def test_create_admin_with_ops_creates_a_staff_member_who_can_use_the_admin(admin_env, client):
    call_command("create_admin", "--ops")

    user = User.objects.get(username="first-admin")
    assert user.is_staff
    assert not user.is_superuser
    assert list(user.groups.values_list("name", flat=True)) == ["ops"]
    assert client.login(username="first-admin", password=PASSWORD)
    assert client.get(CHANGELIST).status_code == 200


def test_create_admin_leaves_an_existing_user_alone(admin_env, monkeypatch, capsys):
    call_command("create_admin")
    monkeypatch.setenv("ADMIN_PASSWORD", "another-long-password-99")

    call_command("create_admin", "--ops")

    user = User.objects.get(username="first-admin")
    assert "already exists" in capsys.readouterr().out
    assert user.is_superuser
    assert user.check_password(PASSWORD)


def test_create_admin_names_the_missing_environment_variables(admin_env, monkeypatch):
    monkeypatch.delenv("ADMIN_PASSWORD")
    monkeypatch.setenv("ADMIN_EMAIL", " ")

    with pytest.raises(CommandError, match="ADMIN_PASSWORD, ADMIN_EMAIL"):
        call_command("create_admin")

    assert not User.objects.exists()


def test_create_admin_refuses_a_weak_password(admin_env, monkeypatch):
    monkeypatch.setenv("ADMIN_PASSWORD", "password")

    with pytest.raises(CommandError, match="too weak"):
        call_command("create_admin")


# --- Stuck claims ----------------------------------------------------------------------------


def stuck_message(message_id: str) -> Message:
    """In `sending`, its claim an hour old: recovery should have cleared it long ago."""
    return make_message(
        message_id=message_id,
        status=MessageStatus.SENDING,
        claim_token=uuid.uuid4(),
        claimed_at=timezone.now() - timedelta(hours=1),
    )


def test_a_stuck_message_is_listed_by_its_filter_and_released_as_failed(ops_client):
    stuck = stuck_message("stuck-one")
    in_flight = make_message(
        message_id="in-flight", status=MessageStatus.SENDING, claim_token=uuid.uuid4(), claimed_at=timezone.now()
    )

    listed = ops_client.get(CHANGELIST, {"claim": "stuck"})
    response = run_action(ops_client, "release_stuck", stuck, in_flight)

    assert [message.pk for message in listed.context["cl"].result_list] == [stuck.pk]
    stuck.refresh_from_db()
    in_flight.refresh_from_db()
    assert stuck.status == MessageStatus.FAILED
    assert in_flight.status == MessageStatus.SENDING
    assert flashed(response) == ["Released as failed (retry them when ready): 1.", "Skipped 1: not stuck in sending."]


def test_health_reports_stuck_messages_as_degraded(client):
    stuck_message("stuck-for-health")

    body = client.get("/health").json()

    assert body["stuck_messages"] == 1
    assert body["status"] == "degraded"
    assert "stuck_messages" in body["failing"]
