"""`python -m action100m_hf COMMAND ...`: the `action100m` command line (also under `accelerate launch -m`)."""

import sys

from action100m_hf.cli import main

if __name__ == "__main__":
    sys.exit(main())
