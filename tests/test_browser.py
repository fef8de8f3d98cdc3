"""A person's path through the admin and the API docs, in headless Chromium (Debian's package),
against a live server, the real worker and beat, and the receiver."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group, Permission, User

from messages.models import API_TOKEN_KEY_ID, Message, MessageStatus
from tests.support.waits import wait_until

CHROMIUM = "/usr/bin/chromium"
# CI installs Chromium (.ci/run): there a missing browser is a failure, never a skip.
if not os.path.exists(CHROMIUM) and not os.environ.get("CI"):
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Without these, Chromium keeps reaching for Google's hosts, which this network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ops_group() -> Group:
    """The group migration 0002 makes; earlier transactional tests flushed it, not its permissions."""
    group, _ = Group.objects.get_or_create(name="ops")
    group.permissions.add(
        *Permission.objects.filter(
            content_type__app_label="scheduler", codename__in=["view_message", "view_deliveryattempt", "run_message_actions"]
        )
    )
    return group


@pytest.fixture
def page(monkeypatch, tmp_path):
    # Playwright's sync API runs an event loop; the test's own ORM calls are still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    assert shutil.which(CHROMIUM) or os.path.exists(CHROMIUM), f"{CHROMIUM} is missing"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(20_000)
        yield page
        page.screenshot(path=str(tmp_path / "last-page.png"))
        browser.close()


def test_an_ops_user_delivers_a_scheduled_message_from_the_admin(
    page: Page, live_server, celery_worker, celery_beat, receiver, hook_path
):
    # Given an ops user and a message due tomorrow
    user = User.objects.create_user("olga", password="a-long-ops-password-1", is_staff=True)
    user.groups.add(ops_group())
    # payload= is a Message property, which Model.__init__ sets; the django-stubs plugin knows only fields.
    Message.objects.create(  # type: ignore[misc]
        owner_id=API_TOKEN_KEY_ID,
        message_id="browser-order-1",
        schedule_to=datetime.now(UTC) + timedelta(days=1),
        due_at=datetime.now(UTC) + timedelta(days=1),
        webhook_url=receiver.url(hook_path),
        payload={"order": 1},
    )

    # When she logs in, finds it and runs "Deliver now"
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "a-long-ops-password-1")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    page.goto(f"{live_server.url}/admin/scheduler/message/")
    page.fill("#searchbar", "browser-order-1")
    page.press("#searchbar", "Enter")
    row = page.locator("#result_list tbody tr", has_text="browser-order-1")
    expect(row).to_contain_text("in 23 h")
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", "deliver_now")
    page.click("button[name=index]")
    expect(page.locator("ul.messagelist")).to_contain_text("1")

    # Then the real worker delivers it, and the admin shows it delivered
    calls = receiver.wait_for_calls(hook_path, 1, timeout=15)
    assert [call.json for call in calls] == [{"order": 1}]
    wait_until(
        lambda: Message.objects.filter(message_id="browser-order-1", status=MessageStatus.DELIVERED).exists(),
        timeout=10,
        what="the delivery to be recorded",
    )
    page.goto(f"{live_server.url}/admin/scheduler/message/?status__exact=delivered")
    expect(page.locator("#result_list")).to_contain_text("browser-order-1")


def test_the_api_docs_list_every_operation(page: Page, live_server):
    page.goto(f"{live_server.url}/docs")

    for operation in ["/messages", "/messages/{id}", "/messages/{id}/retry", "/health"]:
        expect(page.locator(".opblock-summary-path", has_text=operation).first).to_be_visible()
    expect(page.locator(".opblock-summary-method", has_text="DELETE")).to_be_visible()
    expect(page.locator("button.authorize")).to_be_visible()


def test_an_ops_user_finds_no_secret_on_any_admin_page(page: Page, live_server):
    # Given a message whose client gave credentials for its receiver, and an API key
    from messages.api_keys import create_api_key

    user = User.objects.create_user("omar", password="a-long-ops-password-2", is_staff=True)
    user.groups.add(ops_group())
    key, key_secret = create_api_key(name="agent")
    # payload= and headers= are Message properties, which Model.__init__ sets; the plugin knows only fields.
    message = Message.objects.create(  # type: ignore[misc]
        owner_id=key.pk,
        message_id="with-credentials",
        schedule_to=datetime.now(UTC) + timedelta(days=1),
        due_at=datetime.now(UTC) + timedelta(days=1),
        webhook_url="https://robot:pa55word-9c1@hooks.example.com/in",
        payload={"order": 2},
        headers={"Authorization": "Bearer downstream-token-51d2", "X-Api-Key": "k-77e0"},
    )
    secrets = ["pa55word-9c1", "downstream-token-51d2", "k-77e0", key_secret]

    # When she logs in and walks every page she can reach
    page.goto(f"{live_server.url}/admin/")
    page.fill("#id_username", "omar")
    page.fill("#id_password", "a-long-ops-password-2")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    pages = [
        "/admin/",
        "/admin/scheduler/message/",
        f"/admin/scheduler/message/{message.pk}/change/",
        "/admin/scheduler/message/?q=with-credentials",
        "/admin/scheduler/apikey/",
    ]
    seen = []
    for path in pages:
        page.goto(f"{live_server.url}{path}")
        seen.append(page.content())

    # Then she sees the message, its owner and header names, but no secret anywhere
    change_page = seen[2]
    assert "with-credentials" in change_page
    assert "Authorization" in change_page
    assert "hooks.example.com" in change_page
    for text in seen:
        for secret in secrets:
            assert secret not in text
