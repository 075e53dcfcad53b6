//! The agent lifecycle state machine.
//!
//! ```text
//! proposed ──submit──▶ active (low risk) | pending_approval (medium, high)
//! proposed | pending_approval ──activate──▶ active      (an administrator)
//! proposed | pending_approval ──reject──▶ rejected
//! active ──suspend──▶ suspended ──resume──▶ active
//! any non-terminal ──decommission──▶ decommissioned   (cascades to descendants)
//! active | suspended | pending_approval | proposed ──expire──▶ expired
//! ```
//! decommissioned, rejected and expired are terminal.

use steward_types::{AgentState, ErrorCode};

use crate::Error;

/// Something that moves an agent between states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// Submit a draft for registration.
    Submit,
    /// Make a proposed or pending agent active.
    Activate,
    /// Refuse a registration.
    Reject,
    /// Stop an active agent for now.
    Suspend,
    /// Let a suspended agent act again.
    Resume,
    /// Retire for good.
    Decommission,
    /// Its expiry time passed.
    Expire,
}

impl Transition {
    /// Every transition.
    pub const ALL: [Transition; 7] = [
        Transition::Submit,
        Transition::Activate,
        Transition::Reject,
        Transition::Suspend,
        Transition::Resume,
        Transition::Decommission,
        Transition::Expire,
    ];

    /// The verb, as used in URLs and audit actions.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Submit => "submit",
            Transition::Activate => "activate",
            Transition::Reject => "reject",
            Transition::Suspend => "suspend",
            Transition::Resume => "resume",
            Transition::Decommission => "decommission",
            Transition::Expire => "expire",
        }
    }
}

/// Where `transition` takes an agent in state `from`, or
/// `invalid_transition` naming what is allowed from `from`. A submitted draft
/// waits for its registration's approval chain, whatever its risk tier: the
/// chains are configured per tier (even low risk may need one), so the
/// store files the approval, or activates the agent at once where its
/// tier's chain is empty.
pub fn next_state(from: AgentState, transition: Transition) -> Result<AgentState, Error> {
    use AgentState::*;
    let to = match (from, transition) {
        (Proposed, Transition::Submit) => Some(PendingApproval),
        (Proposed | PendingApproval, Transition::Activate) => Some(Active),
        (Proposed | PendingApproval, Transition::Reject) => Some(Rejected),
        (Active, Transition::Suspend) => Some(Suspended),
        (Suspended, Transition::Resume) => Some(Active),
        (s, Transition::Decommission) if !s.is_terminal() => Some(Decommissioned),
        (s, Transition::Expire) if !s.is_terminal() => Some(Expired),
        _ => None,
    };
    to.ok_or_else(|| {
        let allowed: Vec<&str> = Transition::ALL
            .into_iter()
            .filter(|t| *t != Transition::Expire && allowed_from(from, *t))
            .map(Transition::as_str)
            .collect();
        let hint = if allowed.is_empty() {
            format!("'{}' is final", from.as_str())
        } else {
            format!("allowed from '{}': {}", from.as_str(), allowed.join(", "))
        };
        Error::new(
            ErrorCode::InvalidTransition,
            format!(
                "cannot {} an agent that is {} ({hint})",
                transition.as_str(),
                from.as_str()
            ),
        )
        .with_details(serde_json::json!({
            "state": from.as_str(),
            "transition": transition.as_str(),
            "allowed": allowed,
        }))
    })
}

/// Whether `t` may be applied to an agent in state `from`.
pub fn allowed_from(from: AgentState, t: Transition) -> bool {
    use AgentState::*;
    matches!(
        (from, t),
        (Proposed, Transition::Submit)
            | (
                Proposed | PendingApproval,
                Transition::Activate | Transition::Reject
            )
            | (Active, Transition::Suspend)
            | (Suspended, Transition::Resume)
    ) || (t == Transition::Decommission && !from.is_terminal())
}

/// Whether an agent in this state may authenticate and act.
pub fn may_act(state: AgentState) -> bool {
    state == AgentState::Active
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_submitted_draft_waits_for_its_chain() {
        assert_eq!(
            next_state(AgentState::Proposed, Transition::Submit),
            Ok(AgentState::PendingApproval)
        );
    }

    #[test]
    fn suspend_resume_round_trip() {
        let s = next_state(AgentState::Active, Transition::Suspend).unwrap();
        assert_eq!(s, AgentState::Suspended);
        let a = next_state(s, Transition::Resume).unwrap();
        assert_eq!(a, AgentState::Active);
    }

    #[test]
    fn invalid_transition_names_the_allowed_ones() {
        let err = next_state(AgentState::Active, Transition::Resume).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidTransition);
        assert!(err.message.contains("suspend"), "{}", err.message);
        let err = next_state(AgentState::Decommissioned, Transition::Resume).unwrap_err();
        assert!(err.message.contains("final"), "{}", err.message);
    }

    proptest! {
        /// Terminal states never change, and the allowed list agrees with next_state.
        #[test]
        fn terminal_states_are_final(
            from in prop::sample::select(AgentState::ALL.to_vec()),
            t in prop::sample::select(Transition::ALL.to_vec()),
        ) {
            let result = next_state(from, t);
            if from.is_terminal() {
                prop_assert!(result.is_err());
            }
            if t != Transition::Expire {
                prop_assert_eq!(result.is_ok(), allowed_from(from, t));
            }
            if let Ok(to) = result {
                prop_assert!(to != from);
            }
        }
    }
}
