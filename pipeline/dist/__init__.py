"""Distributed runs over Redis: ``gpo run --workers N`` and ``gpo worker REDIS_URL``."""
