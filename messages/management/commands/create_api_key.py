"""Creates an API key from the command line; its secret is printed once, as the last line."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messages.api_keys import create_api_key
from messages.models import ApiKey


class Command(BaseCommand):
    help = "Creates an API key NAME (with --read-only: may list and read only) and prints its secret once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="What the key is for, e.g. the n8n instance that uses it.")
        parser.add_argument("--read-only", action="store_true", help="The key may list and read messages only.")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["name"].strip()
        max_length = ApiKey._meta.get_field("name").max_length
        if not name or (max_length is not None and len(name) > max_length):
            raise CommandError(f"NAME must be 1 to {max_length} characters.")
        key, secret = create_api_key(name=name, read_only=options["read_only"])
        kind = "read-only " if key.read_only else ""
        self.stderr.write(f"Created {kind}API key “{key.name}” (id {key.pk}). Its secret, shown only now:")
        self.stdout.write(secret)
