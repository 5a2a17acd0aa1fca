"""The command line: ``wanhook`` and its subcommands (``main``), the HTTP client they use, the demo,
and the EventBridge setup."""
