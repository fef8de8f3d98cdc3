VERSION = "2.0.0"
USER_AGENT = f"webhook-scheduler/{VERSION}"
