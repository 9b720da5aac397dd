#!/usr/bin/env python3
"""Where the instructions of one HTTP deposit go, from the two callgrind runs
of one server binary by scripts/http-instructions.sh (which runs this with
KEEP=dir).

The short and the long run differ only by the deposits answered in
between, so the difference of a count over the difference of the deposits
is its share of one deposit, with start-up and set-up cancelled out (as
for the total the script prints).

Usage: scripts/callgrind-per-request.py SHORT.callgrind LONG.callgrind \
           SHORT_REQUESTS LONG_REQUESTS [top=20]
Prints, per deposit:
- the total;
- the work of named tasks (the inclusive count of the function that runs
  each: they nest, so they do not add up);
- own instructions by the source they were compiled from (a crate, the
  standard library, libc, mimalloc), which do add up: code inlined from a
  crate counts for that crate;
- the functions with the most own instructions.
"""

import os
import re
import subprocess
import sys

# The workspace this script belongs to: its crates' sources live under it.
WORKSPACE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep

# task -> regular expression over function names (inclusive counts)
TASKS = [
    ("HTTP: hyper, middleware and handlers", r"^hyper::proto::h1::dispatch::Dispatcher<D,Bs,I,T>::poll_catch$"),
    ("  the request span's fields (tracing-subscriber)", r"tracing_subscriber::fmt::Subscriber<N,E,F,W> as tracing_core::subscriber::Subscriber>::new_span$"),
    ("command: load, decide, encode (es-core mailbox)", r"^es_core::repository::mailbox::drain::\{\{closure\}\}$"),
    ("group-committed append (es-postgres batcher)", r"^es_postgres::batcher::run::\{\{closure\}\}$"),
    ("accounts projection (es-core runner)", r"^es_core::projection::runner::ProjectionRunner::catch_up::\{\{closure\}\}$"),
    ("  reading the events back (es-postgres fetch_events)", r"^es_postgres::store::fetch_events::\{\{closure\}\}$"),
    ("  a page: decode, fold, upsert, checkpoint", r"PgTyped<P> as es_postgres::projection::projector::TransactionalProjector>::apply_page::\{\{closure\}\}$"),
]

LINE = re.compile(r"\s*([\d,]+) \([ \d.]+%\)\s+(\S.*)$")


def source_of(path):
    """The crate (or library) a source path belongs to."""
    m = re.search(r"index\.crates\.io-[0-9a-f]+/([A-Za-z0-9_.-]+?)-\d+\.\d+\.\d+[^/]*/", path)
    if m:
        name = m.group(1)
        return "mimalloc" if name.startswith("libmimalloc") else name
    if path.startswith(WORKSPACE):
        path = path[len(WORKSPACE):]
    first = path.split("/", 1)[0]
    if first and not first.startswith(".") and os.path.isdir(WORKSPACE + first):
        return first
    if path.startswith("/rustc/") or path.startswith("library/"):
        return "std (core, alloc)"
    if path.startswith("/rust/deps/"):
        return re.sub(r"-\d.*", "", path.split("/")[3]) + " (std's)"
    if path.startswith("./") or "libc" in path:
        return "libc (memcpy, ...)"
    return "other"


def annotate(path, inclusive):
    """function -> count and source -> count (own counts only), and the total."""
    out = subprocess.run(
        ["callgrind_annotate", "--auto=no", f"--inclusive={'yes' if inclusive else 'no'}", "--threshold=100", path],
        check=True, capture_output=True, text=True,
    ).stdout
    functions, sources, total = {}, {}, 0
    for line in out.splitlines():
        m = LINE.match(line)
        if not m or "=>" in line:
            continue
        n, name = int(m.group(1).replace(",", "")), m.group(2)
        if name.startswith("PROGRAM TOTALS"):
            total = n
            continue
        file, _, fn = name.partition(":")
        fn = re.sub(r" \[[^\]]*\]$", "", fn).strip()
        functions[fn] = max(functions.get(fn, 0), n) if inclusive else functions.get(fn, 0) + n
        if not inclusive:
            src = source_of(file)
            sources[src] = sources.get(src, 0) + n
    return functions, sources, total


def main():
    if len(sys.argv) < 5:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    r1, r2 = int(sys.argv[3]), int(sys.argv[4])
    top = int(sys.argv[5]) if len(sys.argv) > 5 else 20
    if r2 <= r1:
        sys.exit("error: the long run answered no more deposits than the short one")
    inc1, _, t1 = annotate(sys.argv[1], True)
    inc2, _, t2 = annotate(sys.argv[2], True)
    own1, src1, _ = annotate(sys.argv[1], False)
    own2, src2, _ = annotate(sys.argv[2], False)

    def per(a, b):
        return (b - a) / (r2 - r1)

    total = per(t1, t2)

    def row(label, v):
        print(f"{v:>9,.0f} {100 * v / total:>4.0f} %  {label}")

    row("instructions per deposit", total)
    print("\ntasks (inclusive; nested, so they overlap):")
    for label, pattern in TASKS:
        rx = re.compile(pattern)
        a = max((n for f, n in inc1.items() if rx.search(f)), default=0)
        b = max((n for f, n in inc2.items() if rx.search(f)), default=0)
        row(label, per(a, b))
    print("\nown instructions by source (they add up):")
    for v, s in sorted(((per(src1.get(s, 0), n), s) for s, n in src2.items()), reverse=True)[:top]:
        row(s, v)
    print("\nfunctions with the most own instructions:")
    for v, f in sorted(((per(own1.get(f, 0), n), f) for f, n in own2.items()), reverse=True)[:top]:
        row(f[:140], v)


if __name__ == "__main__":
    main()
