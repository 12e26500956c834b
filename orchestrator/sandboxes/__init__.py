"""Where runners live: a local process per backend (the embedded default); Docker and remote endpoints slot in."""
