"""The test suite's own rules, checked: shared code lives in tests/support/, and the tests on
real processes wait by name (tests/support/waits.py), never with a fixed sleep."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
TEST_MODULES = sorted(TESTS.glob("test_*.py"))


def imported_modules(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
    return modules


def fixed_sleeps(path: Path) -> list[int]:
    """Lines that call time.sleep (or a bare sleep imported from time)."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and (
            (
                isinstance(node.func, ast.Attribute)
                and node.func.attr == "sleep"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "time"
            )
            or (isinstance(node.func, ast.Name) and node.func.id == "sleep")
        )
    ]


def runs_real_processes(path: Path) -> bool:
    text = path.read_text()
    return "pytest.mark.e2e" in text or "pytest.mark.faults" in text


@pytest.mark.parametrize("path", TEST_MODULES, ids=lambda path: path.name)
def test_a_test_module_imports_no_other_test_module_nor_conftest(path):
    borrowed = {module for module in imported_modules(path) if module == "tests.conftest" or module.startswith("tests.test_")}
    assert borrowed == set(), f"move what {path.name} shares into tests/support/"


@pytest.mark.parametrize("path", [path for path in TEST_MODULES if runs_real_processes(path)], ids=lambda path: path.name)
def test_end_to_end_and_fault_tests_wait_by_name_never_with_a_fixed_sleep(path):
    assert fixed_sleeps(path) == [], "wait_until the condition, or nothing_more_arrives within N s"
