//! Behavioural baselines: settings, alerts, an agent's baseline.

use steward_types::{AlertQuery, Baseline, BehaviourAlert, BehaviourSettings, Page, ResolveAlert};

use crate::{Client, Result};

impl Client {
    /// `GET /v1/behaviour/settings`.
    pub async fn behaviour_settings(&self) -> Result<BehaviourSettings> {
        self.get(&["v1", "behaviour", "settings"]).await
    }

    /// `PUT /v1/behaviour/settings`.
    pub async fn set_behaviour_settings(
        &self,
        settings: &BehaviourSettings,
    ) -> Result<BehaviourSettings> {
        self.put(&["v1", "behaviour", "settings"], settings).await
    }

    /// `GET /v1/behaviour/alerts`.
    pub async fn list_alerts(&self, query: &AlertQuery) -> Result<Page<BehaviourAlert>> {
        self.get_query(&["v1", "behaviour", "alerts"], query).await
    }

    /// `GET /v1/behaviour/alerts/{id}`.
    pub async fn get_alert(&self, id: &str) -> Result<BehaviourAlert> {
        self.get(&["v1", "behaviour", "alerts", id]).await
    }

    /// `POST /v1/behaviour/alerts/{id}/resolve`.
    pub async fn resolve_alert(&self, id: &str, request: &ResolveAlert) -> Result<BehaviourAlert> {
        self.post(&["v1", "behaviour", "alerts", id, "resolve"], request)
            .await
    }

    /// `GET /v1/agents/{id}/baseline`.
    pub async fn agent_baseline(&self, agent: &str) -> Result<Baseline> {
        self.get(&["v1", "agents", agent, "baseline"]).await
    }
}
