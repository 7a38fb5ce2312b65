"""Errors shared by every tokenops process.

TokenopsError            root; the CLI prints its message as one line and exits with status 2
├── ConfigError          a config file is missing or invalid (terminal: fix the file)
└── BrokerError          Kafka problems
    ├── BrokerUnreachable    no answer from the bootstrap address (transient: start the broker)
    └── BrokerStartError     the embedded broker could not start (port taken, binary missing)
"""


class TokenopsError(Exception):
    pass


class ConfigError(TokenopsError):
    pass


class BrokerError(TokenopsError):
    pass


class BrokerUnreachable(BrokerError):
    pass


class BrokerStartError(BrokerError):
    pass
