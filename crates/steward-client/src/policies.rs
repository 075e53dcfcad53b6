//! Resource types, actions, policies, known resources and decisions.

use steward_types::{
    ActionDef, DecisionRequest, DecisionResponse, Page, Policy, PolicyQuery, PutAction, PutPolicy,
    PutResourceType, ResourceEntity, ResourceType,
};

use crate::{Client, Result};

impl Client {
    /// `GET /v1/resource-types`.
    pub async fn list_resource_types(&self) -> Result<Vec<ResourceType>> {
        self.get(&["v1", "resource-types"]).await
    }

    /// `POST /v1/resource-types`: declare or replace a resource type.
    pub async fn put_resource_type(&self, request: &PutResourceType) -> Result<ResourceType> {
        self.post(&["v1", "resource-types"], request).await
    }

    /// `DELETE /v1/resource-types/{name}`.
    pub async fn delete_resource_type(&self, name: &str) -> Result<()> {
        self.delete(&["v1", "resource-types", name]).await
    }

    /// `GET /v1/actions`.
    pub async fn list_actions(&self) -> Result<Vec<ActionDef>> {
        self.get(&["v1", "actions"]).await
    }

    /// `POST /v1/actions`: declare or replace an action.
    pub async fn put_action(&self, request: &PutAction) -> Result<ActionDef> {
        self.post(&["v1", "actions"], request).await
    }

    /// `DELETE /v1/actions/{name}`.
    pub async fn delete_action(&self, name: &str) -> Result<()> {
        self.delete(&["v1", "actions", name]).await
    }

    /// `GET /v1/schema`: the tenant's Cedar schema text.
    pub async fn schema(&self) -> Result<String> {
        self.get_text(&["v1", "schema"]).await
    }

    /// `GET /v1/policies`.
    pub async fn list_policies(&self, query: &PolicyQuery) -> Result<Page<Policy>> {
        self.get_query(&["v1", "policies"], query).await
    }

    /// `POST /v1/policies`: create or replace a policy.
    pub async fn put_policy(&self, request: &PutPolicy) -> Result<Policy> {
        self.post(&["v1", "policies"], request).await
    }

    /// `GET /v1/policies/{id}`.
    pub async fn get_policy(&self, id: &str) -> Result<Policy> {
        self.get(&["v1", "policies", id]).await
    }

    /// `DELETE /v1/policies/{id}`.
    pub async fn delete_policy(&self, id: &str) -> Result<()> {
        self.delete(&["v1", "policies", id]).await
    }

    /// `GET /v1/policies/{id}/versions`, newest first.
    pub async fn policy_versions(&self, id: &str) -> Result<Vec<Policy>> {
        self.get(&["v1", "policies", id, "versions"]).await
    }

    /// `POST /v1/entities`: record a known resource.
    pub async fn put_entity(&self, entity: &ResourceEntity) -> Result<ResourceEntity> {
        self.post(&["v1", "entities"], entity).await
    }

    /// `GET /v1/entities/{type}`.
    pub async fn list_entities(
        &self,
        entity_type: &str,
        query: &PolicyQuery,
    ) -> Result<Page<ResourceEntity>> {
        self.get_query(&["v1", "entities", entity_type], query)
            .await
    }

    /// `POST /v1/decisions`.
    pub async fn decide(&self, request: &DecisionRequest) -> Result<DecisionResponse> {
        self.post(&["v1", "decisions"], request).await
    }
}

impl Client {
    /// `POST /v1/apply`: bring the tenant to a declared state (or, with
    /// `dry_run`, answer the plan only).
    pub async fn apply(
        &self,
        request: &steward_types::ApplyRequest,
    ) -> Result<steward_types::ApplyResponse> {
        self.post(&["v1", "apply"], request).await
    }
}

/// The tamper-evident log.
impl Client {
    /// `GET /v1/audit/public-key`.
    pub async fn audit_public_key(&self) -> Result<steward_types::AuditPublicKey> {
        self.get(&["v1", "audit", "public-key"]).await
    }

    /// `GET /v1/audit/checkpoint`: the latest signed checkpoint.
    pub async fn audit_checkpoint(&self) -> Result<steward_types::Checkpoint> {
        self.get(&["v1", "audit", "checkpoint"]).await
    }

    /// `GET /v1/audit/checkpoints`.
    pub async fn audit_checkpoints(&self) -> Result<Vec<steward_types::Checkpoint>> {
        self.get(&["v1", "audit", "checkpoints"]).await
    }

    /// `GET /v1/audit/proofs/inclusion`.
    pub async fn audit_inclusion(
        &self,
        query: &steward_types::InclusionQuery,
    ) -> Result<steward_types::InclusionProof> {
        self.get_query(&["v1", "audit", "proofs", "inclusion"], query)
            .await
    }

    /// `GET /v1/audit/proofs/consistency`.
    pub async fn audit_consistency(
        &self,
        query: &steward_types::ConsistencyQuery,
    ) -> Result<steward_types::ConsistencyProof> {
        self.get_query(&["v1", "audit", "proofs", "consistency"], query)
            .await
    }

    /// `GET /v1/audit/verify`: verify the whole stored log.
    pub async fn audit_verify(&self) -> Result<steward_types::AuditVerification> {
        self.get(&["v1", "audit", "verify"]).await
    }
}

/// Exporting the tamper-evident log.
impl Client {
    /// `GET /v1/audit/export`: the tenant's entries in a time range, with a
    /// manifest signed by the log's key.
    pub async fn audit_export(
        &self,
        query: &steward_types::AuditExportQuery,
    ) -> Result<steward_types::AuditExport> {
        self.get_query(&["v1", "audit", "export"], query).await
    }
}
