"""Hostile receivers beside ordinary ones, on the real path: what one receiver answers, or how
slowly, never touches another message, and the service never sends anything twice.

Every hostile message falls due at the same instant as ordinary messages, so beat hands them
to a worker in one task, and the worker claims them together: the shared fate this suite rules
out is exactly that group's.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from messages import delivery
from messages.models import DeliveryAttempt, Message, MessageStatus
from tests.support.api_calls import LATENESS_BOUND_SECONDS, post_message, wait_until_finished
from tests.support.dns_server import RESOLVING_NAME, SILENT_NAME
from tests.support.hostile_receiver import HostileReceiver
from tests.support.waits import wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.hostile, pytest.mark.django_db(transaction=True)]

ORDINARY_COUNT = 20
SILENT_LOOKUPS = 10

RETRY_AFTER_VALUES = {
    "superscript-two": "²".encode(),
    "huge-number": b"99999999999999999999999",
    "overflowing-date": b"Fri, 31 Dec 99999 23:59:59 GMT",
    "negative": b"-5",
    "empty": b"",
    "date-without-zone": b"Wed, 21 Oct 2015 07:28:00",
}


def hostile_urls(receiver: HostileReceiver, run: str) -> dict[str, str]:
    urls = {f"retry-after-{name}": receiver.url(f"/retry-after/{name}-{run}") for name in RETRY_AFTER_VALUES}
    for kind in ("nul-body", "bad-utf8", "huge-headers", "slow-body", "hang", "reset", "set-cookie", "redirect"):
        urls[kind] = receiver.url(f"/{kind}/{run}")
    port = receiver.base_url.rsplit(":", 1)[1]
    # Ten names whose server never answers, each its own lookup: more than a thread pool of
    # resolvers would have, so ordinary names would wait behind them there.
    for n in range(SILENT_LOOKUPS):
        urls[f"silent-name-server-{n}"] = f"http://host{n}.{SILENT_NAME}:{port}/ok/silent-{n}-{run}"
    return urls


def test_hostile_receivers_never_touch_the_ordinary_messages_due_with_them(api, hostile_service, dns_server, hook_path):
    run = hook_path.rsplit("/", 1)[1]
    for name, value in RETRY_AFTER_VALUES.items():
        hostile_service.configure(f"/retry-after/{name}-{run}", retry_after=value)
    due = datetime.now(UTC) + timedelta(seconds=2)

    # Given hostile receivers and ordinary ones (by address and by a name that resolves), all due at once
    hostile_ids = []
    for kind, url in hostile_urls(hostile_service, run).items():
        post_message(api, f"hostile-{kind}-{run}", url, at=due, maxAttempts=2)
        hostile_ids.append(f"hostile-{kind}-{run}")
    port = hostile_service.base_url.rsplit(":", 1)[1]
    ordinary, by_name = {}, {}
    for n in range(ORDINARY_COUNT):
        ordinary[f"ordinary-{n}-{run}"] = f"/ok/ordinary-{n}-{run}"
        post_message(api, f"ordinary-{n}-{run}", hostile_service.url(f"/ok/ordinary-{n}-{run}"), at=due)
        by_name[f"by-name-{n}-{run}"] = f"/ok/by-name-{n}-{run}"
        post_message(api, f"by-name-{n}-{run}", f"http://{RESOLVING_NAME}:{port}/ok/by-name-{n}-{run}", at=due)

    # Then every ordinary message arrives once and on time
    for message_id, path in ordinary.items():
        calls = hostile_service.wait_for_calls(path, 1, timeout=15)
        assert len(calls) == 1, message_id
        assert 0 <= calls[0].arrived_at - due.timestamp() < LATENESS_BOUND_SECONDS, message_id
    # And so do those by a name that resolves, however many lookups hang beside them
    for message_id, path in by_name.items():
        calls = hostile_service.wait_for_calls(path, 1, timeout=15)
        # The name server's count tells a lookup that never reached it from one it answered.
        assert len(calls) == 1, (message_id, f"{RESOLVING_NAME} queried {dns_server.queries(RESOLVING_NAME)} times")
        assert 0 <= calls[0].arrived_at - due.timestamp() < LATENESS_BOUND_SECONDS, message_id
    wait_until(
        lambda: (
            Message.objects.filter(message_id__in=[*ordinary, *by_name], status=MessageStatus.DELIVERED).count()
            == 2 * ORDINARY_COUNT
        ),
        timeout=10,
        what="the ordinary deliveries to be recorded",
    )

    # And every hostile message ends, each call it got recorded as exactly one attempt
    wait_until_finished(hostile_ids, timeout=40)
    for message_id in hostile_ids:
        attempts = DeliveryAttempt.objects.filter(message__message_id=message_id)
        assert not attempts.filter(error=delivery.WORKER_LOST).exists(), message_id
    received = Counter(call.path for call in hostile_service.calls)
    for kind, url in hostile_urls(hostile_service, run).items():
        if kind.startswith("silent-name-server"):
            continue  # never reached: its name never resolved
        path = url.split(str(port), 1)[1]
        recorded = DeliveryAttempt.objects.filter(message__message_id=f"hostile-{kind}-{run}").count()
        assert received[path] == recorded, (kind, received[path], recorded)
    assert not Message.objects.filter(status=MessageStatus.SENDING).exists()


def test_an_odd_retry_after_is_ignored_and_the_schedule_applies(api, hostile_service, hook_path):
    run = hook_path.rsplit("/", 1)[1]
    hostile_service.configure(f"/retry-after/odd-{run}", retry_after="²".encode())
    post_message(api, f"odd-{run}", hostile_service.url(f"/retry-after/odd-{run}"), at=datetime.now(UTC), maxAttempts=2)

    wait_until_finished([f"odd-{run}"], timeout=20)

    attempts = list(DeliveryAttempt.objects.filter(message__message_id=f"odd-{run}").order_by("number"))
    assert [attempt.status_code for attempt in attempts] == [503, 503]
    assert Message.objects.get(message_id=f"odd-{run}").status == MessageStatus.FAILED


def test_response_bodies_are_stored_as_valid_text(api, hostile_service, hook_path):
    run = hook_path.rsplit("/", 1)[1]
    post_message(api, f"nul-{run}", hostile_service.url(f"/nul-body/{run}"), at=datetime.now(UTC), maxAttempts=1)
    post_message(api, f"utf8-{run}", hostile_service.url(f"/bad-utf8/{run}"), at=datetime.now(UTC), maxAttempts=1)

    wait_until_finished([f"nul-{run}", f"utf8-{run}"], timeout=20)

    nul = DeliveryAttempt.objects.get(message__message_id=f"nul-{run}")
    assert nul.status_code == 500
    assert "\x00" not in nul.response_excerpt
    assert nul.response_excerpt.startswith("err")
    utf8 = DeliveryAttempt.objects.get(message__message_id=f"utf8-{run}")
    assert utf8.status_code == 500
    assert "\ufffd" in utf8.response_excerpt


def test_a_cookie_set_by_one_receiver_never_reaches_another_message(api, hostile_service, hook_path):
    run = hook_path.rsplit("/", 1)[1]
    post_message(api, f"cookie-{run}", hostile_service.url(f"/set-cookie/{run}"), at=datetime.now(UTC))
    assert hostile_service.wait_for_calls(f"/set-cookie/{run}", 1, timeout=15)
    wait_until_finished([f"cookie-{run}"], timeout=10)

    post_message(api, f"after-cookie-{run}", hostile_service.url(f"/ok/after-cookie-{run}"), at=datetime.now(UTC))

    [call] = hostile_service.wait_for_calls(f"/ok/after-cookie-{run}", 1, timeout=15)
    assert not {name.lower() for name in call.headers} & {"cookie", "cookie2"}


def test_a_redirect_is_not_followed(api, hostile_service, hook_path):
    run = hook_path.rsplit("/", 1)[1]
    post_message(api, f"redirect-{run}", hostile_service.url(f"/redirect/{run}"), at=datetime.now(UTC), maxAttempts=1)

    wait_until_finished([f"redirect-{run}"], timeout=20)

    assert DeliveryAttempt.objects.get(message__message_id=f"redirect-{run}").status_code == 302
    assert hostile_service.calls_to(f"/ok/redirected-{run}") == []
