"""``python -m defectgen.cli ...``: the same as the ``defectgen`` command."""
import sys

from defectgen.cli.main import main

sys.exit(main())
