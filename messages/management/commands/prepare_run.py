"""`make run`'s first step when scripts/prepared_start.py finds something changed, in a process
of its own: migrate, collect the static files, write the launcher's plan
(scheduler_project.run_plan) as JSON, and with --fingerprint the stamp that lets the next start
skip all of this."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.staticfiles.storage import staticfiles_storage
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from scheduler_project.run_plan import code_migrations, database_description, required_rows, run_plan
from scripts import prepared_start


class Command(BaseCommand):
    help = "Migrates, collects the static files and writes what `make run` starts, as JSON, to --plan."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--plan", required=True, help="the file the plan is written to")
        parser.add_argument("--fingerprint", help="what the launcher found (scripts/prepared_start.py): writes the stamp")

    def handle(self, *args: Any, **options: Any) -> None:
        # A stamp from before this run must not outlive a migrate that fails half-way.
        prepared_start.forget_stamp()
        call_command("migrate", interactive=False, verbosity=1)
        call_command("collectstatic", interactive=False, verbosity=0)
        plan = run_plan()
        if options["fingerprint"]:
            prepared_start.write_stamp(
                fingerprint_value=options["fingerprint"],
                plan=plan,
                database=database_description(),
                migrations=code_migrations(),
                required_rows=required_rows(),
                # The manifest whitenoise serves by (the directory, for a storage without one).
                static_manifest=str(Path(settings.STATIC_ROOT) / getattr(staticfiles_storage, "manifest_name", "")),
            )
        Path(options["plan"]).write_text(json.dumps(prepared_start.with_redis(plan)))
