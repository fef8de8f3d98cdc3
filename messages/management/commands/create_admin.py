"""Creates the first admin user from the environment, for deployments without a terminal.

ADMIN_USERNAME, ADMIN_PASSWORD and ADMIN_EMAIL name it; with --ops it is a staff member of
the `ops` group (view messages, deliver now, cancel, retry) instead of a superuser.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

if TYPE_CHECKING:
    from django.contrib.auth.models import User  # AUTH_USER_MODEL: what get_user_model() returns

OPS_GROUP = "ops"  # created by migration scheduler.0002_ops_group
ENV_VARS = ("ADMIN_USERNAME", "ADMIN_PASSWORD", "ADMIN_EMAIL")


class Command(BaseCommand):
    help = "Creates a superuser (or, with --ops, an ops staff member) from ADMIN_USERNAME, ADMIN_PASSWORD, ADMIN_EMAIL."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--ops", action="store_true", help="Create a staff member of the ops group, not a superuser.")

    def handle(self, *args: Any, ops: bool, **options: Any) -> None:
        username, password, email = read_credentials()
        User = get_user_model()
        if User._default_manager.filter(**{User.USERNAME_FIELD: username}).exists():
            # Safe to run on every deploy: an existing user (and its password) is left alone.
            self.stdout.write(f"User {username!r} already exists; nothing changed.")
            return
        check_password_strength(password, User(**{User.USERNAME_FIELD: username, "email": email}))
        if ops:
            create_ops_member(username=username, password=password, email=email)
            self.stdout.write(self.style.SUCCESS(f"Created staff user {username!r} in the {OPS_GROUP} group."))
        else:
            User._default_manager.create_superuser(username=username, email=email, password=password)
            self.stdout.write(self.style.SUCCESS(f"Created superuser {username!r}."))


def read_credentials() -> tuple[str, str, str]:
    values = [os.environ.get(name, "") for name in ENV_VARS]
    missing = [name for name, value in zip(ENV_VARS, values, strict=True) if not value.strip()]
    if missing:
        raise CommandError(f"Set {', '.join(missing)} in the environment (needed: {', '.join(ENV_VARS)}).")
    username, password, email = values
    return username, password, email


def check_password_strength(password: str, user: User) -> None:
    try:
        validate_password(password, user)
    except ValidationError as error:
        raise CommandError("ADMIN_PASSWORD is too weak: " + " ".join(error.messages)) from None


def create_ops_member(*, username: str, password: str, email: str) -> None:
    try:
        group = Group.objects.get(name=OPS_GROUP)
    except Group.DoesNotExist:
        raise CommandError(f"The {OPS_GROUP!r} group does not exist; run `manage.py migrate` first.") from None
    with transaction.atomic():
        user = get_user_model()._default_manager.create_user(username=username, email=email, password=password, is_staff=True)
        user.groups.add(group)
