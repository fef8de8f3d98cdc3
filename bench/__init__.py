"""The benchmark of issue 6: the real service (granian, celery worker and beat, Redis) against
a lean receiver on 127.0.0.1. Run it with `make bench`; see docs/benchmarks.md."""
