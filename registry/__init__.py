"""The adapter library: a SQL registry of adapters plus a content-addressed blob store.

Layout: ``home`` (where things live), ``names`` (what a valid name is), ``records`` (the plain dataclasses
the API returns), ``store`` (blobs by sha256, atomic writes), ``models`` + ``migrations`` (the schema),
``db`` (engine, sessions, automatic migration, and the refusal of a damaged database), ``snapshot`` (the
stdlib read path, also on a read-only home), ``failures`` (a full disk, a read-only home or a damaged file
as ``DiskFull`` / ``ReadOnly`` / ``DamagedLibrary``), ``reads`` (plain-SQL queries shared by every backend),
``doctor`` (checks and safe repairs; orphans go to a quarantine folder), ``api`` (``Registry``: add / get /
list / remove / tag / rename / set / doctor).

Importing this package is free: the modules load what they need when they are used, so ``lora list`` on a
SQLite library never pays for SQLAlchemy. Nothing here imports torch, diffusers, typer or rich.
"""
