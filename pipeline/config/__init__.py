"""The run configuration: one TOML file naming the endpoints, the optimizer, budgets and jobs.

Loaded and validated before anything is spent (``_load``): the tables are frozen
``msgspec.Struct`` types (``_schema``, also the JSON Schema of ``gpo config schema``), checked
section by section (``_sections``, ``_jobs``), with errors that name the file, the key path, what
was expected and what was found (``_messages``); ``_digest`` says what in a configuration decides
a run's results.
"""

from pipeline.config._load import (
    BUILTIN_PREFIX,
    SIMULATOR_URL,
    JobSpec,
    RunConfig,
    build_job,
    build_jobs,
    config_digest,
    diff_digests,
    json_schema,
    load_config,
    load_job_examples,
    unpriced_endpoints,
    with_simulator_url,
)

__all__ = [
    "BUILTIN_PREFIX",
    "SIMULATOR_URL",
    "JobSpec",
    "RunConfig",
    "build_job",
    "build_jobs",
    "config_digest",
    "diff_digests",
    "json_schema",
    "load_config",
    "load_job_examples",
    "unpriced_endpoints",
    "with_simulator_url",
]
