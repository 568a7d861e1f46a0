import sys

from minitorch_cifar.cli import main

sys.exit(main())
