"""The relay: an OpenAI-compatible gateway that meters every model call onto Kafka."""
