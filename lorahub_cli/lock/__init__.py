"""Reproducible sets: a lockfile names adapters by sha256 with the sources to fetch them again.

``build`` makes a ``LockFile`` from library entries (names, a tag) or a recipe's adapters; ``toml`` writes
and reads it (a small, reviewable TOML file with a format version); ``install`` brings what is missing into
the library through pull's own sources (``lorahub_cli.sources``), checking every sha256 before anything is
stored; ``bundle`` packs entries and their lock into a tar for machines without network, and reads one
back safely. Nothing here prints: the commands render the results.
"""
