import sys

from unilseg.cli.train import main

sys.exit(main())
