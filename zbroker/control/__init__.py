"""The control plane: Raft over the metadata log, the metadata image, membership, the controller, topic admin."""
