"""`make run`'s first step, in a process of its own: migrate, collect the static files, and write
the launcher's plan (scheduler_project.run_plan) as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from scheduler_project.run_plan import run_plan


class Command(BaseCommand):
    help = "Migrates, collects the static files and writes what `make run` starts, as JSON, to --plan."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--plan", required=True, help="the file the plan is written to")

    def handle(self, *args: Any, **options: Any) -> None:
        call_command("migrate", interactive=False, verbosity=1)
        call_command("collectstatic", interactive=False, verbosity=0)
        Path(options["plan"]).write_text(json.dumps(run_plan()))
