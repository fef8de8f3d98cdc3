"""The state machine: its invariants hold in the database, and only messages/message_states.py
writes the state fields."""

from __future__ import annotations

import ast
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from messages import message_states
from messages.models import STATE_INVARIANTS, Message, MessageStatus
from tests.factories import make_message

MESSAGES_PACKAGE = Path(__file__).resolve().parents[1] / "messages"
WRITE_METHODS = {"update", "create", "get_or_create", "update_or_create", "bulk_update"}


def breaks(message: Message, **fields) -> bool:
    """True when the database refuses `fields` on the message's row."""
    try:
        with transaction.atomic():
            Message.objects.filter(pk=message.pk).update(**fields)
    except IntegrityError:
        return True
    return False


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("status", "fields", "constraint"),
    [
        (MessageStatus.SCHEDULED, {"due_at": None}, "due_at_set_exactly_while_pending"),
        (MessageStatus.DELIVERED, {"due_at": timezone.now()}, "due_at_set_exactly_while_pending"),
        (MessageStatus.FAILED, {"finished_at": None}, "finished_at_set_exactly_once_finished"),
        (MessageStatus.RETRYING, {"finished_at": timezone.now()}, "finished_at_set_exactly_once_finished"),
        (MessageStatus.SENDING, {"claim_token": None}, "claim_held_exactly_while_sending"),
        (MessageStatus.SENDING, {"claimed_at": None}, "claim_held_exactly_while_sending"),
        (MessageStatus.SCHEDULED, {"claim_token": uuid.uuid4()}, "claim_held_exactly_while_sending"),
        (MessageStatus.SENDING, {"enqueued_at": timezone.now()}, "enqueued_only_while_waiting"),
        (MessageStatus.FAILED, {"enqueued_at": timezone.now()}, "enqueued_only_while_waiting"),
    ],
)
def test_each_invariant_is_enforced_by_the_database(status, fields, constraint):
    finished = status in (MessageStatus.DELIVERED, MessageStatus.FAILED)
    message = make_message(status=status, due_at=None if finished else timezone.now())

    assert breaks(message, **fields), f"{constraint} let {fields} through on a {status} message"
    assert constraint in {invariant.name for invariant in STATE_INVARIANTS}


@pytest.mark.django_db
def test_every_transition_leaves_a_message_that_holds_the_invariants():
    now = timezone.now()
    message = make_message(due_at=now - timedelta(seconds=1))
    token = uuid.uuid4()

    assert message_states.mark_enqueued([message.pk], now=now) == 1
    assert message_states.claim([message.pk], token=token, due_by=now) == 1
    assert message_states.mark_enqueued([message.pk], now=now) == 0  # not while sending
    claimed = Message.objects.get(pk=message.pk)
    assert message_states.release(claimed) == 1
    assert message_states.claim([message.pk], token=token, due_by=now) == 1
    assert (
        message_states.record_outcome(
            [message.pk], status_code=503, error="", retry_at=now, finished=None, now=now, enqueued_at=now
        )
        == 1
    )
    assert message_states.claim([message.pk], token=token, due_by=now) == 1
    assert (
        message_states.record_outcome(
            [message.pk], status_code=None, error="ReadTimeout", retry_at=None, finished=MessageStatus.FAILED, now=now
        )
        == 1
    )
    failed = Message.objects.get(pk=message.pk)
    message_states.reschedule(failed, due_at=now, enqueued_at=None, status=MessageStatus.SCHEDULED)

    final = Message.objects.get(pk=message.pk)
    assert (final.status, final.attempt_count, final.attempt_count_at_resend, final.finished_at) == (
        MessageStatus.SCHEDULED,
        2,
        2,
        None,
    )


def state_writes_outside_the_state_machine() -> list[str]:
    """Every write of a state field in messages/ outside message_states.py (and the migrations,
    which repair history): a keyword of update()/create()/Message(), an assignment to an
    attribute, or a save(update_fields=...) that names one."""
    found = []
    for path in sorted(MESSAGES_PACKAGE.rglob("*.py")):
        relative = path.relative_to(MESSAGES_PACKAGE.parent)
        if path.name == "message_states.py" or "migrations" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call):
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                named = {keyword.arg for keyword in node.keywords if keyword.arg}
                if name in WRITE_METHODS | {"Message"}:
                    found += [f"{relative}:{node.lineno} {name}({field}=)" for field in named & message_states.STATE_FIELDS]
                if name == "save":
                    for keyword in node.keywords:
                        if keyword.arg == "update_fields":
                            found.append(f"{relative}:{node.lineno} save(update_fields=...)")
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            else:
                continue
            for target in targets:
                for element in target.elts if isinstance(target, ast.Tuple) else [target]:
                    if isinstance(element, ast.Attribute) and element.attr in message_states.STATE_FIELDS:
                        found.append(f"{relative}:{node.lineno} .{element.attr} =")
    return found


def test_only_the_state_machine_writes_the_state_fields():
    assert state_writes_outside_the_state_machine() == []


def test_the_walk_finds_a_write_where_there_is_one(tmp_path, monkeypatch):
    # The walk itself must see the forms it looks for, or the test above proves nothing.
    fake = tmp_path / "messages"
    fake.mkdir()
    (fake / "rogue.py").write_text(
        "def f(qs, m):\n    qs.update(status='failed')\n    m.due_at = None\n    Message(enqueued_at=1)\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "MESSAGES_PACKAGE", fake)

    assert len(state_writes_outside_the_state_machine()) == 3
