"""The table at the end of `edgebuild run`: what each target got, and whether it passed its checks.

Manifests with measurements get: artifact, precision, size, p50/p95 latency, fidelity, checks (✓/✗,
with the failed checks named) and a "chosen" marker for `best:` selections, whose losing candidates
are listed under the table with the reason they lost. Manifests without any checks get the plain
table: artifact, format, precision, size, sha256[:12].
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgebuild.output.report import (
    check_results,
    check_sentence,
    fmt_bytes,
    fmt_ms,
    fmt_pct,
    fmt_ratio,
    fmt_selection_value,
    get,
    num,
    text,
)

if TYPE_CHECKING:
    from edgebuild.output.manifest import Artifact, Manifest, Target


def print_table(manifest: Manifest, targets: list[str] | None = None, console: Any = None) -> None:
    """Print one table per target (all of the manifest's targets when `targets` is None)."""
    from rich.console import Console

    console = console or Console(highlight=False)
    all_targets = manifest.targets
    names = list(all_targets) if targets is None else [t for t in targets if t in all_targets]
    measured = any(a.checks is not None for n in names for a in all_targets[n].artifacts)
    for name in names:
        console.print(_measured_table(name, all_targets[name]) if measured else _plain_table(name, all_targets[name]))
        if measured:
            for line in _selection_lines(all_targets[name]):
                console.print(line)


def _plain_table(name: str, target: Target) -> Any:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(name), title_justify="left", box=None)
    for col in ("artifact", "format", "precision", "size", "sha256"):
        t.add_column(col, justify="right" if col == "size" else "left")
    for a in target.artifacts:
        cells = (a.path or a.step, a.format, a.precision, fmt_bytes(a.size), a.sha256[:12])
        t.add_row(*(Text(c) for c in cells))   # Text, not markup: names may contain '['
    return t


def _measured_table(name: str, target: Target) -> Any:
    from rich.table import Table
    from rich.text import Text

    chosen = target.chosen
    arts = target.artifacts
    states = [a.passed for a in arts]
    title = Text(name)
    if any(s is False for s in states):
        title.append("  ✗ fail", style="bold red")
    elif any(s is True for s in states):
        title.append("  ✓ pass", style="bold green")
    t = Table(title=title, title_justify="left", box=None)
    t.add_column("artifact")
    t.add_column("precision")
    t.add_column("size", justify="right")
    t.add_column("p50 ms", justify="right")
    t.add_column("p95 ms", justify="right")
    t.add_column("fidelity", justify="right")
    t.add_column("checks")
    for a in arts:
        lat = get(a.checks, "measurements", "latency_ms")
        fid = get(a.checks, "measurements", "fidelity")
        label = Text(a.path.rsplit("/", 1)[-1] or a.step)   # the target is the title
        if chosen is not None and a.step == chosen:
            label.append(" ★ chosen", style="bold cyan")
        fidelity = "–"
        if num(get(fid, "argmax_agreement")) is not None or num(get(fid, "cosine")) is not None:
            fidelity = f"{fmt_pct(get(fid, 'argmax_agreement'))} / cos {fmt_ratio(get(fid, 'cosine'))}"
        t.add_row(label, Text(a.precision), fmt_bytes(a.size), fmt_ms(get(lat, "p50")),
                  fmt_ms(get(lat, "p95")), fidelity, _checks_cell(a))
    return t


def _checks_cell(a: Artifact) -> Any:
    from rich.text import Text

    state = a.passed
    if state is None:
        return Text("no checks", style="dim")
    if state:
        return Text("✓", style="bold green")
    failed = [r for r in check_results(a.to_dict()) if r.get("passed") is not True]
    cell = Text("✗", style="bold red")
    if failed:
        cell.append(" " + "; ".join(check_sentence(r) for r in failed), style="red")
    return cell


def _selection_lines(target: Target) -> list[Any]:
    """'  best by latency: qdq; int8 failed: latency 63.1 ms > 50 ms; opt slower than qdq (...)'."""
    from rich.text import Text

    sel = target.selection
    if sel is None:
        return []
    by = text(sel.get("by")) or "?"
    chosen = sel.get("chosen")
    head = Text(f"  best by {by}: ", style="dim")
    if chosen is None:
        head.append("no candidate passed its checks; nothing chosen", style="bold red")
    else:
        head.append(text(chosen), style="bold cyan")
    lines = [head]
    cands: list[Any] = sel["candidates"] if isinstance(sel.get("candidates"), list) else []
    for c in cands:
        if not isinstance(c, dict) or (chosen is not None and c.get("step") == chosen):
            continue
        value = f" ({fmt_selection_value(c.get('value'), by, c.get('unit'))})" if num(c.get("value")) is not None else ""
        mark = Text("    ✗ " if c.get("passed") is not True else "    · ", style="red" if c.get("passed") is not True else "dim")
        mark.append(f"{text(c.get('step'))}{value}: {text(c.get('why'))}", style="dim")
        lines.append(mark)
    return lines
