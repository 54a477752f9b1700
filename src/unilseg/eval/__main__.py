import sys

from unilseg.eval.cli import main

sys.exit(main())
