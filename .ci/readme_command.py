"""Print the first ```bash block under a README heading, so CI runs the README's command as written.

Usage: python3 .ci/readme_command.py README.md "Quick start"
"""

import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
section = re.split(r"^## ", text, flags=re.M)
body = next((s for s in section if s.startswith(sys.argv[2])), None)
block = re.search(r"```bash\n(.*?)```", body or "", flags=re.S)
if block is None:
    sys.exit(f"readme_command: no ```bash block under '## {sys.argv[2]}' in {sys.argv[1]}")
print(block.group(1).strip())
