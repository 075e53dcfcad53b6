//! Quotas over HTTP: exact under concurrency and across nodes, windows,
//! reservations and outcomes, parents paying for children, warnings with
//! webhooks, rate limits, bad input.

use std::sync::Arc;

use steward_client::{Client, Method};
use steward_testkit::callers::{self, call};
use steward_testkit::{Backend, TestServer, on_both_backends};
use steward_types::*;

use crate::support::*;

on_both_backends!(
    a_limit_of_100_admits_exactly_100_of_1000_concurrent,
    outcomes_settle_reservations,
    children_count_against_their_parents,
    child_agent_quotas_limit_spawning,
    thresholds_warn_once_per_window,
    exceeding_follows_the_quota_action,
    rate_limits_allow_a_burst,
    bad_quota_input_changes_nothing,
    humans_and_narrow_rules_are_counted,
    reported_usage_cannot_overflow_a_counter,
    inventory_resources_are_counted_by_any_key,
    cost_rates_are_in_currency_units,
    reported_usage_crosses_thresholds,
    simultaneous_first_puts_of_a_rule_all_succeed,
    alert_only_child_agent_quotas_alert,
    changing_a_window_restarts_its_counter,
    a_changed_window_warns_afresh
);

// The simultaneous_first_puts_* tests guard the HTTP behaviour (put_quota takes the tenant's epoch lock, so they pass without ON CONFLICT); the store test simultaneous_first_puts_are_a_create_and_a_replace_on_postgres exercises the ON CONFLICT path.

/// Puts of one new rule at once, some the same and some not: every one
/// succeeds (a create, then replaces or nothing), one rule is left, and
/// it is one of those sent.
async fn simultaneous_first_puts_of_a_rule_all_succeed(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    put_at_once(std::slice::from_ref(&ts.admin), "calls").await;
    ts.stop().await;
}

/// The same on two nodes sharing one PostgreSQL database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_puts_on_two_nodes_all_succeed() {
    let ts = TestServer::start(Backend::Postgres).await;
    setup(&ts.admin, "bot").await;
    let (node, other) = ts.second_node().await;
    for round in 0..5 {
        put_at_once(
            &[ts.admin.clone(), other.clone()],
            &format!("calls-{round}"),
        )
        .await;
    }
    node.shutdown().await.unwrap();
    ts.stop().await;
}

/// Eight first puts of rule `name` at once over `clients`: limits 10 and
/// 20, four of each.
async fn put_at_once(clients: &[Client], name: &str) {
    let gate = Arc::new(tokio::sync::Barrier::new(8));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..8 {
        let c = clients[i % clients.len()].clone();
        let gate = gate.clone();
        let q = quota(
            name,
            QuotaScope::Tenant,
            None,
            "requests",
            "day",
            if i % 2 == 0 { 10.0 } else { 20.0 },
        );
        set.spawn(async move {
            gate.wait().await;
            c.put_quota(&q).await
        });
    }
    let mut ids = Vec::new();
    while let Some(put) = set.join_next().await {
        let put = put
            .unwrap()
            .unwrap_or_else(|e| panic!("a put of '{name}' failed: {e}"));
        ids.push(put.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one rule, replaced in place: {ids:?}");
    let rules = clients[0].list_quotas().await.unwrap();
    let kept: Vec<&Quota> = rules.iter().filter(|q| q.name == name).collect();
    assert_eq!(kept.len(), 1);
    assert!([10.0, 20.0].contains(&kept[0].limit), "{kept:?}");
    let created = all_audit(&clients[0])
        .await
        .into_iter()
        .filter(|e| e.action == "quota.create" && e.resource_id == kept[0].id)
        .count();
    assert_eq!(created, 1);
}

/// An alert_only child_agents quota lets registrations past its limit and
/// says so: a `quota.threshold` webhook per threshold reached and one
/// `quota.exceeded` on going over, again only after the count fell back.
async fn alert_only_child_agent_quotas_alert(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "pipeline").await;
    let r = crate::webhooks::receiver(vec![200]).await;
    crate::webhooks::subscribe(&ts.admin, &r, &["quota.*"]).await;
    let mut q = quota(
        "kids",
        QuotaScope::Agent,
        Some("pipeline"),
        "child_agents",
        "live",
        2.0,
    );
    q.on_exceed = OnExceed::AlertOnly;
    q.thresholds = Some(vec![50, 100]);
    ts.admin.put_quota(&q).await.unwrap();
    // What was sent, in order of kind, threshold and count.
    let events = || async {
        let items = ts
            .admin
            .list_deliveries("hook", &DeliveryQuery::default())
            .await
            .unwrap()
            .items;
        let mut sent = items
            .iter()
            .map(|d| {
                let data = &d.payload["data"];
                assert_eq!(data["quota"]["name"], "kids", "{d:?}");
                (
                    d.event.clone(),
                    data["threshold"].as_u64().unwrap(),
                    data["status"]["used"].as_f64().unwrap(),
                )
            })
            .collect::<Vec<_>>();
        sent.sort_by(|a, b| a.partial_cmp(b).unwrap());
        sent
    };
    let threshold = |t: u64, used: f64| ("quota.threshold".to_string(), t, used);
    let exceeded = |used: f64| ("quota.exceeded".to_string(), 100, used);
    child(&ts.admin, "a", "pipeline").await;
    assert_eq!(events().await, [threshold(50, 1.0)]);
    child(&ts.admin, "b", "pipeline").await;
    assert_eq!(events().await, [threshold(50, 1.0), threshold(100, 2.0)]);
    child(&ts.admin, "c", "a").await; // a grandchild counts too
    let over = [exceeded(3.0), threshold(50, 1.0), threshold(100, 2.0)];
    assert_eq!(events().await, over);
    let d = child(&ts.admin, "d", "pipeline").await;
    assert_eq!(d.state, AgentState::Active, "alert_only never refuses");
    assert_eq!(events().await, over, "once while it stays over");
    let data = &ts
        .admin
        .list_deliveries("hook", &DeliveryQuery::default())
        .await
        .unwrap()
        .items;
    let parent = ts.admin.get_agent("pipeline").await.unwrap();
    assert!(
        data.iter()
            .all(|d| d.payload["data"]["status"]["subject"] == parent.id.as_str())
    );
    // Back at the limit, then over again: one more alert.
    ts.admin.decommission_agent("c", None).await.unwrap();
    ts.admin.decommission_agent("d", None).await.unwrap();
    child(&ts.admin, "e", "pipeline").await;
    let mut again = over.to_vec();
    again.insert(0, exceeded(3.0));
    assert_eq!(events().await, again);
    let usage = ts
        .admin
        .usage(&UsageQuery {
            agent: Some("pipeline".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(usage[0].status.used, 3.0);
    ts.stop().await;
}

/// Changing a rule's window or time zone restarts its counter: a daily
/// limit used up is not used up as an hourly one in another zone (whose
/// hours start at half past in UTC, never at the day's key), and the
/// change's audit record says the counter restarts. Changing only the
/// limit keeps the counter, and the record says nothing.
async fn changing_a_window_restarts_its_counter(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    let daily = quota(
        "calls",
        QuotaScope::Agent,
        Some("bot"),
        "requests",
        "day",
        3.0,
    );
    ts.admin.put_quota(&daily).await.unwrap();
    for _ in 0..3 {
        assert!(allowed(&ts.admin, "bot").await);
    }
    assert!(!allowed(&ts.admin, "bot").await);
    let mut hourly = daily.clone();
    hourly.window = "hour".into();
    hourly.timezone = Some("Asia/Kolkata".into());
    let changed = ts.admin.put_quota(&hourly).await.unwrap();
    assert_eq!(changed.window, "hour");
    let fresh = ts.admin.decide(&call("bot")).await.unwrap();
    assert_eq!(fresh.decision, Decision::Allow, "{fresh:?}");
    let status = fresh.quota.unwrap();
    assert_eq!(
        (status.used, status.window.as_str()),
        (1.0, "hour (Asia/Kolkata)"),
        "the day's 3 are not carried into the hour"
    );
    let updates = || async {
        all_audit(&ts.admin)
            .await
            .into_iter()
            .filter(|e| e.action == "quota.update" && e.resource_id == changed.id)
            .collect::<Vec<_>>()
    };
    let record = updates().await;
    assert_eq!(record.len(), 1);
    let reason = record[0].reason.clone().unwrap_or_default();
    assert!(
        reason.contains("window changed from day to hour (Asia/Kolkata)"),
        "{reason}"
    );
    assert!(reason.contains("the counter restarts"), "{reason}");
    assert!(reason.contains("not carried"), "{reason}");
    // Only the limit changed: the counter is kept, and the record says
    // nothing about it.
    hourly.limit = 2.0;
    ts.admin.put_quota(&hourly).await.unwrap();
    assert!(allowed(&ts.admin, "bot").await);
    assert!(!allowed(&ts.admin, "bot").await, "2 of 2 used this hour");
    let record = updates().await;
    assert_eq!(record.len(), 2);
    let silent = record.iter().filter(|e| e.reason.is_none()).count();
    assert_eq!(silent, 1, "{record:?}");
    ts.stop().await;
}

/// A changed window warns afresh: the old window's alerts, kept by where
/// it started, do not hold back the new window's. A rolling day's alerts
/// are kept by the UTC day, where the calendar day's are.
async fn a_changed_window_warns_afresh(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    let r = crate::webhooks::receiver(vec![200]).await;
    crate::webhooks::subscribe(&ts.admin, &r, &["quota.*"]).await;
    let mut q = quota(
        "calls",
        QuotaScope::Agent,
        Some("bot"),
        "requests",
        "day",
        10.0,
    );
    q.rolling = true;
    q.thresholds = Some(vec![50]);
    ts.admin.put_quota(&q).await.unwrap();
    let thresholds = || async {
        ts.admin
            .list_deliveries("hook", &DeliveryQuery::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|d| d.event == "quota.threshold")
            .count()
    };
    for _ in 0..5 {
        assert!(allowed(&ts.admin, "bot").await);
    }
    assert_eq!(thresholds().await, 1);
    q.rolling = false;
    ts.admin.put_quota(&q).await.unwrap();
    let first = ts.admin.decide(&call("bot")).await.unwrap();
    let used = first.quota.unwrap().used;
    if used > 1.0 {
        // In the day's first slice the calendar day reads the row the
        // rolling day wrote to, so no threshold is crossed anew.
        eprintln!("skipped: the rolling day's first slice is today's start");
        ts.stop().await;
        return;
    }
    for _ in 0..4 {
        assert!(allowed(&ts.admin, "bot").await);
    }
    assert_eq!(thresholds().await, 2, "the calendar day's 50% was not sent");
    ts.stop().await;
}

/// A cost rate and its burst are in currency units, like any cost limit:
/// 5 EUR a second with a burst of 10 admits a 10 EUR call at once, and
/// never one of more than 10.
async fn cost_rates_are_in_currency_units(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    let mut q = quota(
        "spend-rate",
        QuotaScope::Agent,
        Some("bot"),
        "cost",
        "second",
        5.0,
    );
    q.currency = Some("EUR".into());
    // The burst in millionths, as a tool's cost estimate: 10 EUR.
    q.burst = Some(10_000_000);
    assert_eq!(ts.admin.put_quota(&q).await.unwrap().limit, 5.0);
    let spend = |cost: f64| {
        let mut r = call("bot");
        r.estimate = Some(UsageEstimate {
            cost: Some(cost),
            currency: Some("EUR".into()),
            ..Default::default()
        });
        r
    };
    let over = ts.admin.decide(&spend(10.000001)).await.unwrap();
    assert_eq!(over.decision, Decision::Deny, "{over:?}");
    let exceeded = over.exceeded.unwrap();
    assert_eq!(exceeded.name, "spend-rate");
    assert_eq!(exceeded.limit, 10.0, "the burst, in EUR");
    let whole = ts.admin.decide(&spend(10.0)).await.unwrap();
    assert_eq!(whole.decision, Decision::Allow, "{whole:?}");
    for bad in [
        PutQuota {
            limit: 1_000_001.0,
            ..q.clone()
        },
        PutQuota {
            limit: 0.0,
            ..q.clone()
        },
        PutQuota {
            burst: Some(0),
            ..q.clone()
        },
        PutQuota {
            burst: Some(1_000_000_000_001),
            ..q.clone()
        },
    ] {
        assert_eq!(
            code(ts.admin.put_quota(&bad).await),
            ErrorCode::InvalidRequest,
            "{bad:?}"
        );
    }
    ts.stop().await;
}

/// Usage reported over the estimate crosses a threshold as a reservation
/// does: one `quota.threshold` webhook, which later decisions in the same
/// window do not repeat.
async fn reported_usage_crosses_thresholds(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    let r = crate::webhooks::receiver(vec![200]).await;
    let secret = crate::webhooks::subscribe(&ts.admin, &r, &["quota.*"]).await;
    let mut q = quota(
        "tokens",
        QuotaScope::Agent,
        Some("bot"),
        "tokens",
        "day",
        100.0,
    );
    q.thresholds = Some(vec![50]);
    ts.admin.put_quota(&q).await.unwrap();
    let mut req = call("bot");
    req.estimate = Some(UsageEstimate {
        tokens: Some(10),
        ..Default::default()
    });
    let first = ts.admin.decide(&req).await.unwrap();
    assert_eq!(first.decision, Decision::Allow);
    assert!(first.warnings.is_empty());
    let deliveries = || async {
        ts.admin
            .list_deliveries("hook", &DeliveryQuery::default())
            .await
            .unwrap()
            .items
    };
    assert!(deliveries().await.is_empty());
    ts.admin
        .report_outcome(
            &first.decision_id,
            &Outcome {
                tokens: Some(60),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Queued with the settlement, in its transaction.
    let queued = deliveries().await;
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0].event, "quota.threshold");
    assert_eq!(queued[0].payload["data"]["threshold"], 50);
    assert_eq!(queued[0].payload["data"]["decision_id"], first.decision_id);
    assert!(
        queued[0].payload["text"]
            .as_str()
            .unwrap()
            .contains("Quota 'tokens' for")
    );
    let second = ts.admin.decide(&req).await.unwrap();
    assert_eq!(second.decision, Decision::Allow);
    assert_eq!(second.warnings[0].threshold, 50);
    assert_eq!(deliveries().await.len(), 1, "once per threshold per window");
    // And it reaches the receiver, signed.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while r.seen.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "threshold webhook not delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (headers, body) = r.seen.lock().unwrap()[0].clone();
    crate::webhooks::assert_signed(&secret, &headers, &body);
    ts.stop().await;
}

/// Agents report what they used; however much, a rolling window's sum
/// stays a number and decisions keep being answered.
async fn reported_usage_cannot_overflow_a_counter(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    let mut spend = quota("spend", QuotaScope::Tenant, None, "cost", "minute", 1e11);
    spend.rolling = true;
    ts.admin.put_quota(&spend).await.unwrap();
    let mut allowed = Vec::new();
    for _ in 0..100 {
        let decided = ts.admin.decide(&call("bot")).await.unwrap();
        assert_eq!(decided.decision, Decision::Allow);
        allowed.push(decided.decision_id);
    }
    // Each reports the most a report may say: 10^19 millionths in all,
    // past 2^63, were counters not capped.
    for id in &allowed {
        ts.admin
            .report_outcome(
                id,
                &Outcome {
                    cost: Some(1e11),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }
    let refused = ts.admin.decide(&call("bot")).await.unwrap();
    assert_eq!(refused.decision, Decision::Deny, "{refused:?}");
    assert_eq!(refused.exceeded.unwrap().name, "spend");
    ts.admin.usage(&UsageQuery::default()).await.unwrap();
    ts.stop().await;
}

/// A tenant's rules count decisions made for a human principal, and an
/// agent's rule on one action leaves its persona's default in force.
async fn humans_and_narrow_rules_are_counted(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let admin = &ts.admin;
    setup(admin, "bot").await;
    admin
        .put_policy(&PutPolicy {
            id: "humans-call".into(),
            text: r#"permit(principal is Human, action == Action::"call", resource is api);"#
                .into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut tenant = quota(
        "tenant-calls",
        QuotaScope::Tenant,
        None,
        "requests",
        "day",
        2.0,
    );
    tenant.resource_type = Some("api".into());
    admin.put_quota(&tenant).await.unwrap();
    let mut for_human = call("bot");
    for_human.principal = Some(PrincipalRef {
        principal_type: "human".into(),
        id: "owner@example.com".into(),
    });
    let verdicts = [
        admin.decide(&for_human).await.unwrap(),
        admin.decide(&for_human).await.unwrap(),
        admin.decide(&for_human).await.unwrap(),
    ];
    assert_eq!(
        verdicts.iter().map(|v| v.decision).collect::<Vec<_>>(),
        [Decision::Allow, Decision::Allow, Decision::Deny]
    );
    assert_eq!(verdicts[2].exceeded.as_ref().unwrap().name, "tenant-calls");
    admin.delete_quota("tenant-calls").await.unwrap();

    // Two defaults of one metric per one window: one would go unenforced.
    let per_day = |limit| QuotaTemplate {
        metric: "requests".into(),
        window: "day".into(),
        limit,
    };
    let twice = admin
        .create_persona(&CreatePersona {
            name: "Twice".into(),
            quotas: vec![per_day(1000), per_day(10)],
            ..Default::default()
        })
        .await;
    assert_eq!(code(twice), ErrorCode::InvalidRequest);
    admin
        .create_persona(&CreatePersona {
            name: "Caller".into(),
            classifications: vec!["public".into()],
            quotas: vec![QuotaTemplate {
                metric: "requests".into(),
                window: "day".into(),
                limit: 3,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .register_agent(&RegisterAgent {
            name: "narrow".into(),
            owner: "owner@example.com".into(),
            persona: Some("Caller".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut own = quota(
        "narrow-calls",
        QuotaScope::Agent,
        Some("narrow"),
        "requests",
        "day",
        100.0,
    );
    own.action = Some("call".into());
    admin.put_quota(&own).await.unwrap();
    for _ in 0..3 {
        assert!(allowed(admin, "narrow").await);
    }
    let refused = admin.decide(&call("narrow")).await.unwrap();
    assert_eq!(refused.decision, Decision::Deny, "{refused:?}");
    assert!(
        refused
            .exceeded
            .as_ref()
            .unwrap()
            .name
            .starts_with("Caller default"),
        "{refused:?}"
    );
    ts.stop().await;
}

/// The `api`/`call` tenant of the testkit with its first agent `name`.
async fn setup(admin: &Client, name: &str) {
    callers::setup(admin, name).await.unwrap();
}

fn quota(
    name: &str,
    scope: QuotaScope,
    subject: Option<&str>,
    metric: &str,
    window: &str,
    limit: f64,
) -> PutQuota {
    PutQuota {
        name: name.into(),
        scope: Some(scope),
        subject: subject.map(String::from),
        metric: metric.into(),
        window: window.into(),
        limit,
        ..Default::default()
    }
}

async fn child(admin: &Client, name: &str, parent: &str) -> Agent {
    admin
        .register_agent(&RegisterAgent {
            name: name.into(),
            owner: "owner@example.com".into(),
            classifications: Some(vec!["public".into()]),
            parent: Some(parent.into()),
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn allowed(c: &Client, agent: &str) -> bool {
    c.decide(&call(agent)).await.unwrap().decision == Decision::Allow
}

/// Fire `n` decisions at once over `clients` (round robin); count the allowed.
async fn burst(clients: &[Client], agent: &str, n: usize) -> usize {
    let mut set = tokio::task::JoinSet::new();
    let gate = Arc::new(tokio::sync::Barrier::new(n));
    for i in 0..n {
        let c = clients[i % clients.len()].clone();
        let (agent, gate) = (agent.to_string(), gate.clone());
        set.spawn(async move {
            gate.wait().await;
            let r = c.decide(&call(&agent)).await.unwrap();
            if r.decision == Decision::Deny {
                let exceeded = r.exceeded.expect("a refusal names the quota");
                assert_eq!(exceeded.name, "hundred");
                assert_eq!(exceeded.used, 100.0);
                assert_eq!(exceeded.limit, 100.0);
                assert!(
                    r.remediation
                        .unwrap()
                        .message
                        .contains("quota 'hundred' would be exceeded")
                );
            }
            r.decision == Decision::Allow
        });
    }
    let mut allowed = 0;
    while let Some(ok) = set.join_next().await {
        allowed += usize::from(ok.unwrap());
    }
    allowed
}

async fn a_limit_of_100_admits_exactly_100_of_1000_concurrent(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    ts.admin
        .put_quota(&quota(
            "hundred",
            QuotaScope::Tenant,
            None,
            "requests",
            "day",
            100.0,
        ))
        .await
        .unwrap();
    let allowed = burst(std::slice::from_ref(&ts.admin), "bot", 1000).await;
    println!("{backend:?}: {allowed} of 1000 concurrent decisions allowed against a limit of 100");
    assert_eq!(allowed, 100);
    let usage = ts.admin.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(usage[0].status.used, 100.0);
    assert_eq!(usage[0].status.remaining, 0.0);
    ts.stop().await;
}

/// PostgreSQL only: one SQLite file has one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_one_limit() {
    let ts = TestServer::start(Backend::Postgres).await;
    setup(&ts.admin, "bot").await;
    ts.admin
        .put_quota(&quota(
            "hundred",
            QuotaScope::Tenant,
            None,
            "requests",
            "day",
            100.0,
        ))
        .await
        .unwrap();
    let (node, other) = ts.second_node().await;
    let allowed = burst(&[ts.admin.clone(), other], "bot", 400).await;
    assert_eq!(allowed, 100, "two nodes, one limit: not 200");
    node.shutdown().await.unwrap();
    ts.stop().await;
}

async fn outcomes_settle_reservations(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    ts.admin
        .put_quota(&quota(
            "tokens",
            QuotaScope::Agent,
            Some("bot"),
            "tokens",
            "day",
            1000.0,
        ))
        .await
        .unwrap();
    let mut cost = quota("spend", QuotaScope::Tenant, None, "cost", "month", 5.0);
    cost.currency = Some("EUR".into());
    ts.admin.put_quota(&cost).await.unwrap();

    let mut req = call("bot");
    req.estimate = Some(UsageEstimate {
        tokens: Some(600),
        cost: Some(1.25),
        currency: Some("EUR".into()),
        ..Default::default()
    });
    let first = ts.admin.decide(&req).await.unwrap();
    assert_eq!(first.decision, Decision::Allow);
    // 600 reserved: a second estimate of 600 would exceed 1000.
    let second = ts.admin.decide(&req).await.unwrap();
    assert_eq!(second.decision, Decision::Deny);
    assert_eq!(second.exceeded.as_ref().unwrap().name, "tokens");

    // The first used only 100 tokens and 0.50 EUR: the rest is released.
    let settled = ts
        .admin
        .report_outcome(
            &first.decision_id,
            &Outcome {
                tokens: Some(100),
                cost: Some(0.5),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(settled.entries.len(), 2);
    let usage = ts
        .admin
        .usage(&UsageQuery {
            agent: Some("bot".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let used = |name: &str| {
        usage
            .iter()
            .find(|u| u.quota.name == name)
            .unwrap()
            .status
            .used
    };
    assert_eq!(used("tokens"), 100.0);
    assert_eq!(used("spend"), 0.5);
    let fourth = ts.admin.decide(&req).await.unwrap();
    assert_eq!(fourth.decision, Decision::Allow);
    // A detail no store can keep the same is refused, and settles nothing.
    for detail in ["nul\0here".to_string(), "x".repeat(4097)] {
        let bad = Outcome {
            detail: Some(detail),
            ..Default::default()
        };
        assert_eq!(
            code(ts.admin.report_outcome(&fourth.decision_id, &bad).await),
            ErrorCode::InvalidRequest
        );
    }
    // It failed and used nothing: everything it reserved is released.
    let zero = Outcome {
        status: Some("error".into()),
        tokens: Some(0),
        cost: Some(0.0),
        ..Default::default()
    };
    ts.admin
        .report_outcome(&fourth.decision_id, &zero)
        .await
        .unwrap();

    // Settled once only; unknown ids and other tenants' ids are not found.
    let before = snapshot(&ts.admin).await;
    assert_eq!(
        code(
            ts.admin
                .report_outcome(&first.decision_id, &Outcome::default())
                .await
        ),
        ErrorCode::AlreadySettled
    );
    assert_eq!(
        code(
            ts.admin
                .report_outcome("dec_nope", &Outcome::default())
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            ts.admin
                .report_outcome(&second.decision_id, &Outcome::default())
                .await
        ),
        ErrorCode::NotFound,
        "a denied decision reserved nothing"
    );
    assert_eq!(
        code(
            ts.admin
                .report_outcome(
                    &first.decision_id,
                    &Outcome {
                        status: Some("maybe".into()),
                        ..Default::default()
                    }
                )
                .await
        ),
        ErrorCode::InvalidRequest
    );
    ts.admin
        .create_tenant(&CreateTenant {
            id: "acme".into(),
            name: "Acme".into(),
        })
        .await
        .unwrap();
    let acme = ts
        .admin
        .create_token(&CreateToken {
            name: "acme".into(),
            role: TokenRole::Admin,
            human: None,
            expires_at: None,
            tenant: Some("acme".into()),
        })
        .await
        .unwrap();
    let third = ts.admin.decide(&req).await.unwrap();
    assert_eq!(third.decision, Decision::Allow);
    assert_eq!(
        code(
            ts.client(&acme.secret)
                .report_outcome(&third.decision_id, &Outcome::default())
                .await
        ),
        ErrorCode::NotFound,
        "another tenant's decision"
    );
    assert_eq!(
        snapshot(&ts.admin).await.3,
        before.3 + 1,
        "refused reports changed nothing: only the third decision was logged"
    );

    // An estimate in another currency than the quota counts is refused.
    let mut usd = req.clone();
    usd.estimate.as_mut().unwrap().currency = Some("USD".into());
    assert_eq!(code(ts.admin.decide(&usd).await), ErrorCode::InvalidRequest);

    // Unreported reservations settle at their estimate after the timeout.
    let store = ts.server.store();
    assert_eq!(store.settle_expired(chrono::Utc::now()).await.unwrap(), 0);
    assert_eq!(
        store
            .settle_expired(chrono::Utc::now() + chrono::Duration::hours(1))
            .await
            .unwrap(),
        1
    );
    let swept: Vec<AuditEntry> = all_audit(&ts.admin)
        .await
        .into_iter()
        .filter(|e| e.action == "quota.settle_unreported")
        .collect();
    assert_eq!(swept.len(), 1);
    assert_eq!(swept[0].resource_id, third.decision_id);
    assert_eq!(swept[0].actor.kind, "system");
    assert_eq!(
        code(
            ts.admin
                .report_outcome(&third.decision_id, &Outcome::default())
                .await
        ),
        ErrorCode::AlreadySettled
    );
    // Reported by an enforcement point, the record names whose decision it
    // was, so the agent's behaviour counts it as the agent's own reports.
    let audit = all_audit(&ts.admin).await;
    let reported = audit
        .iter()
        .find(|e| e.action == "decision.outcome" && e.resource_id == first.decision_id)
        .unwrap();
    let bot = ts.admin.get_agent("bot").await.unwrap();
    assert_eq!(
        reported.after.as_ref().unwrap()["principal"],
        serde_json::json!({"kind": "agent", "id": bot.id})
    );
    ts.stop().await;
}

async fn children_count_against_their_parents(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "parent").await;
    child(&ts.admin, "kid", "parent").await;
    ts.admin
        .put_quota(&quota(
            "family",
            QuotaScope::Agent,
            Some("parent"),
            "requests",
            "hour",
            3.0,
        ))
        .await
        .unwrap();
    for _ in 0..3 {
        assert!(allowed(&ts.admin, "kid").await);
    }
    let refused = ts.admin.decide(&call("kid")).await.unwrap();
    assert_eq!(
        refused.decision,
        Decision::Deny,
        "the child used up its parent's quota"
    );
    assert_eq!(
        refused.exceeded.unwrap().subject,
        ts.admin.get_agent("parent").await.unwrap().id
    );
    assert!(!allowed(&ts.admin, "parent").await);
    ts.stop().await;
}

async fn child_agent_quotas_limit_spawning(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "pipeline").await;
    ts.admin
        .put_quota(&quota(
            "kids",
            QuotaScope::Agent,
            Some("pipeline"),
            "child_agents",
            "live",
            2.0,
        ))
        .await
        .unwrap();
    child(&ts.admin, "a", "pipeline").await;
    child(&ts.admin, "b", "a").await; // a grandchild counts too
    let refused = ts
        .admin
        .register_agent(&RegisterAgent {
            name: "c".into(),
            owner: "owner@example.com".into(),
            classifications: Some(vec!["public".into()]),
            parent: Some("pipeline".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(code(refused), ErrorCode::QuotaExceeded);
    ts.admin.decommission_agent("b", None).await.unwrap();
    child(&ts.admin, "c", "pipeline").await;
    let usage = ts
        .admin
        .usage(&UsageQuery {
            agent: Some("pipeline".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(usage[0].status.used, 2.0);
    ts.stop().await;
}

async fn thresholds_warn_once_per_window(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    let r = crate::webhooks::receiver(vec![200]).await;
    let secret = crate::webhooks::subscribe(&ts.admin, &r, &["quota.*"]).await;
    let mut q = quota(
        "ten",
        QuotaScope::Agent,
        Some("bot"),
        "requests",
        "day",
        10.0,
    );
    q.thresholds = Some(vec![50, 80]);
    ts.admin.put_quota(&q).await.unwrap();
    for i in 1..=10 {
        let d = ts.admin.decide(&call("bot")).await.unwrap();
        assert_eq!(d.decision, Decision::Allow);
        assert_eq!(d.quota.as_ref().unwrap().remaining, (10 - i) as f64);
        let warned = d.warnings.first().map(|w| w.threshold);
        let want = match i {
            1..=4 => None,
            5..=7 => Some(50),
            _ => Some(80),
        };
        assert_eq!(warned, want, "decision {i}");
    }
    // Headers on the decision API carry the tightest quota.
    let response = reqwest::Client::new()
        .post(format!("{}/v1/decisions", ts.server.url()))
        .bearer_auth(steward_testkit::ADMIN_TOKEN)
        .json(&call("bot"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["ratelimit-limit"], "10");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(
        h["ratelimit-policy"].to_str().unwrap(),
        format!("\"ten\";q=10;w={}", 24 * 3600)
    );
    assert!(
        h["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"ten\";r=0;t=")
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while r.seen.lock().unwrap().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "threshold webhooks not delivered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let seen = r.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one webhook per threshold per window");
    let mut thresholds = Vec::new();
    for (headers, body) in &seen {
        crate::webhooks::assert_signed(&secret, headers, body);
        let json: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(json["event"], "quota.threshold");
        assert!(json["text"].as_str().unwrap().contains("Quota 'ten'"));
        thresholds.push(json["data"]["threshold"].as_u64().unwrap());
    }
    thresholds.sort();
    assert_eq!(thresholds, vec![50, 80]);
    ts.stop().await;
}

async fn exceeding_follows_the_quota_action(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "held").await;
    low_risk_agent(&ts.admin, "loud", "owner@example.com").await;
    let mut q = quota(
        "gate",
        QuotaScope::Agent,
        Some("held"),
        "requests",
        "day",
        1.0,
    );
    q.on_exceed = OnExceed::ApprovalRequired;
    ts.admin.put_quota(&q).await.unwrap();
    let mut q = quota(
        "alarm",
        QuotaScope::Agent,
        Some("loud"),
        "requests",
        "day",
        1.0,
    );
    q.on_exceed = OnExceed::AlertOnly;
    ts.admin.put_quota(&q).await.unwrap();
    assert!(allowed(&ts.admin, "held").await);
    let held = ts.admin.decide(&call("held")).await.unwrap();
    assert_eq!(held.decision, Decision::ApprovalRequired);
    assert_eq!(held.exceeded.unwrap().name, "gate");
    // Going over it is a request for approval like any other: once a person
    // of the runtime approver group approves, the identical request goes
    // over the quota once; the next one is held again.
    let approval = held.approval.expect("an approval to wait for");
    let (_, approver) = person(&ts.admin, "lead@example.com", &["approvers"]).await;
    approver
        .approve(&approval.id, Some("one more today"))
        .await
        .unwrap();
    let granted = ts.admin.decide(&call("held")).await.unwrap();
    assert_eq!(granted.decision, Decision::Allow);
    assert_eq!(
        granted.quota.unwrap().used,
        2.0,
        "the approved call is counted"
    );
    assert_eq!(
        ts.admin.decide(&call("held")).await.unwrap().decision,
        Decision::ApprovalRequired
    );
    assert!(allowed(&ts.admin, "loud").await);
    let loud = ts.admin.decide(&call("loud")).await.unwrap();
    assert_eq!(loud.decision, Decision::Allow, "alert_only never refuses");
    assert!(loud.warnings[0].message.contains("over its limit"));
    assert_eq!(loud.quota.unwrap().used, 2.0);

    // An approval to go over a quota covers the amount it was shown.
    low_risk_agent(&ts.admin, "thrifty", "owner@example.com").await;
    let mut q = quota(
        "token-gate",
        QuotaScope::Agent,
        Some("thrifty"),
        "tokens",
        "day",
        100.0,
    );
    q.on_exceed = OnExceed::ApprovalRequired;
    ts.admin.put_quota(&q).await.unwrap();
    let spend = |tokens: u64| {
        let mut r = call("thrifty");
        r.estimate = Some(UsageEstimate {
            tokens: Some(tokens),
            ..Default::default()
        });
        r
    };
    let first = ts.admin.decide(&spend(90)).await.unwrap();
    assert_eq!(first.decision, Decision::Allow);
    let held = ts.admin.decide(&spend(20)).await.unwrap();
    assert_eq!(held.decision, Decision::ApprovalRequired);
    approver
        .approve(&held.approval.unwrap().id, Some("20 more is fine"))
        .await
        .unwrap();
    let more = ts.admin.decide(&spend(1_000_000)).await.unwrap();
    assert_eq!(more.decision, Decision::ApprovalRequired, "{more:?}");
    let approved = ts.admin.decide(&spend(20)).await.unwrap();
    assert_eq!(approved.decision, Decision::Allow, "{approved:?}");
    ts.stop().await;
}

async fn rate_limits_allow_a_burst(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    let mut q = quota(
        "rate",
        QuotaScope::Agent,
        Some("bot"),
        "requests",
        "second",
        1.0,
    );
    q.burst = Some(3);
    ts.admin.put_quota(&q).await.unwrap();
    let start = std::time::Instant::now();
    let mut admitted = 0;
    for _ in 0..10 {
        admitted += usize::from(allowed(&ts.admin, "bot").await);
    }
    let earned = start.elapsed().as_secs() as usize + 1;
    assert!(admitted >= 3, "the burst is allowed");
    assert!(
        admitted <= 3 + earned,
        "no more than the burst plus one per second"
    );
    ts.stop().await;
}

async fn bad_quota_input_changes_nothing(backend: Backend) {
    let ts = TestServer::start(backend).await;
    setup(&ts.admin, "bot").await;
    let before = snapshot(&ts.admin).await;
    let base = || quota("q", QuotaScope::Agent, Some("bot"), "requests", "day", 10.0);
    let cases = [
        (
            PutQuota {
                limit: -1.0,
                ..base()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            PutQuota {
                metric: "calories".into(),
                ..base()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            PutQuota {
                window: "fortnight".into(),
                ..base()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            PutQuota {
                timezone: Some("Mars/Olympus".into()),
                ..base()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            PutQuota {
                subject: Some("nobody".into()),
                ..base()
            },
            ErrorCode::UnknownReference,
        ),
        (
            PutQuota {
                subject: None,
                ..base()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            PutQuota {
                scope: Some(QuotaScope::Tenant),
                ..base()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            PutQuota {
                limit: 1.5,
                ..base()
            },
            ErrorCode::InvalidRequest,
        ),
        (
            PutQuota {
                metric: "child_agents".into(),
                scope: Some(QuotaScope::Tenant),
                subject: None,
                window: "live".into(),
                ..base()
            },
            ErrorCode::InvalidRequest,
        ),
    ];
    for (bad, want) in cases {
        assert_eq!(code(ts.admin.put_quota(&bad).await), want, "{bad:?}");
    }
    for body in [
        r#"{"name":"q","metric":"requests","window":"day","limit":"lots"}"#,
        r#"{"name":"q","metric":"requests","window":"day"}"#,
    ] {
        let (status, _) = ts
            .admin
            .raw(
                Method::POST,
                "/v1/quotas",
                Some(body.to_string()),
                Some("application/json"),
            )
            .await
            .unwrap();
        assert!((400..500).contains(&status), "{body} -> {status}");
    }
    let mut neg = call("bot");
    neg.estimate = Some(UsageEstimate {
        cost: Some(-1.0),
        ..Default::default()
    });
    assert_eq!(code(ts.admin.decide(&neg).await), ErrorCode::InvalidRequest);
    assert!(ts.admin.list_quotas().await.unwrap().is_empty());
    assert_eq!(snapshot(&ts.admin).await, before, "nothing changed");
    assert_eq!(
        code(ts.admin.delete_quota("nope").await),
        ErrorCode::NotFound
    );
    assert_eq!(code(ts.admin.get_quota("nope").await), ErrorCode::NotFound);
    ts.stop().await;
}

/// A rule on one agent, person or team counts every decision on it,
/// whichever key (id, name, e-mail) the request names it by.
async fn inventory_resources_are_counted_by_any_key(backend: Backend) {
    let ts = TestServer::start(backend).await;
    let admin = &ts.admin;
    setup(admin, "bot").await;
    admin
        .put_action(&PutAction {
            name: "inspect".into(),
            resource_types: vec!["Agent".into(), "Human".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .put_policy(&PutPolicy {
            id: "agents-inspect".into(),
            text: r#"permit(principal is Agent, action == Action::"inspect", resource);"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let target = child(admin, "target", "bot").await;
    let owner = admin.get_human("owner@example.com").await.unwrap();
    let inspect = |resource_type: &str, id: &str| {
        let mut req = call("bot");
        req.action = "inspect".into();
        req.resource = ResourceRef {
            resource_type: resource_type.into(),
            id: id.into(),
            attributes: Default::default(),
        };
        req
    };
    for (name, resource_type, named_as) in [
        ("inspect-target", "Agent", "target"),
        ("inspect-owner", "Human", "OWNER@example.com"),
    ] {
        let mut rule = quota(name, QuotaScope::Tenant, None, "requests", "day", 1.0);
        rule.action = Some("inspect".into());
        rule.resource_type = Some(resource_type.into());
        rule.resource_id = Some(named_as.into());
        admin.put_quota(&rule).await.unwrap();
    }
    for (resource_type, first, second, quota) in [
        ("Agent", "target", target.id.as_str(), "inspect-target"),
        (
            "Human",
            owner.id.as_str(),
            "owner@example.com",
            "inspect-owner",
        ),
    ] {
        let allowed = admin.decide(&inspect(resource_type, first)).await.unwrap();
        assert_eq!(allowed.decision, Decision::Allow, "{allowed:?}");
        let denied = admin.decide(&inspect(resource_type, second)).await.unwrap();
        assert_eq!(denied.decision, Decision::Deny, "{denied:?}");
        assert_eq!(denied.exceeded.unwrap().name, quota);
    }
    // A rule on an agent nobody registered is refused, not silently inert.
    let mut ghost = quota("ghost", QuotaScope::Tenant, None, "requests", "day", 1.0);
    ghost.resource_type = Some("Agent".into());
    ghost.resource_id = Some("ghost".into());
    let err = admin.put_quota(&ghost).await.unwrap_err();
    assert_eq!(err.status(), Some(422), "{err:?}");
    assert_eq!(admin.list_quotas().await.unwrap().len(), 2);
    ts.stop().await;
}
