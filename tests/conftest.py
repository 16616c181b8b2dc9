"""Suite-wide settings: Hypothesis checks properties here, never speed.

Its defaults fail an example that takes over 200 ms (``deadline``) and a strategy that generates
slowly (the ``too_slow`` health check): wall-clock checks that a busy machine trips. The suite's
time limits are pytest-timeout's (pyproject.toml, and tests/cli_helpers.py for the tests that
run processes).
"""

from hypothesis import HealthCheck, settings

settings.register_profile("gpo", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("gpo")

pytest_plugins = ["tests.redis_server"]
