#!/usr/bin/env python3
"""Lists the `crate::` edges between the top-level modules of src/ and the `super::` edges between
the files of each folder, and fails (exit 1) on any cycle: no module may import one that imports
it back. Run by .ci/run: `python3 scripts/module_cycles.py src`."""
import os, re, sys, itertools
root = sys.argv[1] if len(sys.argv) > 1 else 'src'
def top(path):
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    return parts[0].removesuffix('.rs')
edges = {}
file_edges = {}
for dp, _, fs in os.walk(root):
    for f in fs:
        if not f.endswith('.rs'): continue
        p = os.path.join(dp, f)
        src = open(p).read()
        # drop comments and #[cfg(test)] modules (tests may reach anywhere)
        src = re.sub(r'//[^\n]*', '', src)
        i = src.find('#[cfg(test)]\nmod tests')
        if i >= 0: src = src[:i]
        m = top(p)
        if m in ('main', 'lib'): continue
        for t in re.findall(r'crate::([a-z_]+)', src):
            if t != m: edges.setdefault(m, set()).add(t)
        if dp != root:
            me = f.removesuffix('.rs')
            for t in re.findall(r'super::([a-z_]+)', src):
                if t != me and os.path.exists(os.path.join(dp, t + '.rs')):
                    file_edges.setdefault((os.path.relpath(dp, root), me), set()).add(t)
def cycles(g):
    out = []
    nodes = set(g) | {v for vs in g.values() for v in vs}
    idx = {}; low = {}; st = []; on = set(); c = [0]
    def sc(v):
        idx[v] = low[v] = c[0]; c[0] += 1; st.append(v); on.add(v)
        for w in g.get(v, ()):
            if w not in idx: sc(w); low[v] = min(low[v], low[w])
            elif w in on: low[v] = min(low[v], idx[w])
        if low[v] == idx[v]:
            comp = []
            while True:
                w = st.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: out.append(sorted(comp))
    for v in sorted(nodes):
        if v not in idx: sc(v)
    return out
for m in sorted(edges):
    print(f'{m} -> {", ".join(sorted(edges[m]))}')
cyc = cycles(edges)
by_dir = {}
for (d, f), ts in file_edges.items():
    by_dir.setdefault(d, {})[f] = ts
for d, g in sorted(by_dir.items()):
    for c in cycles(g): cyc.append([f'{d}/{x}' for x in c])
print('cycles:', cyc if cyc else 'none')
sys.exit(1 if cyc else 0)
