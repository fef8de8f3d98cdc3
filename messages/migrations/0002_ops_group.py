"""The `ops` group: view messages and their attempts, deliver now, cancel and retry."""

from __future__ import annotations

from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

# Written out rather than imported: a migration must not change when the code around it does.
OPS_GROUP = "ops"
OPS_PERMISSIONS = ("view_message", "view_deliveryattempt", "run_message_actions")


def create_ops_group(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    using = schema_editor.connection.alias
    create_scheduler_permissions(apps, using)
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    permissions = list(
        Permission.objects.using(using).filter(content_type__app_label="scheduler", codename__in=OPS_PERMISSIONS)
    )
    if len(permissions) != len(OPS_PERMISSIONS):
        # A group without them would look fine and let nobody do anything.
        found = sorted(permission.codename for permission in permissions)
        raise RuntimeError(f"expected permissions {sorted(OPS_PERMISSIONS)}, found {found}")
    group, _ = Group.objects.using(using).get_or_create(name=OPS_GROUP)
    group.permissions.add(*permissions)


def create_scheduler_permissions(apps: Apps, using: str) -> None:
    """Django creates permissions after the last migration (post_migrate): too late on a new database."""
    app_config = apps.get_app_config("scheduler")
    # create_permissions skips app configs without a models module, which is what the
    # migration state's app configs look like; it reads the models from `apps` either way.
    app_config.models_module = True
    try:
        create_permissions(app_config, apps=apps, using=using, verbosity=0)
    finally:
        app_config.models_module = None


def delete_ops_group(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    # The permissions stay, as Django leaves every permission it has created.
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(name=OPS_GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("scheduler", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_ops_group, delete_ops_group)]
