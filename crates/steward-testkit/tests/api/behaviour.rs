//! Behavioural baselines: an agent with ten days of steady history bursts
//! and uses an action it never used; the background pass raises explained
//! alerts (once each), suspends it as the settings say, records both in the
//! audit log and sends the webhook. A new agent is still learning and is
//! not flagged.

use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use steward_testkit::{Backend, TestServer, callers};
use steward_types::*;

use crate::support::*;
use crate::webhooks::{receiver, subscribe};

/// Wait (up to 60 s) until `check` holds.
async fn eventually<T>(what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    for _ in 0..600 {
        if let Some(v) = check().await {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

fn hour_start(t: DateTime<Utc>) -> i64 {
    t.timestamp().div_euclid(3600) * 3600 * 1000
}

async fn behaviour_alerts_explain_suspend_and_stay_single(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.behaviour_interval_secs = 1).await;
    let admin = &s.admin;
    callers::setup(admin, "scout").await.unwrap();
    low_risk_agent(admin, "rookie", "owner@example.com").await;
    admin
        .put_action(&PutAction {
            name: "delete".into(),
            description: String::new(),
            resource_types: vec!["api".into()],
            context: Default::default(),
        })
        .await
        .unwrap();
    let scout = admin.get_agent("scout").await.unwrap();
    let hook = receiver(vec![200]).await;
    subscribe(admin, &hook, &["behaviour.*"]).await;

    // Settings: bad ones change nothing; good ones are audited.
    let defaults = admin.behaviour_settings().await.unwrap();
    assert_eq!(defaults, BehaviourSettings::default());
    for bad in [
        BehaviourSettings {
            baseline_days: 0,
            ..Default::default()
        },
        BehaviourSettings {
            factor: 1.0,
            ..Default::default()
        },
        BehaviourSettings {
            learning_days: 31,
            ..Default::default()
        },
    ] {
        assert_eq!(
            code(admin.set_behaviour_settings(&bad).await),
            ErrorCode::InvalidRequest
        );
    }
    assert_eq!(admin.behaviour_settings().await.unwrap(), defaults);
    let wanted = BehaviourSettings {
        suspend_on: vec![Signal::Requests],
        ..Default::default()
    };
    assert_eq!(admin.set_behaviour_settings(&wanted).await.unwrap(), wanted);

    // Ten days of history for scout: 5 calls every hour, around the clock.
    let now = Utc::now();
    if now.minute() == 59 && now.second() >= 30 {
        // Keep the burst below inside one hour.
        tokio::time::sleep(Duration::from_secs(u64::from(61 - now.second()))).await;
    }
    let this_hour = hour_start(Utc::now());
    let mut rows = Vec::new();
    for h in 1..=240 {
        rows.push(format!(
            "('default', '{}', {}, 5, 0, 0, 0, 0)",
            scout.id,
            this_hour - h * 3_600_000
        ));
    }
    // And one hour older than any baseline or learning period reaches: the
    // pass deletes it.
    let ancient = this_hour - 200 * 24 * 3_600_000;
    rows.push(format!(
        "('default', '{}', {ancient}, 5, 0, 0, 0, 0)",
        scout.id
    ));
    let store = s.server.store();
    store
        .execute_raw(&format!(
            "INSERT INTO agent_activity (tenant_id, agent_id, hour, requests, denials, bytes, records, spawns) VALUES {}",
            rows.join(", ")
        ))
        .await
        .unwrap();
    store
        .execute_raw(&format!(
            "INSERT INTO agent_footprint (tenant_id, agent_id, action, resource_type, uses, first_seen, last_seen) \
             VALUES ('default', '{}', 'call', 'api', 1200, {}, {})",
            scout.id,
            this_hour - 240 * 3_600_000,
            this_hour - 3_600_000
        ))
        .await
        .unwrap();

    // The baseline as the agent's page shows it.
    let b = admin.agent_baseline("scout").await.unwrap();
    assert_eq!(b.learning_until, None);
    assert_eq!(b.hours_of_day.len(), 24);
    let requests = b
        .signals
        .iter()
        .find(|x| x.signal == Signal::Requests)
        .unwrap();
    assert_eq!((requests.busiest_hour, requests.threshold), (5, 25));
    assert_eq!(b.footprint.len(), 1);

    // A burst of 30 calls (5 an hour is its busiest; flagged above 25), one
    // first use of `delete`, and the same burst from the new agent.
    for _ in 0..30 {
        admin.decide(&callers::call("scout")).await.unwrap();
        admin.decide(&callers::call("rookie")).await.unwrap();
    }
    let mut delete = callers::call("scout");
    delete.action = "delete".into();
    let denied = admin.decide(&delete).await.unwrap();
    assert_eq!(denied.decision, Decision::Deny);

    let alerts = eventually("two alerts", async || {
        let page = admin.list_alerts(&AlertQuery::default()).await.unwrap();
        (page.items.len() >= 2).then_some(page.items)
    })
    .await;
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let kept = store
        .agent_history(
            "default",
            &scout.id,
            chrono::DateTime::from_timestamp_millis(ancient).unwrap(),
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(
        kept.first_seen,
        chrono::DateTime::from_timestamp_millis(this_hour - 240 * 3_600_000),
        "hours past the longest baseline and learning period are deleted"
    );
    assert_eq!(
        kept.hours.len(),
        241,
        "the last ten days and this hour are kept"
    );
    assert!(
        alerts.iter().all(|a| a.agent_name == "scout"),
        "{alerts:#?}"
    );
    let burst = alerts
        .iter()
        .find(|a| a.signal == Signal::Requests)
        .unwrap();
    assert!(burst.observed > 25, "{burst:?}");
    assert_eq!((burst.usual, burst.threshold), (5, 25));
    assert!(burst.suspended);
    assert_eq!(burst.status, "open");
    assert!(
        burst
            .message
            .contains("its busiest hour in the last 14 days had 5 requests (flagged above 25)"),
        "{}",
        burst.message
    );
    let first_use = alerts
        .iter()
        .find(|a| a.signal == Signal::NewAction)
        .unwrap();
    assert_eq!(first_use.subject, "delete on api");
    assert!(!first_use.suspended);

    // The agent is suspended with the reason, by the behaviour task.
    let after = admin.get_agent("scout").await.unwrap();
    assert_eq!(after.state, AgentState::Suspended);
    assert!(
        after
            .state_reason
            .as_deref()
            .unwrap_or_default()
            .contains("behaviour alert"),
        "{after:?}"
    );
    let log = admin
        .list_audit(&AuditFilter {
            agent: Some("scout".into()),
            action: Some("agent.*".into()),
            limit: Some(500),
            ..Default::default()
        })
        .await
        .unwrap();
    let actions: Vec<(&str, &str)> = log
        .items
        .iter()
        .map(|e| (e.action.as_str(), e.actor.id.as_str()))
        .collect();
    assert!(
        actions.contains(&("agent.suspend", "behaviour")),
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| a.0 == "agent.behaviour_alert")
            .count(),
        2,
        "{actions:?}"
    );

    // The webhook went out.
    eventually("the behaviour.alert webhook", async || {
        let seen = hook.seen.lock().unwrap();
        seen.iter()
            .any(|(_, body)| String::from_utf8_lossy(body).contains("behaviour.alert"))
            .then_some(())
    })
    .await;

    // Passes go on; nothing is raised twice, and rookie is still learning.
    let size = store.audit_size().await.unwrap();
    eventually("the pass to catch up", async || {
        let b = admin.agent_baseline("rookie").await.unwrap();
        (b.observed_through >= size).then_some(())
    })
    .await;
    let rookie = admin.agent_baseline("rookie").await.unwrap();
    assert!(rookie.learning_until.is_some(), "{rookie:?}");
    assert_eq!(rookie.open_alerts, 0);
    let all = admin.list_alerts(&AlertQuery::default()).await.unwrap();
    assert_eq!(all.items.len(), 2);

    // Filters, and bad filters change nothing.
    let only = admin
        .list_alerts(&AlertQuery {
            signal: Some("new_action".into()),
            agent: Some("scout".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(only.items.len(), 1);
    for bad in [
        AlertQuery {
            status: Some("closed".into()),
            ..Default::default()
        },
        AlertQuery {
            signal: Some("mood".into()),
            ..Default::default()
        },
    ] {
        assert_eq!(code(admin.list_alerts(&bad).await), ErrorCode::InvalidQuery);
    }
    assert_eq!(
        code(
            admin
                .list_alerts(&AlertQuery {
                    agent: Some("nobody".into()),
                    ..Default::default()
                })
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(admin.get_alert("bha_missing").await),
        ErrorCode::NotFound
    );

    // The dashboard shows them on the overview and the agent's page.
    let mut browser = crate::dashboard::Browser::new(&s.server.url());
    assert!(
        browser
            .sign_in(steward_testkit::ADMIN_TOKEN)
            .await
            .is_redirection()
    );
    let (_, _, overview) = browser.get("/ui").await;
    assert!(
        overview.contains("Agents acting out of character (2 open)"),
        "{overview}"
    );
    assert!(
        overview.contains("first use of delete on api"),
        "{overview}"
    );
    let (_, _, page) = browser.get(&format!("/ui/agents/{}", scout.id)).await;
    assert!(page.contains("<h2>Behaviour</h2>"), "{page}");
    assert!(
        page.contains("<tr><td>requests</td>") && page.contains("<td>5</td><td>25</td></tr>"),
        "{page}"
    );
    assert!(
        page.contains("call on api (1230), delete on api (1)"),
        "{page}"
    );

    // Resolving: a person says what it was; once only.
    let wrong = ResolveAlert {
        resolution: "ignored".into(),
        note: None,
    };
    assert_eq!(
        code(admin.resolve_alert(&burst.id, &wrong).await),
        ErrorCode::InvalidRequest
    );
    let resolved = admin
        .resolve_alert(
            &burst.id,
            &ResolveAlert {
                resolution: "confirmed".into(),
                note: Some("a retry loop; fixed in 1.4.2".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(resolved.status, "resolved");
    assert_eq!(resolved.resolution.as_deref(), Some("confirmed"));
    assert!(resolved.resolved_by.is_some());
    assert_eq!(
        code(admin.resolve_alert(&burst.id, &wrong).await),
        ErrorCode::InvalidRequest
    );
    let again = ResolveAlert {
        resolution: "expected".into(),
        note: None,
    };
    assert_eq!(
        code(admin.resolve_alert(&burst.id, &again).await),
        ErrorCode::AlertResolved
    );
    let open = admin
        .list_alerts(&AlertQuery {
            status: Some("open".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(open.items.len(), 1);
    assert_eq!(open.items[0].id, first_use.id);
    // The agent stays suspended until a person resumes it.
    assert_eq!(
        admin.get_agent("scout").await.unwrap().state,
        AgentState::Suspended
    );
    let resolves = admin
        .list_audit(&AuditFilter {
            action: Some("behaviour_alert.resolve".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(resolves.items.len(), 1);

    // An auditor reads but does not resolve.
    human(admin, "audrey@example.com").await;
    let token = token_for(admin, "audit", TokenRole::Auditor, "audrey@example.com").await;
    let auditor = s.client(&token.secret);
    assert_eq!(
        auditor
            .list_alerts(&AlertQuery::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    assert_eq!(
        code(auditor.resolve_alert(&first_use.id, &again).await),
        ErrorCode::Forbidden
    );

    // One node reads the log at a time: the server's node holds the lease,
    // so another is turned away until it lapses; then it takes over.
    let lease = chrono::Duration::seconds(30);
    let now = Utc::now();
    let turned_away = steward_server::behaviour::run_pass(store, "intruder", now, lease)
        .await
        .unwrap();
    assert!(turned_away.skipped);
    let later = now + chrono::Duration::minutes(5);
    let took_over = steward_server::behaviour::run_pass(store, "intruder", later, lease)
        .await
        .unwrap();
    assert!(!took_over.skipped);
    assert!(took_over.raised.is_empty());
    s.stop().await;
}

/// Turned off, nothing is raised; the activity is still counted.
async fn turned_off_nothing_is_raised(backend: Backend) {
    let s = TestServer::start_with(backend, |c| c.behaviour_interval_secs = 1).await;
    let admin = &s.admin;
    callers::setup(admin, "quiet").await.unwrap();
    admin
        .set_behaviour_settings(&BehaviourSettings {
            enabled: false,
            learning_days: 0,
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..40 {
        admin.decide(&callers::call("quiet")).await.unwrap();
    }
    let size = s.server.store().audit_size().await.unwrap();
    let b = eventually("the pass to catch up", async || {
        let b = admin.agent_baseline("quiet").await.unwrap();
        (b.observed_through >= size).then_some(b)
    })
    .await;
    let requests = b
        .signals
        .iter()
        .find(|x| x.signal == Signal::Requests)
        .unwrap();
    // All 40 are counted, in this hour or (had it just turned) the last.
    assert_eq!(requests.this_hour + requests.total, 40, "{b:?}");
    assert_eq!(b.footprint.len(), 1);
    assert_eq!(b.footprint[0].action, "call");
    let alerts = admin.list_alerts(&AlertQuery::default()).await.unwrap();
    assert!(alerts.items.is_empty(), "{alerts:?}");
    s.stop().await;
}

steward_testkit::on_both_backends!(
    behaviour_alerts_explain_suspend_and_stay_single,
    turned_off_nothing_is_raised
);
