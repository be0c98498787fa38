"""Fill the cluster manifests' ${NAME} placeholders: `python cluster/render.py [--params F] [--out DIR]`.

Values come from the params file (KEY=VALUE lines), overridden by environment variables of the same
name. `${SERVE_CONFIG_V2}` on a line of its own becomes the Serve config file named by SERVE_CONFIG,
indented like the placeholder (the RayService inlines it). A placeholder without a value is an error,
so nothing reaches `kubectl apply` half-filled.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
INLINE = "SERVE_CONFIG_V2"


def read_params(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (blank lines and `#` comments skipped), then the environment's overrides."""
    params = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not PLACEHOLDER.fullmatch("${" + key.strip() + "}"):
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        params[key.strip()] = value.strip()
    return {key: os.environ.get(key, value) for key, value in params.items()}


def render(text: str, params: dict[str, str], name: str = "manifest") -> str:
    """The text with every placeholder filled; ValueError naming the ones that have no value."""
    lines = []
    for line in text.splitlines():
        if line.strip() == "${" + INLINE + "}":
            indent = line[: len(line) - len(line.lstrip())]
            inlined = (ROOT / params["SERVE_CONFIG"]).read_text().splitlines()
            lines += [indent + row if row.strip() else "" for row in inlined]
        else:
            lines.append(line)
    text = "\n".join(lines) + "\n"
    missing = sorted({m for m in PLACEHOLDER.findall(text) if m not in params})
    if missing:
        raise ValueError(f"{name}: no value for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda m: params[m.group(1)], text)


def templates() -> list[Path]:
    return sorted(
        [*(ROOT / "cluster" / "kuberay").glob("*.yaml"), *(ROOT / "cluster" / "launcher").glob("*.yaml")]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--params", type=Path, default=ROOT / "cluster" / "params.env", help="KEY=VALUE file."
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "build" / "cluster", help="Folder for the results."
    )
    args = parser.parse_args(argv)
    params = read_params(args.params)
    for template in templates():
        target = args.out / template.parent.name / template.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.write_text(render(template.read_text(), params, str(template.relative_to(ROOT))))
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
        print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
