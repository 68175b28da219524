import sys

from rtvi.cli import main

sys.exit(main())
