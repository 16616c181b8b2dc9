"""How the command line writes numbers: scores, dollars, durations, rates, and lines that fit."""

from __future__ import annotations

DASH = "—"


def score(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def change(before: float | None, after: float | None) -> str:
    """``initial → best``, each score right-aligned in 5 so that the arrows line up."""
    return f"{score(before):>5} → {score(after):>5}"


def usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def si(value: float) -> str:
    big = next(((v, s) for v, s in ((1e9, "G"), (1e6, "M"), (1e3, "k")) if value >= v), None)
    return f"{value:.0f}" if big is None else f"{value / big[0]:.1f}{big[1]}"


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def fit(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters, the last one an ellipsis when cut."""
    return text if len(text) <= width else text[: width - 1] + "…" if width > 0 else ""


def pack(parts: list[str], width: int, sep: str = " · ") -> list[str]:
    """Join ``parts`` with ``sep`` into as few lines of at most ``width`` as whole parts allow;
    a part longer than ``width`` is cut."""
    lines: list[str] = []
    for part in parts:
        if lines and len(lines[-1]) + len(sep) + len(part) <= width:
            lines[-1] += sep + part
        else:
            lines.append(fit(part, width))
    return lines
