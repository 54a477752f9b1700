import sys

from unilseg.cli.eval import main

sys.exit(main())
