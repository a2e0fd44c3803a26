"""Settings of the example project: a plain Django site with raif_batches and its admin.

Each provider's key and base URL (``XAI_API_KEY``, ``OPENAI_BASE_URL``, …) are read by
raif_batches from ``RAIF_BATCHES`` or the environment; none is needed to migrate, check, run the
server or the tests. ``DATABASE_URL`` (django-environ: ``postgres://…``, ``mysql://…``) picks the
database; without it the site uses a SQLite file beside this one.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="example-project-not-for-production")
DEBUG = env.bool("DJANGO_DEBUG", default=True)
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "raif_batches",
    "example_project.tickets",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'example.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    # Answers hold any Unicode, emoji included: a test database in utf8mb4 whatever the server's
    # default (Django's connections already use utf8mb4).
    DATABASES["default"].setdefault("TEST", {}).setdefault("CHARSET", "utf8mb4")
    # One partial index (unharvested batches) is a plain index there: correct, a little bigger.
    SILENCED_SYSTEM_CHECKS = ["models.W037"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

# Every key is optional; each provider's <PROVIDER>_API_KEY / <PROVIDER>_BASE_URL fall back to
# the environment variable of the same name.
RAIF_BATCHES: dict[str, object] = {}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"raif_batches": {"handlers": ["console"], "level": "WARNING"}},
}
