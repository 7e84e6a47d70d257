import sys

from codelsp.cli import main

sys.exit(main())
