import sys

from unilseg.train.cli import main

sys.exit(main())
