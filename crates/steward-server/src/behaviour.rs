//! Behavioural baselines on the server: the background pass that reads new
//! audit entries into agents' hourly activity (`Store::ingest_activity`)
//! and judges each recent hour that changed against the agent's baseline
//! (`steward_core::behaviour::assess`), raising alerts and, where the
//! tenant's settings say so, suspending the agent. Nothing here is on the
//! decision path: decisions only write the audit records this reads.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use steward_core::behaviour::{self, Assessment, History, Settings, hour_of};
use steward_core::{ChangeContext, Error};
use steward_store::Store;
use steward_store::behaviour::{Tally, Touched};
use steward_types::{Baseline, BehaviourAlert, Signal, SignalBaseline};

/// Audit entries read per round trip: a millisecond or two of work.
const PAGE: i64 = 200;
/// Pages read per pass at most (their counts are written in one
/// transaction at the end of the pass).
const PAGES_PER_PASS: usize = 250;
/// The least pause between pages. Each pause is also at least three times
/// the page's own work, so catching up on a backlog takes at most a quarter
/// of a core from decisions (still several times a busy server's 1000
/// decisions a second).
const BREATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// What one pass did.
#[derive(Debug, Default)]
pub struct Pass {
    /// Audit entries read.
    pub read: usize,
    /// Alerts raised.
    pub raised: Vec<BehaviourAlert>,
    /// Whether another node held the lease.
    pub skipped: bool,
}

/// Read what the log gained since the last pass and judge the hours it
/// touched. `node` names the caller for the lease; `lease` is how long it
/// holds it. Hours more than one hour before `now` are counted but not
/// judged: catching up on a long history raises nothing about the past.
pub async fn run_pass(
    store: &Store,
    node: &str,
    now: DateTime<Utc>,
    lease: Duration,
) -> Result<Pass, Error> {
    let mut pass = Pass::default();
    let Some(from) = store.claim_activity(node, now, lease).await? else {
        pass.skipped = true;
        return Ok(pass);
    };
    // Read in small pages with pauses between, writing nothing; then write
    // the counts and move the cursor once. Stop well inside the lease.
    let budget = (lease / 2).to_std().unwrap_or_default();
    let started = std::time::Instant::now();
    let mut tally = Tally::default();
    let mut through = from;
    for _ in 0..PAGES_PER_PASS {
        let page = std::time::Instant::now();
        let (next, read) = store.read_activity(through, PAGE, &mut tally).await?;
        through = next;
        pass.read += read;
        if read < PAGE as usize || started.elapsed() >= budget {
            break;
        }
        tokio::time::sleep(BREATHER.max(page.elapsed() * 3)).await;
    }
    if through == from {
        return Ok(pass);
    }
    let keep_from = now - Duration::days(steward_core::behaviour::HISTORY_DAYS);
    let Some(touched) = store
        .commit_activity(node, from, through, tally, keep_from)
        .await?
    else {
        pass.skipped = true;
        return Ok(pass);
    };
    let mut settings: BTreeMap<String, Settings> = BTreeMap::new();
    let recent = hour_of(now) - Duration::hours(1);
    for touched in touched.iter().filter(|t| t.hour >= recent) {
        // One agent's trouble does not keep the others from being judged;
        // its hour is judged again when it next acts in it.
        match judge(store, &mut settings, touched, now).await {
            Ok(mut raised) => pass.raised.append(&mut raised),
            Err(e) => tracing::warn!(
                tenant = %touched.tenant_id,
                agent = %touched.agent_id,
                error = %e,
                "could not judge an agent's hour against its baseline"
            ),
        }
    }
    Ok(pass)
}

/// Judge one agent's hour; the alerts it raised.
async fn judge(
    store: &Store,
    settings: &mut BTreeMap<String, Settings>,
    touched: &Touched,
    now: DateTime<Utc>,
) -> Result<Vec<BehaviourAlert>, Error> {
    if !settings.contains_key(&touched.tenant_id) {
        let s = store.behaviour_settings(&touched.tenant_id).await?;
        settings.insert(touched.tenant_id.clone(), s);
    }
    let Some(s) = settings.get(&touched.tenant_id).filter(|s| s.enabled) else {
        return Ok(Vec::new());
    };
    let (history, current) = hour_and_history(
        store,
        &touched.tenant_id,
        &touched.agent_id,
        touched.hour,
        s,
    )
    .await?;
    let new_actions = store
        .actions_first_used(&touched.tenant_id, &touched.agent_id, touched.hour)
        .await?;
    let findings = match behaviour::assess(s, &history, touched.hour, &current, &new_actions) {
        Assessment::Judged(findings) => findings,
        Assessment::Learning { .. } => return Ok(Vec::new()),
    };
    let ctx = ChangeContext::system(&touched.tenant_id, "behaviour", now);
    let mut raised = Vec::new();
    for f in &findings {
        let suspend = s.suspend_on.contains(&f.signal);
        if let Some(alert) = store
            .raise_alert(&ctx, &touched.agent_id, touched.hour, f, suspend)
            .await?
        {
            tracing::warn!(
                tenant = %touched.tenant_id,
                agent = %alert.agent_name,
                signal = alert.signal.as_str(),
                suspended = alert.suspended,
                "{}",
                alert.message
            );
            raised.push(alert);
        }
    }
    Ok(raised)
}

/// The agent's baseline window before `hour`, and what it did in `hour`.
async fn hour_and_history(
    store: &Store,
    tenant: &str,
    agent: &str,
    hour: DateTime<Utc>,
    s: &Settings,
) -> Result<(History, behaviour::Activity), Error> {
    let from = hour - Duration::days(i64::from(s.baseline_days));
    let mut history = store
        .agent_history(tenant, agent, from, hour + Duration::hours(1))
        .await?;
    let current = history
        .hours
        .iter()
        .find(|(t, _)| *t == hour)
        .map(|(_, a)| *a)
        .unwrap_or_default();
    // Hours whose alert is open or was confirmed are not normal.
    let alerted = store.alerted_hours(tenant, agent, from, hour).await?;
    history
        .hours
        .retain(|(t, _)| *t < hour && !alerted.contains(t));
    Ok((history, current))
}

/// What normal looks like for an agent at `now`.
pub async fn baseline(
    store: &Store,
    tenant: &str,
    agent: &steward_types::Agent,
    now: DateTime<Utc>,
) -> Result<Baseline, Error> {
    // The cursor first: everything read after it holds at least what it
    // says was read.
    let observed_through = store.activity_cursor().await?;
    let s = store.behaviour_settings(tenant).await?;
    let hour = hour_of(now);
    let (history, current) = hour_and_history(store, tenant, &agent.id, hour, &s).await?;
    let learning_until = history
        .first_seen
        .map(|f| f + Duration::days(i64::from(s.learning_days)))
        .filter(|until| *until > hour);
    let seen = behaviour::active_hours(&history);
    let signals = Signal::COUNTS
        .into_iter()
        .map(|signal| {
            let (busiest_hour, threshold) = behaviour::threshold(&s, signal, &history);
            SignalBaseline {
                signal,
                busiest_hour,
                threshold,
                this_hour: behaviour::count(&current, signal),
                total: history
                    .hours
                    .iter()
                    .map(|(_, a)| behaviour::count(a, signal))
                    .fold(0u64, u64::saturating_add),
            }
        })
        .collect();
    let (_, open_alerts) = store.open_alerts(tenant, Some(&agent.id), 0).await?;
    Ok(Baseline {
        agent_id: agent.id.clone(),
        agent_name: agent.name.clone(),
        first_seen: history.first_seen,
        learning_until,
        baseline_days: s.baseline_days,
        active_hours: history.hours.len() as u64,
        hours_of_day: (0..24u32).filter(|h| seen[*h as usize]).collect(),
        signals,
        footprint: store.agent_footprint(tenant, &agent.id).await?,
        open_alerts,
        observed_through,
    })
}
