"""merge the four 0006 heads (billing agreements, compute queue, studio limits, studio models)

They were written side by side and touch different tables; this revision only joins them so
that later migrations have one parent.

Revision ID: 0007_merge
Revises: 0006_billing_agreements, 0006_compute_queue, 0006_studio_limits, 0006_studio_models
"""

from collections.abc import Sequence

revision: str = "0007_merge"
down_revision: str | tuple[str, ...] | None = (
    "0006_billing_agreements",
    "0006_compute_queue",
    "0006_studio_limits",
    "0006_studio_models",
)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
