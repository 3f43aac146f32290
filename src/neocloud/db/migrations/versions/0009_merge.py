"""merge the studio's first revision (0004_studio), a head since it landed, into the main line

No schema change: it only gives later migrations a single parent.

Revision ID: 0009_merge
Revises: 0008_invoice_line_tokens, 0004_studio
"""

from collections.abc import Sequence

revision: str = "0009_merge"
down_revision: str | tuple[str, ...] | None = ("0008_invoice_line_tokens", "0004_studio")
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
