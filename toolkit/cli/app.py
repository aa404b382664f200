"""The Typer application and its error handling: one line on stderr and exit 2 for bad input."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer import _click as click
from typer.core import TyperGroup

from toolkit import __version__
from toolkit.cli.options import FLAGS
from toolkit.errors import ToolkitError, is_out_of_memory


def fail(message: str, exit_code: int = 2) -> None:
    """Print one line on stderr, naming the problem and what to do."""
    sys.stderr.write(f"toolkit: error: {' '.join(message.split())}\n")
    sys.stderr.flush()
    raise SystemExit(exit_code)


COMMAND_ORDER = ("params", "load-weights", "latency", "ablate", "layernorm-compare", "matmul")
"""The order of ``toolkit --help``: the README's, from a model's size to the parallel product."""


class ToolkitGroup(TyperGroup):
    """Runs commands non-standalone so that every failure is turned into one line and a status."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = super().list_commands(ctx)
        rank = {name: i for i, name in enumerate(COMMAND_ORDER)}
        return sorted(names, key=lambda name: rank.get(name, len(rank)))

    def _quiet_flags(self) -> None:
        """Flags take no value, so help shows no type for them (Typer would print ``<bool>``)."""
        for command in (self, *self.commands.values()):
            for param in command.get_params(click.Context(command)):
                if getattr(param, "is_flag", False) and param.metavar is None:
                    param.metavar = ""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        self._quiet_flags()
        try:
            status = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except typer.TyperException as exc:  # usage errors: bad or missing options and values
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "toolkit"
            message = exc.format_message().replace("Value error, ", "")
            fail(f"{message} (see '{where} --help')", exc.exit_code)
        except typer.Abort:
            sys.stderr.write("toolkit: interrupted\n")
            raise SystemExit(130) from None
        except ToolkitError as exc:
            fail(exc.describe(FLAGS))
        except (MemoryError, RuntimeError) as exc:  # torch.OutOfMemoryError is a RuntimeError
            if not is_out_of_memory(exc):
                raise
            fail(
                f"ran out of memory: {str(exc).splitlines()[0][:200]}; lower the model's size, --seq-len or "
                "--batch, or use a smaller --dtype"
            )
        except BrokenPipeError:
            raise SystemExit(1) from None
        code = status if isinstance(status, int) else 0
        if standalone_mode:
            raise SystemExit(code)
        return code


app = typer.Typer(
    cls=ToolkitGroup,
    add_completion=False,
    rich_markup_mode="rich",
    help="Measured, verified answers about small transformers: size, speed, ablations, "
    "LayerNorm, checkpoints and parallel matrix products.",
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"toolkit {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()
