"""One module per command, each with a plain `run(cfg) -> results` that the CLI and the tests call."""
