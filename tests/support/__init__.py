"""What the test modules share: servers, processes, API calls, checks and named waits.

Defined once here (fixtures once in tests/conftest.py); a test module imports from here, never
from another test module or from conftest.
"""
