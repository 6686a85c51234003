//! Typed configuration read once at cold start; every missing or malformed variable is
//! reported at once, so a misconfigured function fails its first invocation loudly.

use std::time::Duration;

use o2c_app::ServiceConfig;

/// Function configuration (environment set by `infra/template.yaml`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Stage (`O2C_STAGE`).
    pub stage: String,
    /// Event bus (`EVENT_BUS_NAME`).
    pub event_bus_name: String,
    /// State table (`STATE_TABLE`).
    pub state_table: String,
    /// Idempotency table (`IDEMPOTENCY_TABLE`).
    pub idempotency_table: String,
    /// PSA system API (`PSA_BASE_URL`).
    pub psa_base_url: String,
    /// ERP system API (`ERP_BASE_URL`).
    pub erp_base_url: String,
    /// CRM system API (`CRM_BASE_URL`).
    pub crm_base_url: String,
    /// Tax engine system API (`TAX_BASE_URL`).
    pub tax_base_url: String,
    /// Bearer token for the system APIs (`CONNECTOR_TOKEN`, optional).
    pub connector_token: Option<String>,
    /// Connector request timeout (`CONNECTOR_TIMEOUT_MS`, default 10 000).
    pub connector_timeout: Duration,
    /// Reference-data cache (`REFERENCE_CACHE_SECS`, default 300).
    pub reference_cache: Duration,
    /// How long completed keys absorb duplicates (`IDEMPOTENCY_TTL_HOURS`, default 168).
    pub idempotency_ttl: chrono::Duration,
    /// The function queue's `maxReceiveCount` (`MAX_RECEIVE_COUNT`, the template parameter
    /// its redrive policy uses): the last receive raises a dead-letter exception.
    pub max_receive_count: Option<u32>,
    /// The function queue's DLQ name (`DEAD_LETTER_QUEUE`), for operator messages.
    pub dead_letter_queue: Option<String>,
}

/// Every configuration problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .0.join("; "))]
pub struct ConfigError(pub Vec<String>);

/// Both results, or every problem of both (a function reports its whole configuration at
/// cold start: its own variables and the SDK's).
pub fn both<A, B>(a: Result<A, ConfigError>, b: Result<B, ConfigError>) -> Result<(A, B), ConfigError> {
    match (a, b) {
        (Ok(a), Ok(b)) => Ok((a, b)),
        (a, b) => Err(ConfigError(a.err().into_iter().chain(b.err()).flat_map(|e| e.0).collect())),
    }
}

/// The non-blank value of `key`, or an empty string with "`key` is not set" added to `errs`.
pub(crate) fn required(get: &impl Fn(&str) -> Option<String>, errs: &mut Vec<String>, key: &str) -> String {
    get(key).filter(|v| !v.trim().is_empty()).unwrap_or_else(|| {
        errs.push(format!("{key} is not set"));
        String::new()
    })
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any lookup (tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut errs = Vec::new();
        let mut req = |k: &str| required(&get, &mut errs, k);
        let event_bus_name = req("EVENT_BUS_NAME");
        let state_table = req("STATE_TABLE");
        let idempotency_table = req("IDEMPOTENCY_TABLE");
        let psa_base_url = req("PSA_BASE_URL");
        let erp_base_url = req("ERP_BASE_URL");
        let crm_base_url = req("CRM_BASE_URL");
        let tax_base_url = req("TAX_BASE_URL");
        let mut num = |k: &str, default: u64| match get(k) {
            None => default,
            Some(v) => v.parse().unwrap_or_else(|_| {
                errs.push(format!("{k}=`{v}` is not a whole number"));
                default
            }),
        };
        let connector_timeout = Duration::from_millis(num("CONNECTOR_TIMEOUT_MS", 10_000));
        let reference_cache = Duration::from_secs(num("REFERENCE_CACHE_SECS", 300));
        let ttl_hours = num("IDEMPOTENCY_TTL_HOURS", 168);
        let max_receive_count = get("MAX_RECEIVE_COUNT").map(|_| num("MAX_RECEIVE_COUNT", 0));
        for (k, v) in [
            ("PSA_BASE_URL", &psa_base_url),
            ("ERP_BASE_URL", &erp_base_url),
            ("CRM_BASE_URL", &crm_base_url),
            ("TAX_BASE_URL", &tax_base_url),
        ] {
            if !(v.is_empty() || v.starts_with("https://") || v.starts_with("http://")) {
                errs.push(format!("{k} must be an http(s) URL"));
            }
        }
        if !errs.is_empty() {
            return Err(ConfigError(errs));
        }
        Ok(Self {
            stage: get("O2C_STAGE").unwrap_or_else(|| "dev".into()),
            event_bus_name,
            state_table,
            idempotency_table,
            psa_base_url,
            erp_base_url,
            crm_base_url,
            tax_base_url,
            connector_token: get("CONNECTOR_TOKEN").filter(|t| !t.is_empty()),
            connector_timeout,
            reference_cache,
            idempotency_ttl: chrono::Duration::hours(i64::try_from(ttl_hours).unwrap_or(168)),
            max_receive_count: max_receive_count.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0),
            dead_letter_queue: get("DEAD_LETTER_QUEUE").filter(|q| !q.is_empty()),
        })
    }

    /// Protocol tunables.
    pub fn service(&self) -> ServiceConfig {
        let mut service = ServiceConfig { idempotency_ttl: self.idempotency_ttl, ..ServiceConfig::default() };
        service.connector_retry.attempt_timeout = self.connector_timeout;
        service
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_both_configurations_have_problems_should_report_every_one_of_them() {
        let bad = |m: &str| Err::<(), _>(ConfigError(vec![m.to_owned()]));
        assert_eq!(
            both(bad("STATE_TABLE is not set"), bad("AWS_REGION is not set")).unwrap_err().0,
            ["STATE_TABLE is not set", "AWS_REGION is not set"]
        );
        assert_eq!(both(Ok::<_, ConfigError>(1), bad("AWS_REGION is not set")).unwrap_err().0, ["AWS_REGION is not set"]);
        assert_eq!(both(Ok::<_, ConfigError>(1), Ok::<_, ConfigError>(2)).unwrap(), (1, 2));
    }

    #[test]
    fn when_variables_are_missing_should_report_every_one() {
        let err = Config::from_lookup(|k| (k == "STATE_TABLE").then(|| "t".to_owned())).unwrap_err();
        assert_eq!(err.0.len(), 6, "{err}");
        assert!(err.to_string().contains("EVENT_BUS_NAME is not set"));
    }

    #[test]
    fn when_everything_is_set_should_parse_defaults() {
        let c = Config::from_lookup(|k| match k {
            "CONNECTOR_TIMEOUT_MS" => Some("2500".into()),
            "CONNECTOR_TOKEN" => Some(String::new()),
            k if k.ends_with("_URL") => Some("http://127.0.0.1:9".into()),
            "REFERENCE_CACHE_SECS" | "IDEMPOTENCY_TTL_HOURS" => None,
            "MAX_RECEIVE_COUNT" => Some("5".into()),
            "DEAD_LETTER_QUEUE" => Some("o2c-dev-provision-dlq".into()),
            _ => Some("x".into()),
        })
        .unwrap();
        assert_eq!(c.connector_timeout, Duration::from_millis(2500));
        assert_eq!(c.connector_token, None);
        assert_eq!(c.idempotency_ttl, chrono::Duration::hours(168));
        assert_eq!(c.max_receive_count, Some(5));
        assert_eq!(c.service().connector_retry.attempt_timeout, Duration::from_millis(2500), "retries budget the connector timeout");
    }

    #[test]
    fn when_max_receive_count_is_not_a_number_should_say_so() {
        let err = Config::from_lookup(|k| match k {
            "MAX_RECEIVE_COUNT" => Some("five".into()),
            k if k.ends_with("_URL") => Some("http://127.0.0.1:9".into()),
            "CONNECTOR_TIMEOUT_MS" | "REFERENCE_CACHE_SECS" | "IDEMPOTENCY_TTL_HOURS" | "CONNECTOR_TOKEN" | "DEAD_LETTER_QUEUE" => None,
            _ => Some("x".into()),
        })
        .unwrap_err();
        assert!(err.to_string().contains("MAX_RECEIVE_COUNT=`five`"), "{err}");
    }
}
