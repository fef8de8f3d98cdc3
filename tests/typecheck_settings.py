"""The settings mypy's django-stubs plugin loads (mypy.ini): the real ones, on a placeholder
secret, so that type checking needs no environment and no .env. In tests/ so that no image
carries a settings module with a published SECRET_KEY."""

import os

os.environ["READ_DOT_ENV"] = "false"  # a developer's .env must not change what mypy loads
os.environ["SECRET_KEY"] = "typecheck-only-placeholder-that-serves-nothing"  # noqa: S105 - never served

from scheduler_project.settings import *  # noqa: E402,F403
