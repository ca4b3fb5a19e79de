"""Skeleton table: raw records seen per symbol."""

from app.faust_app import app

raw_counts = app.Table("raw-counts", default=int, key_type=str, value_type=int)
