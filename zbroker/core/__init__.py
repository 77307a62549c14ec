"""The data core: partitions, produce and fetch, replication, producer state, retention and compaction."""
