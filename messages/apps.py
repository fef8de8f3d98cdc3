from django.apps import AppConfig


class ScheduledMessagesConfig(AppConfig):
    name = "messages"
    # django.contrib.messages (which the admin needs) already owns the label "messages".
    label = "scheduler"
    verbose_name = "Scheduled messages"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from messages import checks  # noqa: F401 - registers the system checks
        from messages.api_keys import ensure_api_token_key

        post_migrate.connect(ensure_api_token_key, sender=self)
