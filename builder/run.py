"""`python builder/run.py ...` (or under `accelerate launch`): the same as `action100m build ...`.

Kept so that `accelerate launch builder/run.py` works from a checkout; an installed package has
`action100m build` and `accelerate launch -m action100m_hf build`.
"""

import sys

from action100m_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
