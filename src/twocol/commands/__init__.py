"""The command line's layer: one module per `twocol` command, each with HELP, `add_arguments(parser)`
and `run(args) -> exit code`. They parse, call the library's plain functions and print; the
library never imports them (twocol.cli puts them together)."""
