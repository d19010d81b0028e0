"""``mrm diagnose``'s outputs: the printed lines, ``diagnose.json`` and ``diagnose.png``."""

from __future__ import annotations

from pathlib import Path

from ..training.figures import bars_panel, histogram_panel, save_panels
from ..training.report import write_json_atomically


def _pct(value: float) -> str:
    return f"{100 * value:.0f}%"


def data_lines(data: dict) -> list[str]:
    q = data["pairs_per_user"]
    return [
        f"users {data['users']}; training pairs {data['pairs']} ({data['held_out_pairs']} held "
        f"out, in {data['units']} units); pairs per user: min {q['q0']:.0f}, "
        f"median {q['q50']:.0f}, 90% {q['q90']:.0f}, max {q['q100']:.0f}",
        f"items {data['items']}, judged by several users {data['items_judged_by_several_users']} "
        f"({data['raters_per_item']:.1f} raters per item); pairs whose two items another user "
        f"also judged: {_pct(data['pairs_another_user_judged'])}",
    ]


def ceiling_lines(figures: dict) -> list[str]:
    consensus, glob = figures["consensus"], figures["global_model"]["accuracy"]
    verdict = figures["verdict"]
    line = (
        f"consensus ceiling {consensus['ceiling']:.3f} (the other users' consensus on each "
        f"held-out pair; coverage {_pct(consensus['coverage'])}, ties "
        f"{_pct(consensus['ties'])}: uncovered and tied pairs count one half"
    )
    if consensus["accuracy_where_decided"] == consensus["accuracy_where_decided"]:
        line += f"; {consensus['accuracy_where_decided']:.3f} where it decides"
    line += ")"
    if verdict["encoder_room_points"] is None:
        line += ": unmeasured here, too few items have other raters"
    lines = [line, f"global model on this encoder {glob:.3f} (the same held-out pairs)"]
    room = verdict["encoder_room_points"]
    if room is not None and room >= 0:
        lines[-1] += f": {room:.1f} points below the ceiling, the room an encoder can still win"
    elif room is not None:
        lines[-1] += (
            f": {-room:.1f} points above the ceiling, whose consensus of "
            f"{figures['data']['raters_per_item']:.1f} raters per item is itself noisy"
        )
    if "oracle_accuracy" in figures:
        lines.append(f"oracle (the source's true rewards) {figures['oracle_accuracy']:.3f}")
    return lines


def test_lines(test: dict) -> list[str]:
    gain = 100 * test["own_minus_shared"]
    chosen = f", rank {test['own_rank']}, L2 {test['own_l2']:g}" if "own_rank" in test else ""
    return [
        f"own judgements ({test['own_predictor']}{chosen}) against the {test['shared_predictor']}"
        f" on held-out pairs: {test['own_accuracy']:.3f} vs {test['shared_accuracy']:.3f} "
        f"({gain:+.1f} points; own wins for {_pct(test['own_wins'])} of {test['users']} users, "
        f"loses for {_pct(test['own_loses'])})",
        f"permutation test ({test['permutations']} shuffles of {test['permuted']}): "
        f"p = {test['p_value']:.3g}; shuffled, own minus shared averages "
        f"{100 * test['null_mean']:+.1f} points (95% below {100 * test['null_q95']:+.1f})",
    ]


def group_lines(groups: dict) -> list[str]:
    pooled = groups["where_both_cover"]
    lines = [
        f"consensus by group ({groups['group_by']}; {groups['users_with_a_group']} users have "
        "one): the group's other members vs everyone else, on the group's held-out pairs "
        "where both have raters (ceilings, with uncovered pairs at one half, in brackets)"
    ]
    rows = groups["groups"]
    width = max([len(g) for g in rows] + [5])
    for name, row in rows.items():
        lines.append(
            f"  {name:<{width}} {row['users']:>4} users {row['pairs_both_cover']:>5} pairs  "
            f"group {row['group_where_both_cover']:.3f} vs everyone "
            f"{row['everyone_where_both_cover']:.3f}  (ceilings {row['group_ceiling']:.3f} at "
            f"{_pct(row['group_coverage'])} coverage vs {row['everyone_ceiling']:.3f} at "
            f"{_pct(row['everyone_coverage'])})"
        )
    if not rows:
        lines.append("  no group has two or more users")
    elif pooled["pairs"]:
        better = "beats" if pooled["group"] > pooled["everyone"] else "does not beat"
        lines.append(
            f"  all groups, {pooled['pairs']} pairs: a group's consensus {better} everyone's "
            f"({pooled['group']:.3f} vs {pooled['everyone']:.3f})"
        )
    return lines


def summary_lines(figures: dict) -> list[str]:
    """What ``mrm diagnose`` prints, the verdict last."""
    lines = data_lines(figures["data"])
    if figures["shuffle_users"] != "none":
        how = "across pairs" if figures["shuffle_users"] == "pairs" else "within units"
        lines.insert(0, f"user ids shuffled {how} first (a check: expect no evidence)")
    lines += ceiling_lines(figures)
    lines += test_lines(figures["disagreement"])
    if "groups" in figures:
        lines += group_lines(figures["groups"])
    lines.append(f"verdict: {figures['verdict']['line']}")
    return lines


def write_outputs(figures: dict, out_dir: Path) -> tuple[Path, Path]:
    """``diagnose.json`` (every figure) and ``diagnose.png`` in ``out_dir``."""
    json_path, png_path = out_dir / "diagnose.json", out_dir / "diagnose.png"
    write_json_atomically(json_path, figures)
    test = figures["disagreement"]
    coverage = _pct(figures["consensus"]["coverage"])
    labels = [f"consensus ceiling ({coverage} covered)", "global model", "own judgements"]
    values = [
        figures["consensus"]["ceiling"],
        figures["global_model"]["accuracy"],
        test["own_accuracy"],
    ]
    if "oracle_accuracy" in figures:
        labels.append("oracle (true rewards)")
        values.append(figures["oracle_accuracy"])
    shared = "consensus" if test["statistic"] == "items" else "global"
    save_panels(
        png_path,
        [
            bars_panel(
                labels, values, "Held-out pairs of the training split", "user-level accuracy"
            ),
            histogram_panel(
                [100 * g for g in test["per_user_gap"]],
                f"Own judgements minus {shared}, per user",
                "accuracy points",
                markers=[(0.0, "")],
                centre=0.0,
            ),
            histogram_panel(
                [100 * v for v in test["null"]],
                f"Shuffled users ({len(test['null'])}): p = {test['p_value']:.3g}",
                "own minus shared, mean over users (points)",
                markers=[(100 * test["own_minus_shared"], "observed")],
                colour=(150, 150, 150),
                ylabel="shuffles",
            ),
        ],
    )
    return json_path, png_path
