//! Typed identities, and the one place their formats are decided.
//!
//! | id | format | derived from |
//! |---|---|---|
//! | [`EngagementId`] | `ENG-<opportunity id>` | the CRM opportunity (every duplicate lands on the same state) |
//! | [`ContractId`] | `CTR-<opportunity id>` | the opportunity |
//! | [`ExceptionId`] | `EXC-<engagement>-<cause>` | the engagement and the cause, so re-processing never duplicates it |
//! | [`ProjectKey`] | `<engagement>` for attempt 1, `<engagement>~<n>` after | the provisioning attempt (external key of create-or-get) |
//! | [`IdempotencyKey`] | as the producer gave it, or `derived:<detail-type>:<sha256>` | the event |
//!
//! On the wire (JSON, DynamoDB, SQLite) every id is its plain string.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps an id read from storage or the wire (no format check: ids from other
            /// systems are opaque).
            pub fn new(s: impl Into<String>) -> Self {
                Self(s.into())
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }

        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }
    };
}

id_type!(
    /// An engagement: one per CRM opportunity.
    EngagementId
);
id_type!(
    /// A contract.
    ContractId
);
id_type!(
    /// An exception on an engagement.
    ExceptionId
);
id_type!(
    /// The external key a project is created under (create-or-get).
    ProjectKey
);
id_type!(
    /// The business identity of an event, for deduplication.
    IdempotencyKey
);

impl EngagementId {
    /// The engagement of a CRM opportunity.
    pub fn for_opportunity(opportunity_id: &str) -> Self {
        Self(format!("ENG-{opportunity_id}"))
    }

    /// `ENG-…` as given, otherwise an opportunity id (operator input).
    pub fn parse_operator_input(arg: &str) -> Self {
        if arg.starts_with("ENG-") { Self(arg.to_owned()) } else { Self::for_opportunity(arg) }
    }
}

impl ContractId {
    /// The contract of a CRM opportunity.
    pub fn for_opportunity(opportunity_id: &str) -> Self {
        Self(format!("CTR-{opportunity_id}"))
    }
}

impl ProjectKey {
    /// The external key of provisioning attempt `attempt` (1-based) of an engagement.
    pub fn for_attempt(engagement: &EngagementId, attempt: u32) -> Self {
        if attempt <= 1 { Self(engagement.0.clone()) } else { Self(format!("{engagement}~{attempt}")) }
    }
}

impl ExceptionId {
    /// `system` sent attributes of the engagement it does not own (one per system, refreshed
    /// by each later update, closed by one that agrees with the owners).
    pub fn stewardship(engagement: &EngagementId, system: &str) -> Self {
        Self(format!("EXC-{engagement}-SOR-{system}"))
    }

    /// A change order needed by opportunity revision `revision`.
    pub fn change_order(engagement: &EngagementId, revision: u64) -> Self {
        Self(format!("EXC-{engagement}-CO-r{revision}"))
    }

    /// Provisioning attempt `attempt` failed.
    pub fn provisioning(engagement: &EngagementId, attempt: u32) -> Self {
        Self(format!("EXC-{engagement}-PROV-{attempt}"))
    }

    /// The billing schedule of attempt `attempt` was refused.
    pub fn billing_setup(engagement: &EngagementId, attempt: u32) -> Self {
        Self(format!("EXC-{engagement}-BILL-{attempt}"))
    }

    /// The CRM refused the write-back of sync version `version`.
    pub fn crm_writeback(engagement: &EngagementId, version: u64) -> Self {
        Self(format!("EXC-{engagement}-CRM-v{version}"))
    }

    /// Contract line `line_id`'s not-to-exceed cap held work back.
    pub fn cap_exceeded(engagement: &EngagementId, line_id: &str) -> Self {
        Self(format!("EXC-{engagement}-CAP-{line_id}"))
    }

    /// The tax engine refused draft `invoice_id`.
    pub fn tax_failed(engagement: &EngagementId, invoice_id: &str) -> Self {
        Self(format!("EXC-{engagement}-TAX-{invoice_id}"))
    }

    /// The ERP refused invoice `invoice_id`.
    pub fn invoice_posting(engagement: &EngagementId, invoice_id: &str) -> Self {
        Self(format!("EXC-{engagement}-POST-{invoice_id}"))
    }

    /// The reconciliation exception of an engagement (closed by its next clean run).
    pub fn reconciliation(engagement: &EngagementId) -> Self {
        Self(format!("EXC-{engagement}-RECON"))
    }

    /// The revenue-posting exception of an engagement (closed by its next posted journal).
    pub fn revenue_posting(engagement: &EngagementId) -> Self {
        Self(format!("EXC-{engagement}-REVENUE"))
    }

    /// The event keyed `idempotency_key` dead-lettered in `step`.
    pub fn dead_letter(engagement: &EngagementId, step: &str, idempotency_key: &str) -> Self {
        Self(format!("EXC-{engagement}-DLQ-{step}-{idempotency_key}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_ids_are_built_should_follow_their_documented_formats() {
        let e = EngagementId::for_opportunity("0068d00000GLBX01");
        assert_eq!(e, "ENG-0068d00000GLBX01");
        assert_eq!(EngagementId::parse_operator_input("ENG-x"), "ENG-x");
        assert_eq!(EngagementId::parse_operator_input("0068d00000GLBX01"), e);
        assert_eq!(ContractId::for_opportunity("0068d00000GLBX01"), "CTR-0068d00000GLBX01");
        assert_eq!(ProjectKey::for_attempt(&e, 1), "ENG-0068d00000GLBX01");
        assert_eq!(ProjectKey::for_attempt(&e, 3), "ENG-0068d00000GLBX01~3");
        assert_eq!(ExceptionId::provisioning(&e, 2), "EXC-ENG-0068d00000GLBX01-PROV-2");
        assert_eq!(serde_json::to_string(&e).unwrap_or_default(), "\"ENG-0068d00000GLBX01\"", "a plain string on the wire");
    }
}
