"""The event contract, token normalisation and pricing: leaf modules every component shares."""
