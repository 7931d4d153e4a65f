"""How a batch becomes a loss: where sequences come from and which loss pieces apply."""
