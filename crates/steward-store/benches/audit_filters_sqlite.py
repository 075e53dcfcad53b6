"""How long a page of the audit log filtered by agent, human or team takes
at 1 000 000 entries, the way the store read it before (matching the id
in each decision's JSON with LIKE, a scan of the log) and does now (the
identity's rows in `audit_subjects`, migration 0020, driving the query in
order: `steward_store::audit::BY_SUBJECT`).

    python3 crates/steward-store/benches/audit_filters_sqlite.py

Builds the log on the store's own SQLite migrations in a temporary file:
1 000 000 decisions by 10 000 agents in turn (100 each), in 100 teams of
100 agents, each acting for one of 100 humans, with their subject rows as
the store writes them. Then times each query (the best of 3) for a page of
50 (51 rows read). Results in docs/benchmarks.md (Audit log, twelfth
session).
"""
import glob, json, os, sqlite3, sys, tempfile, time

N, AGENTS, TEAMS, HUMANS = 1_000_000, 10_000, 100, 100
HERE = os.path.dirname(os.path.abspath(__file__))
path = os.path.join(tempfile.mkdtemp(), 'filters.db')
db = sqlite3.connect(path, isolation_level=None)
db.execute('PRAGMA journal_mode=WAL')
for f in sorted(glob.glob(os.path.join(HERE, '..', 'migrations', 'sqlite', '*.sql'))):
    db.executescript(open(f).read())
agent = lambda i: 'agt_%032x' % i
human = lambda i: 'hum_%032x' % (1_000_000 + i)
team = lambda i: 'team_%032x' % (2_000_000 + i)
db.execute('BEGIN')
for t in range(TEAMS):
    db.execute("INSERT INTO teams (id, tenant_id, name, description, created_at) VALUES (?, 'default', ?, '', 0)", (team(t), 't%d' % t))
for a in range(AGENTS):
    db.execute("INSERT INTO agents (id, tenant_id, name, owner_id, team_id, purpose, platform, model, roles, classifications, labels, depth, state, risk_tier, orphaned, created_at, updated_at) VALUES (?, 'default', ?, ?, ?, '', '', '', '[]', '[]', '{}', 0, 'active', 'low', 0, 0, 0)", (agent(a), 'a%d' % a, human(a % HUMANS), team(a % TEAMS)))
for i in range(1, N + 1):
    a, h = agent(i % AGENTS), human(i % HUMANS)
    after = json.dumps({"decision_id": "dec_%d" % i, "decision": "allow", "principal": {"kind": "agent", "id": a, "name": "a"},
                        "action": "read", "resource": {"type": "repo", "id": "r", "attributes": {}}, "context": {"k": "v" * 100},
                        "on_behalf_of": "bob@example.com", "chain": [{"kind": "agent", "id": a}, {"kind": "human", "id": h}], "policies": ["readers"]})
    db.execute("INSERT INTO audit_log (seq, tenant_id, time, actor_kind, actor_id, action, resource_type, resource_id, after, leaf_hash) VALUES (?, 'default', ?, 'token', 'tok_pep', 'decision.allow', 'repo', 'r', ?, 'h')", (i, i, after))
    db.execute("INSERT INTO audit_subjects (entry, subject_id) VALUES (?, ?), (?, ?)", (i, a, i, h))
db.execute('COMMIT')
db.execute('ANALYZE') if '--analyze' in sys.argv else None

LIKE = "'%\"' || REPLACE(REPLACE(REPLACE(?, '\\', '\\\\'), '%', '\\%'), '_', '\\_') || '\"%'"
OLD = {
    'agent': f"(actor_id = ?1 OR resource_id = ?1 OR ((action LIKE 'decision.%' OR resource_type = 'agent_key') AND after LIKE {LIKE.replace('?', '?1')} ESCAPE '\\'))",
    'human': f"(actor_human_id = ?1 OR resource_id = ?1 OR (action LIKE 'decision.%' AND after LIKE {LIKE.replace('?', '?1')} ESCAPE '\\'))",
    'team': "(resource_id = ?1 OR actor_id IN (SELECT id FROM agents WHERE team_id = ?1) OR resource_id IN (SELECT id FROM agents WHERE team_id = ?1) "
            f"OR ((action LIKE 'decision.%' OR resource_type = 'agent_key') AND EXISTS (SELECT 1 FROM agents team_agent WHERE team_agent.team_id = ?1 "
            f"AND audit_log.after LIKE {LIKE.replace('?', 'team_agent.id')} ESCAPE '\\')))",
}
BY_SUBJECT = ("FROM audit_subjects CROSS JOIN audit_log WHERE audit_subjects.subject_id = ?1 "
              "AND audit_log.seq = audit_subjects.entry AND audit_log.tenant_id = 'default'")
def old(kind, last=False):
    if last:
        return (f"SELECT * FROM audit_log WHERE tenant_id = 'default' AND {OLD[kind]} AND seq >= "
                f"(SELECT seq FROM audit_log WHERE tenant_id = 'default' AND {OLD[kind]} ORDER BY seq DESC LIMIT 1 OFFSET 49) ORDER BY seq LIMIT 51")
    return f"SELECT * FROM audit_log WHERE tenant_id = 'default' AND {OLD[kind]} ORDER BY seq LIMIT 51"
def new(kind, last=False):
    if kind == 'team':
        where = "seq IN (SELECT s.entry FROM audit_subjects s WHERE s.subject_id = ?1 OR s.subject_id IN (SELECT id FROM agents WHERE team_id = ?1))"
        base = f"SELECT * FROM audit_log WHERE tenant_id = 'default' AND {where}"
        if last:
            return f"{base} AND seq >= (SELECT seq FROM audit_log WHERE tenant_id = 'default' AND {where} ORDER BY seq DESC LIMIT 1 OFFSET 49) ORDER BY seq LIMIT 51"
        return f"{base} ORDER BY seq LIMIT 51"
    if last:
        return (f"SELECT audit_log.* {BY_SUBJECT} AND audit_subjects.entry >= (SELECT seq {BY_SUBJECT} "
                "ORDER BY audit_subjects.entry DESC LIMIT 1 OFFSET 49) ORDER BY audit_subjects.entry LIMIT 51")
    return f"SELECT audit_log.* {BY_SUBJECT} ORDER BY audit_subjects.entry LIMIT 51"

def timed(sql, arg):
    best = None
    for _ in range(3):
        t = time.perf_counter(); rows = db.execute(sql, (arg,)).fetchall(); d = time.perf_counter() - t
        best = d if best is None or d < best else best
    return len(rows), best * 1e3

cases = [('agent with 100 entries, first page', 'agent', agent(42), False),
         ('agent with 100 entries, --last 50', 'agent', agent(42), True),
         ('agent with no entries', 'agent', agent(AGENTS + 1), False),
         ('human acted for 10 000 times, first page', 'human', human(7), False),
         ('team of 100 agents, first page', 'team', team(3), False)]
print(f'{"query":<44} {"rows":>5} {"before ms":>10} {"after ms":>9}')
for name, kind, arg, last in cases:
    n_old, t_old = timed(old(kind, last), arg)
    n_new, t_new = timed(new(kind, last), arg)
    assert n_old == n_new, (name, n_old, n_new)
    print(f'{name:<44} {n_new:>5} {t_old:>10.1f} {t_new:>9.2f}')
db.close()
