"""Shared plumbing: errors, range rules, argument parsing, atomic writes, user files, secrets, run folders."""
