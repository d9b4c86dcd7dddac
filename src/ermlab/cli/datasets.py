"""``ermlab datasets``: what can be loaded, where the cache is, and downloads."""

from __future__ import annotations

import argparse


def add_commands(commands) -> None:
    parser = commands.add_parser("datasets", help="list datasets, the cache, and download")
    parser.add_argument("--download", metavar="NAME", action="append", default=[],
                        help="download NAME into the cache (repeatable)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ermlab import data

    for name in args.download:
        print(f"{name}: {data.download(name)}")
    info = data.datasets_info()
    print(f"cache: {info['cache']}  (set ERMLAB_DATA to move it)")
    status = {True: "yes", False: "no", None: "-"}
    width = max(len(entry["name"]) for entry in info["datasets"])
    print(f"{'name':<{width}}  {'kind':<9} {'here':<5} description")
    for entry in info["datasets"]:
        where = f"  [{entry['location']}]" if entry["location"] else ""
        print(f"{entry['name']:<{width}}  {entry['kind']:<9} {status[entry['available']]:<5} "
              f"{entry['description']}{where}")
    return 0
