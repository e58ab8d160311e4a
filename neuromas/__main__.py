import sys

from neuromas.cli import main

sys.exit(main())
