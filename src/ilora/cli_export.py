"""``ilora export RUN --format peft|merged`` (registered in ``ilora.cli``)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from ilora.cli_common import USER_ERRORS
from ilora.cli_common import console
from ilora.cli_common import fail


class Format(StrEnum):
    """The export forms (see :mod:`ilora.export`)."""

    peft = "peft"
    merged = "merged"


def export_model(
    run: Annotated[Path, typer.Argument(help="a finished run directory (`ilora run --out`)")],
    format_: Annotated[
        Format,
        typer.Option("--format", help="peft: adapter for plain peft; merged: full model"),
    ] = Format.peft,
    out: Annotated[
        Path | None, typer.Option(help="directory to write (default RUN/export-<format>)")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="replace a non-empty --out")] = False,
) -> None:
    """Export a run's global model: a PEFT adapter on the real base, or a merged full model."""
    dest = out or run / f"export-{format_.value}"
    try:
        if dest.exists() and any(dest.iterdir()) and not overwrite:
            raise FileExistsError(f"{dest} is not empty; give another --out or --overwrite")
        from ilora.export import rebuild

        rebuilt = rebuild(run)
        if format_ is Format.peft:
            from ilora.export.peft import export_peft

            export_peft(rebuilt, dest)
        else:
            from ilora.export.merged import export_merged

            export_merged(rebuilt, dest)
    except USER_ERRORS as err:
        fail(err)
    console.print(f"written: {dest} (loading code in {dest / 'README.md'})")
