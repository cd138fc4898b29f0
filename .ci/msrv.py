#!/usr/bin/env python3
"""Checks the declared rust-version without a second toolchain (none can be installed here).

Two halves: clippy's `incompatible_msrv` lint (run by the lint step, which reads
`rust-version` from Cargo.toml) refuses standard-library APIs newer than it; this script refuses
any locked dependency whose own `rust-version` is newer. Together they catch the two ways the
declared version stops building: our code using a newer API, or a dependency update that needs a
newer compiler. Language features newer than the declared version are not caught; building with
that exact toolchain would be the complete check.
"""
import json
import subprocess
import sys


def version(text):
    parts = [int(p) for p in text.split(".")]
    return tuple(parts + [0] * (3 - len(parts)))


meta = json.loads(
    subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--locked"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
)
root = next(p for p in meta["packages"] if p["name"] == "tripwire")
declared = root["rust_version"]
newer = [
    (p["name"], p["version"], p["rust_version"])
    for p in meta["packages"]
    if p.get("rust_version") and version(p["rust_version"]) > version(declared)
]
if newer:
    for name, ver, rv in newer:
        print(f"{name} {ver} needs rust {rv}, newer than our rust-version {declared}")
    sys.exit(1)
print(f"rust-version {declared}: every locked dependency builds with it ({len(meta['packages'])} packages)")
