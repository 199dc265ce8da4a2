"""Subcommands of the ``reasoner`` CLI; each module has add_arguments(parser) and main(args)."""
