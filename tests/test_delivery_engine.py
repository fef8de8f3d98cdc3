"""The delivery engine's bounds, called directly: memory held, and a stop that claims nothing."""

from __future__ import annotations

import threading
import time

import pytest

from messages.delivery_engine import ByteBudget, EngineStopping


def test_a_task_waits_while_the_process_holds_its_byte_budget():
    budget = ByteBudget(100)
    budget.take(80, stopping=threading.Event())
    taken = threading.Event()

    def take_more() -> None:
        budget.take(50, stopping=threading.Event())
        taken.set()

    threading.Thread(target=take_more, daemon=True).start()
    assert not taken.wait(0.3)

    budget.give_back(80)
    assert taken.wait(2)
    assert budget.used == 50


def test_one_task_larger_than_the_budget_still_runs_alone():
    budget = ByteBudget(100)
    budget.take(500, stopping=threading.Event())
    assert budget.used == 500


def test_a_stopping_worker_takes_nothing_even_when_there_is_room():
    stopping = threading.Event()
    stopping.set()
    with pytest.raises(EngineStopping):
        ByteBudget(100).take(10, stopping=stopping)


def test_a_task_waiting_for_room_gives_up_when_the_worker_stops():
    budget, stopping = ByteBudget(100), threading.Event()
    budget.take(100, stopping=threading.Event())
    outcome: list[str] = []

    def wait_for_room() -> None:
        try:
            budget.take(10, stopping=stopping)
            outcome.append("took")
        except EngineStopping:
            outcome.append("stopped")

    waiter = threading.Thread(target=wait_for_room, daemon=True)
    waiter.start()
    time.sleep(0.1)
    stopping.set()
    waiter.join(2)
    assert outcome == ["stopped"]
    assert budget.used == 100
