"""A fault outside the service, on the real path: the receiver is not listening when its message
falls due. The failed attempt is recorded and a retry delivers the message once it is back.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from messages.models import DeliveryAttempt, Message, MessageStatus
from tests.support.api_calls import iso
from tests.support.ports import free_port
from tests.support.receiver import Receiver
from tests.support.waits import nothing_more_arrives, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.faults, pytest.mark.django_db(transaction=True)]


def test_a_receiver_down_at_due_time_gets_the_message_when_it_is_back(api, celery_worker, celery_beat):
    # Given a receiver that is not listening when the message comes due
    port = free_port()
    response = api.post(
        "/messages",
        {
            "id": "receiver-away",
            "scheduleTo": iso(datetime.now(UTC)),
            "payload": {"id": "receiver-away"},
            "webhookUrl": f"http://127.0.0.1:{port}/hook",
        },
    )
    assert response.status_code == 200
    wait_until(
        lambda: DeliveryAttempt.objects.filter(message__message_id="receiver-away").exists(),
        timeout=10,
        what="the first attempt to fail",
    )

    # When it comes back
    receiver = Receiver(port=port)
    receiver.start()
    back = time.time()
    try:
        # Then a retry delivers the message once
        calls = receiver.wait_for_calls("/hook", 1, timeout=15)
        wait_until(
            lambda: Message.objects.filter(message_id="receiver-away", status=MessageStatus.DELIVERED).exists(),
            timeout=10,
            what="delivery to be recorded",
        )
        assert len(nothing_more_arrives(lambda: receiver.calls_to("/hook"), within=1, what="a second call")) == len(calls) == 1
        errors = list(
            DeliveryAttempt.objects.filter(message__message_id="receiver-away").order_by("number").values_list("error", flat=True)
        )
        assert errors[0] == "ConnectionError"
        assert errors[-1] == ""
        print(f"\nreceiver down: delivered {calls[0].arrived_at - back:.1f} s after it came back, after {len(errors)} attempts")
    finally:
        receiver.stop()
