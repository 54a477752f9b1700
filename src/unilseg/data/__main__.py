import sys

from unilseg.cli.data import main

sys.exit(main())
