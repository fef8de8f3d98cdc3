from django.apps import AppConfig


class ScheduledMessagesConfig(AppConfig):
    name = "messages"
    # django.contrib.messages (which the admin needs) already owns the label "messages".
    label = "scheduler"
    verbose_name = "Scheduled messages"

    def ready(self) -> None:
        from messages import checks  # noqa: F401 - registers the system checks
