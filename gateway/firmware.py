"""``linli firmware validate PATH…``: check device profiles and site configs before deploying;
``linli firmware try PROFILE --input FILE``: decode a capture with a profile (gateway/tryout.py).

Each PATH is a YAML file or a directory searched recursively. A file with a top-level
``profile:`` key is a device profile; one with ``version:`` and ``gateway:`` is a site config
(checked with the profiles its ``profile_dirs`` name). Every problem is printed as
``file:line: key.path: reason`` and the exit status is 2 if there was any, else 0.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from collectors.profile import ModbusProfile, Profile, is_profile_file, load_profile
from collectors.yamlconf import ConfigError, Problem, key_lines
from gateway.site import load_site_with_profiles
from gateway.tryout import as_json, try_capture

__all__ = ["main", "validate"]


def _files(paths: Iterable[Path]) -> tuple[list[Path], list[Problem]]:
    files: list[Path] = []
    problems: list[Problem] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.y*ml") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            problems.append(Problem(str(path), None, "", "no such file or directory"))
    return files, problems


def _is_site(path: Path) -> bool:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return False
    keys = {line.split(":", 1)[0] for line in lines if line and not line[0].isspace()}
    return {"version", "gateway"} <= keys


def _warnings(path: Path, profile: Profile) -> list[Problem]:
    """Legal but questionable: what a user most likely meant otherwise (printed, not fatal)."""
    if not isinstance(profile, ModbusProfile):
        return []
    lines = key_lines(path.read_text(encoding="utf-8"))
    out: list[Problem] = []
    for i, p in enumerate(profile.points):
        for base, table in ((40001, "holding"), (30001, "input")):
            if base <= p.address <= base + 9998 and p.table == table:
                key = f"points[{i}].address"
                out.append(Problem(str(path), lines.get("." + key), key,
                    f"warning: {p.address} looks like the {base // 10000}xxxx register number; "
                    f"the PDU address of register {p.address} is {p.address - base}"))  # fmt: skip
    return out


def validate(paths: Iterable[Path]) -> tuple[list[str], list[Problem], list[Problem]]:
    """Check every file; return (one summary line per good file, every problem found, the
    warnings: legal but questionable, see :func:`_warnings`)."""
    files, problems = _files(paths)
    warnings: list[Problem] = []
    good: list[str] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            if is_profile_file(path):
                profile: Profile = load_profile(path)
                if profile.id in seen:
                    reason = f"profile id {profile.id!r} is also used by {seen[profile.id]}"
                    line = key_lines(path.read_text(encoding="utf-8")).get(".id")
                    problems.append(Problem(str(path), line, "id", reason))
                    continue
                seen[profile.id] = path
                protocol = profile.__struct_config__.tag
                good.append(f"{path}: profile {profile.id} ({profile.kind}, {protocol})")
                warnings.extend(_warnings(path, profile))
            elif _is_site(path):
                site, profiles = load_site_with_profiles(path)
                devices = sum(len(c.devices) for c in site.collectors)
                good.append(
                    f"{path}: site {site.community}/{site.gateway} "
                    f"({len(site.collectors)} collectors, {devices} devices, "
                    f"{len(profiles)} profiles available)"
                )
            elif not path.read_text(encoding="utf-8", errors="replace").strip():
                problems.append(Problem(str(path), None, "", "the file is empty"))
            elif path.suffix in (".yaml", ".yml"):
                problems.append(
                    Problem(
                        str(path),
                        None,
                        "",
                        "neither a device profile (starts with 'profile: 1') nor a site "
                        "config (has 'version:' and 'gateway:')",
                    )
                )
        except ConfigError as exc:
            problems.extend(exc.problems)
    return good, problems, warnings


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``linli firmware``."""
    p = argparse.ArgumentParser(prog="linli firmware", description="device profiles and sites")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    v = sub.add_parser("validate", help="check profiles and site configs; print every problem")
    v.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    t = sub.add_parser("try", help="decode a capture with a profile; print the items")
    t.add_argument("profile", type=Path, metavar="PROFILE")
    t.add_argument("--input", type=Path, required=True, metavar="FILE",
                   help="a register dump, a line capture or JSON messages (see docs)")  # fmt: skip
    t.add_argument("--t0", type=int, default=1_795_300_000_000,
                   help="epoch ms of the first poll, frame or message "
                        "(default 1795300000000, 2026-11-22 06:26:40 +08:00)")  # fmt: skip
    t.add_argument("--json", action="store_true", help="one JSON object with everything")
    args = p.parse_args(argv)
    if args.action == "try":
        return _try(args)
    good, problems, warnings = validate(args.paths)
    for line in good:
        print(f"OK {line}")
    for warning in warnings:
        print(warning, file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 2
    if not good:
        where = ", ".join(str(p) for p in args.paths)
        print(f"{where}: no YAML files found", file=sys.stderr)
        return 2
    return 0


def _try(args: argparse.Namespace) -> int:
    if not is_profile_file(args.profile):
        print(f"{args.profile}: not a device profile (it has no 'profile: 1' line); "
              "linli firmware try takes a profile and a capture", file=sys.stderr)  # fmt: skip
        return 2
    try:
        profile = load_profile(args.profile)
        result = try_capture(profile, args.input, t0=args.t0)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(as_json(result), ensure_ascii=False, indent=2))
    else:
        for line in result.lines():
            print(line)
    for problem in result.problems:
        print(f"problem: {problem}", file=sys.stderr)
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items()))
    print(f"{len(result.items)} item(s); {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
