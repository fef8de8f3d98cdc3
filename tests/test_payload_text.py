"""The payload is the JSON text encoded once at POST, kept in the client's key order and sent as it is."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from messages import delivery
from messages.models import Message

pytestmark = pytest.mark.django_db

# Keys out of alphabetical order: PostgreSQL's jsonb would have sorted them (by length, then bytes).
PAYLOAD_TEXT = '{"zeta":1,"alpha":{"yy":[1,2.5,null],"b":"é"},"mid":true}'


def post(api, receiver, hook_path, message_id: str = "ordered") -> None:
    response = api.post(
        "/messages",
        {
            "id": message_id,
            "scheduleTo": "2020-01-01T00:00:00Z",
            "payload": json.loads(PAYLOAD_TEXT),
            "webhookUrl": receiver.url(hook_path),
        },
    )
    assert response.status_code == 200, response.content


def test_the_payload_is_stored_as_the_clients_json_in_its_key_order(api, receiver, hook_path):
    post(api, receiver, hook_path)

    message = Message.objects.get(message_id="ordered")
    assert message.payload_json == PAYLOAD_TEXT
    assert message.payload_bytes == len(PAYLOAD_TEXT.encode())
    shown = api.get("/messages/ordered").content.decode()
    assert '"payload":' + PAYLOAD_TEXT in shown.replace(" ", "")


def test_the_receiver_gets_exactly_the_stored_text(api, receiver, hook_path):
    post(api, receiver, hook_path)

    delivery.deliver_messages([Message.objects.get(message_id="ordered").pk])

    assert receiver.calls_to(hook_path)[0].body == PAYLOAD_TEXT.encode()


@pytest.mark.django_db(transaction=True)  # 0005 is not atomic (concurrent index builds on PostgreSQL)
@pytest.mark.usefixtures("no_background_processes")
def test_the_migration_gives_existing_rows_a_delivery_id_and_a_payload_size():
    # Given a message stored before 0004, its payload a JSON column
    executor = MigrationExecutor(connection)
    before, after = (
        [("scheduler", "0003_partial_indexes_for_finished_and_enqueued")],
        [("scheduler", "0004_payload_text_and_delivery_id")],
    )
    executor.migrate(before)
    old_message = executor.loader.project_state(before).apps.get_model("scheduler", "Message")
    row = old_message.objects.create(
        message_id="from-before", schedule_to="2026-01-01T00:00:00Z", webhook_url="https://example.com/", payload={"kept": "é"}
    )

    # When the migrations run (0004, and every later one the model below needs)
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    # Then the row keeps its payload as JSON text, and the key its receivers have already seen
    message = Message.objects.get(pk=row.pk)
    assert message.payload == {"kept": "é"}
    assert message.payload_bytes == len(message.payload_json.encode())
    assert message.delivery_id is None
    assert delivery.webhook_call(message).delivery_id == ""  # so Idempotency-Key is "from-before"
    new_delivery_id = Message(message_id="new").delivery_id
    assert new_delivery_id is not None
    assert len(new_delivery_id) == len("msg_") + 26
