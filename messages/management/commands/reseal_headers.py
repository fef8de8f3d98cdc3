"""Seals every stored message's headers again under the first of HEADER_ENCRYPTION_KEYS.

Rotation: put the new key first, keep the old one after it, run this, then drop the old key.
Batch by batch, each its own short transaction, so the service keeps running meanwhile.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from messages.confidential import HeadersUnreadable, reseal_headers
from messages.models import Message


class Command(BaseCommand):
    help = "Re-encrypts every message's headers under the first HEADER_ENCRYPTION_KEYS key (key rotation)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", type=int, default=1000, help="Messages per transaction.")

    def handle(self, *args: Any, **options: Any) -> None:
        resealed = unreadable = 0
        last_pk = 0
        while True:
            with transaction.atomic():
                batch = list(
                    Message.objects.filter(pk__gt=last_pk)
                    .exclude(headers_sealed="")
                    .order_by("pk")
                    .values_list("pk", "headers_sealed")[: options["batch"]]
                )
                for pk, sealed in batch:
                    try:
                        fresh = reseal_headers(sealed)
                    except HeadersUnreadable:
                        unreadable += 1
                        continue
                    # Unless a PATCH or a retry wrote it meanwhile: it was sealed afresh then.
                    resealed += Message.objects.filter(pk=pk, headers_sealed=sealed).update(headers_sealed=fresh)
            if not batch:
                break
            last_pk = batch[-1][0]
        self.stdout.write(f"Resealed the headers of {resealed} message(s).")
        if unreadable:
            raise CommandError(f"{unreadable} message(s) were sealed with a key no longer configured: left as they are.")
