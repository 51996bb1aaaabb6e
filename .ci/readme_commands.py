"""Print the commands of one README section as a shell script, for CI to run as written.

    python .ci/readme_commands.py "Set up"        # the main job of the set-up command
    python .ci/readme_commands.py "A short tour"

Only fenced bash/sh blocks count; comments after `#` are dropped; in a line joined with `&&` the
last part is taken (`... && .venv/bin/edgepose convert ...` -> `edgepose convert ...`); kept are
`edgepose` commands and the shell lines around them (`NAME=value`, `echo ...`), not installs or pytest.
"""
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def section(text: str, heading: str) -> str:
    match = re.search(r"^#+ %s\s*$(.*?)(?=^#+ |\Z)" % re.escape(heading), text, re.M | re.S)
    if not match:
        sys.exit("README has no section %r" % heading)
    return match.group(1)


def commands(body: str) -> list:
    found = []
    for block in re.findall(r"^```(?:bash|sh)\n(.*?)^```", body, re.M | re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line.split("&&")[-1]).strip()
            line = re.sub(r"^\S*/bin/edgepose ", "edgepose ", line)
            if line.startswith(("edgepose ", "echo ")) or re.match(r"[A-Z_]+=", line):
                found.append(line)
    return found


if __name__ == "__main__":
    lines = commands(section(README.read_text(), sys.argv[1]))
    if not lines:
        sys.exit("README section %r has no edgepose command" % sys.argv[1])
    print("set -euo pipefail\n" + "\n".join(lines))
