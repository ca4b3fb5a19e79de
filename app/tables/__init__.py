"""RocksDB-backed, changelog-recovered faust tables."""
