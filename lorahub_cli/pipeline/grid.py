"""Comparison grids: one base loaded once, images along two axes among adapters, weights, seeds and prompts.

    spec = GridSpec(base="sd15", adapters=["style", "face"], weights=[0, 0.5, 1], seeds=[1], prompts=["a cat"])
    result = make_grid(lib, spec, Path("grid.png"))

Each cell is generated on the same pipeline, its adapter set switched by the exact undo (cells are made in an
order that switches as rarely as possible), and written as its own PNG with the full recipe (so
`lora generate --from CELL.png` makes it again) into ``<stem>-cells/``. The labelled grid image, a JSON sidecar
(every cell's file and recipe) and an HTML contact sheet (click a cell to see its recipe) are written beside
the grid, each published atomically.
"""

from __future__ import annotations

import html
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from lorahub_cli.errors import UsageError

AXES = ("adapters", "weights", "seeds", "prompts")
MAX_CELLS = 400
LABEL_HEIGHT = 24
LABEL_WIDTH = 160


@dataclass
class GridSpec:
    base: str
    adapters: list[str]                       # refs; ":W" gives an adapter its own weight (used when no --weights)
    weights: list[float] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    rows: Optional[str] = None                 # an axis name, or None: chosen from the axes that vary
    cols: Optional[str] = None
    negative_prompt: str = ""
    steps: Optional[int] = None
    guidance: Optional[float] = None
    size: tuple[Optional[int], Optional[int]] = (None, None)
    scheduler: Optional[str] = None
    device: str = "auto"
    dtype: str = "auto"


@dataclass
class Cell:
    row: int
    col: int
    adapters: dict[str, float]               # ref -> weight (empty: the bare base)
    seed: int
    prompt: str
    file: Optional[Path] = None
    recipe: Optional[dict] = None
    seconds: float = 0.0
    image: Any = field(default=None, repr=False)   # held only until the grid image is composed


@dataclass
class GridResult:
    image: Path
    sidecar: Path
    sheet: Path
    cells_dir: Path
    rows: dict[str, Any]
    cols: dict[str, Any]
    cells: list[Cell]
    seconds: float
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"image": str(self.image), "sidecar": str(self.sidecar), "sheet": str(self.sheet),
                "cells_dir": str(self.cells_dir), "rows": self.rows, "cols": self.cols, "seconds": self.seconds,
                "cells": [_cell_dict(c) for c in self.cells], "warnings": self.warnings}


def _cell_dict(c: Cell) -> dict:
    return {"row": c.row, "col": c.col, "file": str(c.file) if c.file else None, "seconds": round(c.seconds, 3),
            "recipe": c.recipe}


def _values(spec: GridSpec, axis: str) -> list:
    return {"adapters": spec.adapters, "weights": spec.weights, "seeds": spec.seeds, "prompts": spec.prompts}[axis]


def choose_axes(spec: GridSpec) -> tuple[Optional[str], Optional[str]]:
    """(rows, cols): the given ones, checked; else the axes with more than one value, in AXES order. Several
    adapters left off both axes are stacked in every cell; any other axis with several values that is neither
    rows nor cols is a usage error (a grid has two dimensions)."""
    for name in (spec.rows, spec.cols):
        if name is not None and name not in AXES:
            raise UsageError(f"unknown grid axis {name!r}; use {', '.join(AXES)}")
    if spec.rows is not None and spec.rows == spec.cols:
        raise UsageError(f"--rows and --cols are both {spec.rows}; pick two different axes")
    varying = [a for a in AXES if len(_values(spec, a)) > 1]
    chosen = [a for a in (spec.rows, spec.cols) if a is not None]
    left = [a for a in varying if a not in chosen]
    rows = spec.rows if spec.rows is not None else (left.pop(0) if left else None)
    cols = spec.cols if spec.cols is not None else (left.pop(0) if left else None)
    if "adapters" in left:   # several adapters, both axes taken by others: they are stacked in every cell
        left.remove("adapters")
    if left:
        raise UsageError(f"{', '.join(left)} also vary, but a grid has two axes ({rows} and {cols})",
                         hint="Give one value for the other axes, or pick the two with --rows and --cols.")
    return rows, cols


def plan(spec: GridSpec) -> tuple[Optional[str], Optional[str], list[Cell]]:
    """The axes and every cell's adapter set, seed and prompt (nothing loaded)."""
    from lorahub_cli.values import parse_weighted

    if not spec.prompts:
        raise UsageError("give a prompt (--prompt; repeat it for a prompts axis)")
    if not spec.seeds:
        raise UsageError("give a seed (--seeds 1 or --seeds 1,2,3): a grid compares on fixed noise")
    rows, cols = choose_axes(spec)
    parsed = [parse_weighted(a) for a in spec.adapters]
    row_values = _values(spec, rows) if rows else [None]
    col_values = _values(spec, cols) if cols else [None]
    if len(row_values) * len(col_values) > MAX_CELLS:
        raise UsageError(f"{len(row_values)} x {len(col_values)} cells is more than {MAX_CELLS}")
    cells = []
    for i, rv in enumerate(row_values):
        for j, cv in enumerate(col_values):
            at = {rows: i, cols: j}
            pick = {a: _values(spec, a)[at[a]] if a in at else (_values(spec, a) or [None])[0] for a in AXES}
            weight = pick["weights"] if spec.weights else None
            chosen = [parsed[at["adapters"]]] if "adapters" in at else parsed
            adapters = {}
            for ref, own in chosen:
                w = own if weight is None else weight
                if w != 0:   # weight 0 is the bare base: nothing to merge (and the recipe says so)
                    adapters[ref] = w
            cells.append(Cell(row=i, col=j, adapters=adapters, seed=pick["seeds"], prompt=pick["prompts"]))
    return rows, cols, cells


def _label(axis: Optional[str], value: Any) -> str:
    if axis is None:
        return ""
    if axis == "weights":
        return f"weight {value:g}"
    if axis == "seeds":
        return f"seed {value}"
    return str(value)


def make_grid(lib: Any, spec: GridSpec, output: Path, *, force: bool = False,
              advance: Callable[..., None] = lambda n=1, description=None: None) -> GridResult:
    """Generate every cell on one pipeline and write the grid, its cells, sidecar and contact sheet."""
    from lorahub_cli.pipeline.api import make_recipe
    from lorahub_cli.pipeline.generate import DEFAULT_GUIDANCE, DEFAULT_STEPS, GenerateSettings, generate_image

    start = time.perf_counter()
    rows, cols, cells = plan(spec)
    output = Path(output)
    cells_dir = output.with_name(output.stem + "-cells")
    cells_dir.mkdir(parents=True, exist_ok=True)
    # cells grouped by adapter set: each set is merged once, then undone exactly for the next
    order = sorted(cells, key=lambda c: (sorted(c.adapters.items()), c.row, c.col))
    pipe = lib.pipeline(spec.base, order[0].adapters, device=spec.device, dtype=spec.dtype)
    current = order[0].adapters
    warnings = list(pipe.lorahub.warnings)
    for cell in order:
        t0 = time.perf_counter()
        if cell.adapters != current:
            lib.set_adapters(pipe, cell.adapters)
            current = cell.adapters
            warnings += [w for w in pipe.lorahub.warnings if w not in warnings]
        settings = GenerateSettings(
            prompt=cell.prompt, negative_prompt=spec.negative_prompt,
            steps=spec.steps if spec.steps is not None else DEFAULT_STEPS,
            guidance=spec.guidance if spec.guidance is not None else DEFAULT_GUIDANCE, seed=cell.seed,
            width=spec.size[0], height=spec.size[1], scheduler=spec.scheduler).resolved(pipe)
        image, _blanked = generate_image(pipe, settings)
        recipe = make_recipe(pipe, settings)
        cell.file = _publish_png(cells_dir / f"r{cell.row:02d}-c{cell.col:02d}.png", image, recipe)
        cell.recipe = recipe.to_dict()
        cell.image = image
        cell.seconds = time.perf_counter() - t0
        advance(1, description=f"row {cell.row + 1}, column {cell.col + 1}")
    row_info = {"axis": rows, "labels": [_label(rows, v) for v in (_values(spec, rows) if rows else [None])]}
    col_info = {"axis": cols, "labels": [_label(cols, v) for v in (_values(spec, cols) if cols else [None])]}
    _publish_bytes(output, _compose(cells, row_info["labels"], col_info["labels"]))
    result = GridResult(image=output, sidecar=output.with_suffix(".json"), sheet=output.with_suffix(".html"),
                        cells_dir=cells_dir, rows=row_info, cols=col_info, cells=cells,
                        seconds=round(time.perf_counter() - start, 3), warnings=warnings)
    for cell in cells:
        cell.image = None
    _publish_bytes(result.sidecar, json.dumps({"base": spec.base, **result.to_dict()}, indent=2).encode())
    _publish_bytes(result.sheet, contact_sheet(result).encode())
    return result


def _publish_png(path: Path, image: Any, recipe: Any) -> Path:
    from lorahub_cli.pipeline.recipe import png_info

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=png_info(recipe))
    return _publish_bytes(path, buffer.getvalue())


def _publish_bytes(path: Path, data: bytes) -> Path:
    from registry.publish import publish_file

    return publish_file(path, data)


def _compose(cells: Sequence[Cell], row_labels: list[str], col_labels: list[str]) -> bytes:
    """The cells side by side with the row labels on the left and the column labels on top."""
    from PIL import Image, ImageDraw

    w, h = cells[0].image.size
    left = LABEL_WIDTH if any(row_labels) else 0
    top = LABEL_HEIGHT if any(col_labels) else 0
    sheet = Image.new("RGB", (left + w * len(col_labels), top + h * len(row_labels)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, text in enumerate(col_labels):
        draw.text((left + j * w + 4, 4), text[:40], fill="black")
    for i, text in enumerate(row_labels):
        draw.text((4, top + i * h + 4), text[:24], fill="black")
    for c in cells:
        sheet.paste(c.image, (left + c.col * w, top + c.row * h))
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


def contact_sheet(result: GridResult) -> str:
    """An HTML page of the grid: clicking a cell shows its recipe and the command that makes it again."""
    e = html.escape
    by_pos = {(c.row, c.col): c for c in result.cells}
    head = "".join(f"<th>{e(t)}</th>" for t in result.cols["labels"])
    body = []
    for i, label in enumerate(result.rows["labels"]):
        tds = []
        for j in range(len(result.cols["labels"])):
            c = by_pos[(i, j)]
            rel = f"{result.cells_dir.name}/{c.file.name}"
            tds.append(f'<td><details><summary><img src="{e(rel)}" alt="row {i + 1}, column {j + 1}"></summary>'
                       f"<pre>{e(json.dumps(c.recipe, indent=2, ensure_ascii=False))}</pre>"
                       f"<code>lora generate --from {e(str(c.file))}</code></details></td>")
        body.append(f"<tr><th>{e(label)}</th>{''.join(tds)}</tr>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>lora grid</title><style>"
            "img{max-width:256px;cursor:pointer}pre{white-space:pre-wrap;max-width:256px;font-size:11px}"
            "summary{list-style:none}td{vertical-align:top}</style></head><body>"
            f"<p>rows: {e(str(result.rows['axis'] or '-'))}, columns: {e(str(result.cols['axis'] or '-'))}. "
            "Click a cell for its recipe.</p>"
            f"<table><tr><th></th>{head}</tr>{''.join(body)}</table></body></html>\n")
