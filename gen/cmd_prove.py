"""``metafab prove``: the packet front end's formal proof (k-induction) and covers (see ``docs/formal.md``)."""

from __future__ import annotations

import argparse
import json

from metafab.gen.cli import count, progress

HELP = "prove the packet front end's protocol rules formally (k-induction) and cover every response status"

DESCRIPTION = (
    HELP + ". The shared front end (hw/frontend.py) runs in a formal harness (hw/frontend_proof.py) with an "
    "abstract core that may answer after any delay with OK or BAD_VALUE, under two small opcode tables: "
    "'plain' (a MAML-like core) and 'pipelined' (a similarity-like core with pipelined RUNs). The proof "
    "tasks show that every assertion holds in every reachable state (response stream rules, reset, one "
    "response per request in order, the status precedence, lengths, the loaded flag, the core bus rules); the "
    "cover tasks show that an answer with each status is reachable. Runs yowasp-sby with the yices solver "
    "(pip packages, installed by make install) under <build>/prove/. Exit status: 0 when everything is "
    "proven and covered, 1 when a property fails or the induction does not close (the failing assertion and "
    "its counterexample trace are printed), 2 for a user error such as a missing tool."
)


def register(sub):
    from metafab.gen.formal import DEFAULT_DEPTH, TASKS
    from metafab.hw.frontend_proof import MUTANTS

    p = sub.add_parser("prove", help=HELP, description=DESCRIPTION)
    p.add_argument("--depth", type=count, default=DEFAULT_DEPTH,
                   help=f"k-induction depth of the proofs and step bound of the covers (default {DEFAULT_DEPTH})")
    p.add_argument("--task", action="append", choices=[t.name for t in TASKS], dest="tasks",
                   help="run only this task (repeat for more; default: all)")
    p.add_argument("--mutant", choices=sorted(MUTANTS),
                   help="prove a deliberately wrong front end instead (it must fail: a check of the proof itself)")
    p.add_argument("--json", action="store_true", help="print one JSON document with each task's result")
    p.set_defaults(func=run)


def _line(doc: dict) -> str:
    covers = doc.get("covers", [])
    extra = ""
    if covers:
        extra = f", {sum(c['reached'] for c in covers)}/{len(covers)} covers reached"
    return f"{doc['task']}: {doc['result']} (depth {doc['depth']}, {doc['seconds']} s{extra})"


def run(args: argparse.Namespace) -> int:
    from metafab.gen.formal import TASKS, find_tools, run_task
    from metafab.hw.frontend_proof import MUTANTS
    from metafab.sim.runner import build_root

    find_tools()  # a missing tool is a user error (status 2) before anything runs
    tasks = [t for t in TASKS if not args.tasks or t.name in args.tasks]
    root = build_root() / "prove" / (f"mutant-{args.mutant}" if args.mutant else "frontend")
    frontend_class = MUTANTS[args.mutant] if args.mutant else None
    docs = []
    for task in tasks:
        progress(f"prove: {task.name} (depth {args.depth}) in {root / task.name}")
        doc = run_task(task, depth=args.depth, root=root, frontend_class=frontend_class)
        progress("prove: " + _line(doc))
        docs.append(doc)
    ok = all(d["result"] == "PASS" and all(c["reached"] for c in d.get("covers", [])) for d in docs)
    if args.json:
        print(json.dumps({"ok": ok, "mutant": args.mutant, "tasks": docs}, indent=2, sort_keys=True))
    else:
        for doc in docs:
            print(_line(doc))
            for f in doc.get("failed", []):
                step = f" at step {f['step']}" if f["step"] is not None else " (induction step)"
                print(f"  failed: {f['assertion']} ({f['source']}){step}")
            if doc["result"] == "UNKNOWN":
                print(f"  the induction did not close at depth {doc['depth']}: a missing invariant, or try a "
                      "larger --depth")
            if "trace" in doc:
                print(f"  counterexample trace: {doc['trace']}")
            for c in doc.get("covers", []):
                if not c["reached"]:
                    print(f"  not reached: {c['cover']}")
            if "error" in doc:
                print(f"  error: {doc['error']} (log: {doc['log']})")
        print("all proven and covered" if ok else "NOT proven: see above")
    return 0 if ok else 1
