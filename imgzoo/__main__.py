import sys

from imgzoo.cli.main import main

sys.exit(main())
