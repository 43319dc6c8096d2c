"""Entry point: run the app; render every error once; turn surprises into a short message and a hint."""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    import typer

    click = _click_exceptions()

    from lorahub_cli.errors import EXIT_REJECTED, EXIT_USAGE, LoraError, UsageError
    from lorahub_cli.output import Output

    args = sys.argv[1:] if argv is None else [str(a) for a in argv]
    # commands render their own results and errors (app.dispatch); this one is for what escapes them:
    # argument errors, and surprises. Scripts that pass --json read those from stdout too.
    out = Output(json="--json" in args)
    try:
        from lorahub_cli.app import app_for

        result = app_for(args)(args=args, prog_name="lora", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except LoraError as err:
        out.error(err)
        code = err.exit_code
    except typer.Abort:
        out.err.print("aborted")
        code = 130
    except KeyboardInterrupt:
        code = 130
    except click.ClickException as err:
        _show(err)
        code = err.exit_code if err.exit_code else EXIT_USAGE
        if out.json:
            out.error(UsageError(err.format_message(), hint=_help_hint(err)))
    except typer.Exit as err:
        code = err.exit_code
    except BrokenPipeError:
        # `lora list | head`: the reader went away; that is not our failure
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    except Exception as err:  # last resort: never a raw traceback unless asked for
        if os.environ.get("LORAHUB_DEBUG") == "1":
            raise
        out.error(LoraError(f"unexpected {type(err).__name__}: {err}", code="internal",
                            hint="Run again with LORAHUB_DEBUG=1 for the traceback, and please report it."))
        code = EXIT_REJECTED
    return code


def _show(err) -> None:
    """click's own message (usage and error), with the user's text in it (an unknown option, a bad value)
    escaped like all human output."""
    import io

    from lorahub_cli.output import clean

    text = io.StringIO()
    err.show(file=text)
    sys.stderr.write("".join(clean(line) + "\n" for line in text.getvalue().rstrip("\n").split("\n")))
    sys.stderr.flush()


def _help_hint(err) -> str:
    ctx = getattr(err, "ctx", None)
    command = ctx.command_path if ctx is not None else "lora"
    return f"Run `{command} --help` for the options."


def _click_exceptions():
    """Typer >= 0.20 vendors click as typer._click; older releases use the click package."""
    try:
        from typer._click import exceptions
    except ImportError:  # pragma: no cover - depends on the installed typer
        from click import exceptions
    return exceptions


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
