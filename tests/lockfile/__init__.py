"""Tests of gcbatch.lockfile, one file per module of the package."""
