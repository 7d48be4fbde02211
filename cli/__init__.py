"""The ``marketarena`` command line: one module per command group, each registering its parsers.

``main(argv)`` returns the exit code, so tests drive it in-process.
"""

from marketarena.cli.app import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_INVALID_DATA,
    EXIT_OK,
    build_parser,
    main,
)

__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_INVALID_DATA", "EXIT_OK", "build_parser", "main"]
