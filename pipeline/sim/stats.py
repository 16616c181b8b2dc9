"""What the simulator counts: :class:`SimStats`, read by tests in process and, as JSON from
``GET /_sim/stats``, by a benchmark that runs the simulator in another process."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(kw_only=True)
class SimStats:
    """Counters of what reached the simulator and what it sent back (mutable: the counters)."""

    requests: Counter[str] = field(default_factory=Counter)
    """Requests received, by route (e.g. ``"/v1/chat/completions"``, ``"/v1/batches/{id}"``)."""
    responses: Counter[int] = field(default_factory=Counter)
    """Responses sent, by status (a connection reset sends none)."""
    rate_limited: int = 0
    """429s sent by the rate limiter (injected 429s count under ``faults["429"]``)."""
    faults: Counter[str] = field(default_factory=Counter)
    """Faults injected, by kind (``"429"``, ``"reset"``, ``"truncate"``, ``"quota"``...)."""
    choices_served: int = 0
    """Chat choices generated and sent by the realtime route."""
    billed_input_tokens: int = 0
    billed_output_tokens: int = 0
    """What the realtime answers it generated would bill (whether or not they arrived whole): the
    ground truth of what a client spent, for tests of its ledger. Batch answers are not in here."""

    batches_created: int = 0
    """Batches created through either batch API (including those that fail validation)."""
    batch_sizes: list[int] = field(default_factory=list)
    """The number of requests of each created batch, in creation order."""
    batches_failed: int = 0
    """Batches that failed validation (an invalid input file, or drawn by ``batch_fail_rate``)."""
    batches_duplicated: int = 0
    """Batches submitted twice: created batches with at least one request whose body equals one
    in an earlier batch that is still pending or succeeded (retrying errored, expired or canceled
    requests is not a duplicate; neither is a repeat within one batch)."""
    batch_requests_duplicated: int = 0
    """The requests of those batches that repeat such an earlier request."""
    batch_requests_succeeded: int = 0
    batch_requests_errored: int = 0
    batch_requests_expired: int = 0
    batch_requests_canceled: int = 0
    """Batched requests by outcome, counted when the simulator settles them."""
    batch_choices_served: int = 0
    """Chat choices generated for batched requests."""
    batch_input_tokens: int = 0
    batch_output_tokens: int = 0
    """What the batched answers bill, at the batch price (half the realtime price at OpenAI and
    Anthropic); apart from ``billed_*`` so a ledger can be checked for each price."""

    def as_json(self) -> dict[str, Any]:
        """Every counter as JSON-ready values (the body of ``GET /_sim/stats``)."""
        return {
            "requests": dict(self.requests),
            "responses": {str(status): count for status, count in self.responses.items()},
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "choices_served": self.choices_served,
            "billed_input_tokens": self.billed_input_tokens,
            "billed_output_tokens": self.billed_output_tokens,
            "batches_created": self.batches_created,
            "batch_sizes": list(self.batch_sizes),
            "batches_failed": self.batches_failed,
            "batches_duplicated": self.batches_duplicated,
            "batch_requests_duplicated": self.batch_requests_duplicated,
            "batch_requests_succeeded": self.batch_requests_succeeded,
            "batch_requests_errored": self.batch_requests_errored,
            "batch_requests_expired": self.batch_requests_expired,
            "batch_requests_canceled": self.batch_requests_canceled,
            "batch_choices_served": self.batch_choices_served,
            "batch_input_tokens": self.batch_input_tokens,
            "batch_output_tokens": self.batch_output_tokens,
        }
