import sys

from gimp_draggan.cli import main

sys.exit(main())
