"""Django for the integration tests: the minimal project in ``django_site``, set up once."""

from __future__ import annotations

import os

import django
import pytest

from tests.integrations.django_site import USERS

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.integrations.django_site.settings")
django.setup()


@pytest.fixture(scope="session")
def database() -> None:
    """The project's tables (SQLite in a temporary directory) and two users."""
    from django.contrib.auth.models import User
    from django.core.management import call_command

    call_command("migrate", verbosity=0, interactive=False)
    for name in USERS:
        if not User.objects.filter(username=name).exists():
            User.objects.create_user(name, password=f"{name}-secret")
