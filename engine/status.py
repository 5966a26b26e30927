"""Status vocabularies shared by Python and PostgreSQL.

Each Enum's values equal the database enum of the same name (a test holds them equal).
"""

from __future__ import annotations

from enum import StrEnum


class MessageStatus(StrEnum):
    """Where one message to one recipient stands."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    UNDELIVERED = "undelivered"
    FAILED = "failed"
    EXPIRED = "expired"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"
    # skip statuses: set at expansion, never sent
    SUPPRESSED = "suppressed"
    INVALID_NUMBER = "invalid_number"
    DUPLICATE = "duplicate"
    RENDER_ERROR = "render_error"
    TOO_LONG = "too_long"
    FREQUENCY_CAPPED = "frequency_capped"


SKIP_STATUSES = frozenset(
    {
        MessageStatus.SUPPRESSED,
        MessageStatus.INVALID_NUMBER,
        MessageStatus.DUPLICATE,
        MessageStatus.RENDER_ERROR,
        MessageStatus.TOO_LONG,
        MessageStatus.FREQUENCY_CAPPED,
    }
)

FINAL_STATUSES = SKIP_STATUSES | {
    MessageStatus.DELIVERED,
    MessageStatus.READ,
    MessageStatus.UNDELIVERED,
    MessageStatus.FAILED,
    MessageStatus.EXPIRED,
    MessageStatus.CANCELLED,
}


class RunStatus(StrEnum):
    """Where one firing of a campaign stands."""

    SCHEDULED = "scheduled"
    EXPANDING = "expanding"
    SENDING = "sending"
    COMPLETED = "completed"
    PAUSED = "paused"
    CANCELLED = "cancelled"
    OVER_BUDGET = "over_budget"
    MISSED = "missed"
    FAILED = "failed"


class CampaignStatus(StrEnum):
    """Whether a campaign will fire again."""

    ACTIVE = "active"
    PAUSED = "paused"
    FINISHED = "finished"
    CANCELLED = "cancelled"
