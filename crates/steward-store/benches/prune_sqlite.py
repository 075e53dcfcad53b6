"""How long a retention pruning holds SQLite's writer, the way the store did
it before (one UPDATE over the whole log) and does it now
(`Store::prune_audit_by`: a stretch of 5 000 sequence numbers per
transaction from the oldest entry still holding a payload).

    python3 crates/steward-store/benches/prune_sqlite.py old
    python3 crates/steward-store/benches/prune_sqlite.py new

Builds a log of 1 000 000 decision entries (about 300 bytes each) on the
store's own schema (its SQLite migrations, in order) in a temporary file,
prunes all of it, then a day's worth (10 000 due after 990 000 already
pruned). Results in docs/benchmarks.md (Audit log, eleventh session).
"""
import sqlite3, glob, time, os, json, sys, tempfile, shutil
N = 1_000_000
path = os.path.join(tempfile.mkdtemp(), 'prune.db')
HERE = os.path.dirname(os.path.abspath(__file__))
for f in (path, path+'-wal', path+'-shm'):
    if os.path.exists(f): os.remove(f)
db = sqlite3.connect(path, isolation_level=None)
db.execute('PRAGMA journal_mode=WAL'); db.execute('PRAGMA synchronous=FULL')
for f in sorted(glob.glob(os.path.join(HERE, '..', 'migrations', 'sqlite', '*.sql'))):
    db.executescript(open(f).read())
after = json.dumps({"principal": "agt_0190" + "x"*20, "decision": "allow", "policies": ["readers"], "context": {"k": "v"*150}})
db.execute('BEGIN')
for i in range(1, N+1):
    db.execute("INSERT INTO audit_log (seq, tenant_id, time, actor_kind, actor_id, action, resource_type, resource_id, after, leaf_hash) VALUES (?, 'default', ?, 'agent', 'agt_x', 'decision.allow', 'repo', 'r', ?, 'h')", (i, i, after))
db.execute('COMMIT')
SET = "before = NULL, after = NULL, reason = NULL, request_id = NULL, source = NULL, actor_id = '', actor_human_id = NULL, resource_id = '', pruned = 1"
def old(cutoff):
    t = time.perf_counter(); db.execute('BEGIN IMMEDIATE')
    n = db.execute(f"UPDATE audit_log SET {SET} WHERE pruned = 0 AND time < ? AND action <> 'audit.prune'", (cutoff,)).rowcount
    db.execute('COMMIT'); return n, time.perf_counter() - t
def new(cutoff, chunk=5000):
    t0 = time.perf_counter()
    r = db.execute("SELECT seq FROM audit_log WHERE pruned = 0 AND action <> 'audit.prune' ORDER BY seq LIMIT 1").fetchone()
    find = time.perf_counter() - t0
    frm = r[0]; n = 0; longest = 0; chunks = 0
    while frm <= N:
        to = frm + chunk
        t = time.perf_counter(); db.execute('BEGIN IMMEDIATE')
        n += db.execute(f"UPDATE audit_log SET {SET} WHERE seq >= ? AND seq < ? AND pruned = 0 AND time < ? AND action <> 'audit.prune'", (frm, to, cutoff)).rowcount
        oldest = db.execute("SELECT MIN(time) FROM audit_log WHERE seq >= ? AND seq < ?", (frm, to)).fetchone()[0]
        db.execute('COMMIT'); longest = max(longest, time.perf_counter() - t); chunks += 1
        if oldest is not None and oldest >= cutoff: break
        frm = to
    return n, time.perf_counter() - t0, longest, chunks, find
mode = sys.argv[1]
# daily steady state: 990 000 already pruned, the next 10 000 due
if mode == 'old':
    print('first pruning of all:', old(N+1))
    db.execute("UPDATE audit_log SET pruned = 0, after = ? WHERE seq > 990000", (after,))
    print('daily (10k due of 1M):', old(1_000_001))
else:
    n, total, longest, chunks, find = new(N+1)
    print(f'first pruning of all: {n} rows in {total*1e3:.0f} ms, {chunks} transactions, the longest {longest*1e3:.1f} ms (finding the start {find*1e3:.1f} ms)')
    db.execute("UPDATE audit_log SET pruned = 0, after = ? WHERE seq > 990000", (after,))
    n, total, longest, chunks, find = new(1_000_001)
    print(f'daily (10k due of 1M): {n} rows in {total*1e3:.0f} ms, {chunks} transactions, the longest {longest*1e3:.1f} ms (finding the start, outside them: {find*1e3:.1f} ms)')
db.close()
shutil.rmtree(os.path.dirname(path))
