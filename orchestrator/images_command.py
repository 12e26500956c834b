"""`speedster-run images`: build, list, push and pull the per-backend runner images; render the compose files.

    speedster-run images build [BACKEND...] [--base IMAGE] [--tag TAG] [--registry PREFIX] [--build-arg K=V]
    speedster-run images list [--tag TAG]
    speedster-run images base [--force]
    speedster-run images push [BACKEND...] --registry PREFIX [--tag TAG]
    speedster-run images pull [BACKEND...] --registry PREFIX [--tag TAG]
    speedster-run images compose [--check]

BACKEND defaults to the backends whose images build on any x86-64 host (the catalog's CPU images). Images are named
speedster-run/BACKEND:TAG (TAG: the project's version); in a registry PREFIX/speedster-run-BACKEND:TAG, tagged back
to the local name after a pull. --base defaults to speedster-run/base:bookworm, built here with debootstrap when
missing (no registry needed); where images can be pulled, --base python:3.11-slim-bookworm gives the official Python
image instead. `compose` rewrites compose/docker-compose.yml and compose/docker-compose.tls.yml from the backend
catalog (one service per backend); --check only says whether they are up to date (exit 1 when not).
"""

from __future__ import annotations

import argparse
import time

from orchestrator import images
from orchestrator.errors import UserError
from speedster_run.shared import catalog


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):
        raise UserError(f"{message} (see speedster-run images --help)")


def _build_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--build-arg {text!r}: expected KEY=VALUE")
    return key, value


_DEFAULT_BACKENDS_HELP = "default: " + " ".join(catalog.cpu_image_backends())


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="speedster-run images", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    commands = p.add_subparsers(dest="command", metavar="{build,list,push,pull,base,compose}", parser_class=_Parser)
    commands.required = True

    build = commands.add_parser("build", help="build images (base image, wheelhouses and project wheel first)")
    build.add_argument("backends", nargs="*", metavar="BACKEND", help=_DEFAULT_BACKENDS_HELP)
    build.add_argument("--base", default=images.LOCAL_BASE,
                       help=f"base image (default {images.LOCAL_BASE}, built when missing; "
                            f"{images.OFFICIAL_BASE} where images can be pulled)")
    build.add_argument("--tag", default=None, help="image tag (default: the project's version)")
    build.add_argument("--registry", default=None, metavar="PREFIX",
                       help="also tag each image PREFIX/speedster-run-BACKEND:TAG (push with `images push`)")
    build.add_argument("--build-arg", action="append", type=_build_arg, default=[], metavar="KEY=VALUE",
                       help="Dockerfile argument (also in the environment of the wheel download); repeatable")
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.add_argument("--quiet", action="store_true", help="no build output, only one line per step of this tool")

    listing = commands.add_parser("list", help="the images of every backend, and which have none")
    listing.add_argument("--tag", default=None, help="image tag (default: the project's version)")

    for name, summary in (("push", "tag speedster-run/BACKEND:TAG as PREFIX/speedster-run-BACKEND:TAG and push it"),
                          ("pull", "pull PREFIX/speedster-run-BACKEND:TAG and tag it speedster-run/BACKEND:TAG")):
        sub = commands.add_parser(name, help=summary)
        sub.add_argument("backends", nargs="*", metavar="BACKEND", help=_DEFAULT_BACKENDS_HELP)
        sub.add_argument("--registry", required=True, metavar="PREFIX", help="e.g. localhost:5000 or ghcr.io/org")
        sub.add_argument("--tag", default=None, help="image tag (default: the project's version)")

    base = commands.add_parser("base", help=f"build the base image {images.LOCAL_BASE} (debootstrap, as root)")
    base.add_argument("--force", action="store_true", help="rebuild it even if it exists")

    compose = commands.add_parser("compose", help="rewrite compose/*.yml from the backend catalog")
    compose.add_argument("--check", action="store_true",
                         help="change nothing: exit 1 when a compose file differs from what the catalog gives")
    return p


def _progress(started: float):
    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    return say


def build_command(args: argparse.Namespace) -> int:
    say = _progress(time.perf_counter())
    results = images.build(args.backends or catalog.cpu_image_backends(), base=args.base, tag=args.tag,
                           registry=args.registry, build_args=dict(args.build_arg), no_cache=args.no_cache,
                           progress=say, quiet=args.quiet)
    print()
    rows = [[r.backend, r.name, r.image_id.split(":")[-1][:12], f"{r.seconds:.1f}",
             "all cached" if r.all_cached else f"{r.cached_steps}/{r.steps} cached"] for r in results]
    _print_table(rows, ["backend", "image", "id", "build s", "layers"])
    return 0


def list_command(args: argparse.Namespace) -> int:
    rows = []
    missing = []
    for entry in images.list_images(args.tag):
        if entry["missing"]:
            missing.append(entry["backend"])
            rows.append([entry["backend"], entry["name"], "-", "-", "-", "-", "no image"])
            continue
        versions = entry["versions"]
        shown = {k: v for k, v in versions.items() if k not in images.CORE_PACKAGES} or versions
        digest = entry["digests"][0].split("@", 1)[-1][:19] if entry["digests"] else ""
        rows.append([
            entry["backend"], entry["name"], entry["id"].split(":")[-1][:12] + (f"\n{digest}" if digest else ""),
            images.human_size(entry["size"]), entry["created"][:19].replace("T", " "),
            ", ".join(f"{k} {v}" for k, v in sorted(shown.items())),
            "stale: requirements.txt changed since" if entry["stale"] else "",
        ])
    _print_table(rows, ["backend", "image", "id / digest", "size", "created (UTC)", "versions", "note"])
    if missing:
        print(f"\nNo image: {', '.join(missing)} (speedster-run images build {' '.join(missing)})")
    return 0


def registry_command(args: argparse.Namespace) -> int:
    say = _progress(time.perf_counter())
    backends = images.check_backends(args.backends or catalog.cpu_image_backends())
    action = images.push if args.command == "push" else images.pull
    for backend in backends:
        name = action(backend, args.registry, args.tag, progress=say)
        say(f"{backend}: {'pushed' if args.command == 'push' else 'pulled, tagged'} {name}")
    return 0


def compose_command(args: argparse.Namespace) -> int:
    from orchestrator import compose_files

    if args.check:
        stale = compose_files.stale_files()
        for path in stale:
            print(f"{path.relative_to(compose_files.REPO)}: differs from the catalog "
                  "(speedster-run images compose rewrites it)")
        return 1 if stale else 0
    rewritten = compose_files.write_files()
    for path in compose_files.RENDERERS:
        state = "rewritten" if path in rewritten else "up to date"
        print(f"{path.relative_to(compose_files.REPO)}: {state}")
    return 0


def _print_table(rows, headers) -> None:
    from tabulate import tabulate

    print(tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True))


def images_command(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.command == "build":
        return build_command(args)
    if args.command == "list":
        return list_command(args)
    if args.command == "compose":
        return compose_command(args)
    if args.command == "base":
        images.build_base(force=args.force, progress=_progress(time.perf_counter()))
        return 0
    return registry_command(args)
