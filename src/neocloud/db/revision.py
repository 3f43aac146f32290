"""Write a new migration by comparing the tables with a database at head (developer tool).

python -m neocloud.db.revision "add fleet tables" --rev-id 0003_fleet
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from alembic import command

from neocloud.db.engine import Database
from neocloud.db.migrate import alembic_config, upgrade


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("message")
    parser.add_argument("--rev-id", required=True)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Database.from_url(f"sqlite:///{Path(tmp) / 'rev.db'}")
        upgrade(db)
        command.revision(
            alembic_config(db), message=args.message, autogenerate=True, rev_id=args.rev_id
        )
        db.dispose()


if __name__ == "__main__":
    main()
