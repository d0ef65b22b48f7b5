"""``eraser``'s entry point: run the command tree, turn failures into exit statuses."""

from __future__ import annotations

from collections.abc import Sequence

import typer

from api.cli.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, describe, fail


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``eraser`` with ``argv`` (default: the process's arguments); the exit status."""
    from api.cli.app import run  # noqa: PLC0415 - keeps `import api.cli` light

    try:
        result = run(argv)
    except typer.TyperException as exc:
        # A usage error (unknown option, bad value, missing argument) names its command.
        ctx = getattr(exc, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        fail(exc.format_message() + hint)
        return EXIT_ERROR
    except typer.Abort:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_OK  # the reader (head, less) went away
    except Exception as exc:
        message = describe(exc)
        if message is None:
            raise
        fail(message)
        return EXIT_ERROR
    return result if isinstance(result, int) else EXIT_OK
