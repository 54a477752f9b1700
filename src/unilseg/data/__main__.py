import sys

from unilseg.data.cli import main

sys.exit(main())
