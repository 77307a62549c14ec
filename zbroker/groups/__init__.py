"""Consumer groups: the KIP-848 group state machine, its assignors and the coordinator."""
