from neocloud.db.base import Base  # noqa: F401
