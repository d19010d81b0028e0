"""The per-user adaptation gain after a fit: a histogram PNG and a sign test (for the report)."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor

from ..method.significance import sign_test
from .figures import histogram_panel, save_panels


def gain_sign_test(adapted: Tensor, before: Tensor) -> float:
    """Two-sided sign test of the users adaptation helped against those it hurt (paired
    ``[U]`` accuracies; unchanged users dropped)."""
    gain = adapted.double() - before.double()
    return sign_test(int((gain > 0).sum()), int((gain < 0).sum()))


def write_gain_histogram(path: Path, per_user: dict[str, tuple[Tensor, Tensor]]) -> None:
    """One histogram per group (seen, unseen) of per-user adapted minus w0 accuracy, in points,
    its title giving the shares helped and hurt and the sign test's p."""
    panels = []
    for group, (adapted, before) in per_user.items():
        gain = (adapted.double() - before.double()) * 100
        users = max(len(gain), 1)
        title = (
            f"{group} users: helped {int((gain > 0).sum()) / users:.0%}, hurt "
            f"{int((gain < 0).sum()) / users:.0%}; sign test p = "
            f"{gain_sign_test(adapted, before):.2g}"
        )
        panels.append(
            histogram_panel(
                gain.tolist(),
                title,
                "adapted minus w0, test accuracy (points)",
                markers=[(0.0, "")],
                centre=0.0,
            )
        )
    save_panels(path, panels)


def sign_test_line(gains: dict[str, dict], path: Path) -> str:
    """The report's line: each group's sign-test p, and where the histogram is."""
    tests = ", ".join(f"{group} p = {gain['sign_test_p']:.2g}" for group, gain in gains.items())
    return f"Sign test of users helped against hurt (unchanged dropped): {tests}; histogram: {path}"
