"""``python -m examples.http_service``: see run.py."""

from examples.http_service.run import main

main()
