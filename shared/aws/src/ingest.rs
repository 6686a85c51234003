//! The AWS ingestion function (feature `ingest`), behind the stack's HTTP API on two routes:
//! - `POST /v1/webhooks/{vendor}/{object}`: vendors that call a webhook — payment platforms,
//!   e-signature services — where the vendor's own signature is verified **before** the
//!   payload is read as anything;
//! - `POST /v1/ingest/{vendor}/{object}` (`AWS_IAM` authorization): systems that sign
//!   nothing of their own — an ERP's integration flow, a CRM's middleware — call with AWS
//!   credentials (SigV4). API Gateway verifies the signature and the caller's
//!   `execute-api:Invoke` on the route's path before the function runs, so a principal's
//!   IAM policy names the vendors it may speak for (`…/POST/v1/ingest/netsuite/*`); the
//!   function fails closed without an IAM identity and logs the caller's ARN.
//!
//! Either way the payload is then mapped by the mapping `{vendor}/{object}` (the same files
//! and engine as `o2c serve`'s `POST /v1/ingest/…`, compiled into the function) and published
//! on the stage's bus. A payload that cannot be mapped is parked in the state table with
//! every failing path (secrets redacted), as `o2c serve` parks it, and answered `422`.
//!
//! Answers (JSON, `ErrorCode` / `ErrorMessage` like `o2c serve`'s):
//! - `404` no such mapping, or on the webhook route a vendor with no signature scheme (only
//!   signing vendors may call without AWS credentials);
//! - `401` on the IAM route, a request without an IAM identity (the route is not
//!   IAM-authorized: misconfigured, refused);
//! - `413` a body over `INGEST_MAX_BODY_BYTES` (default 256 KB; the HTTP API itself takes at
//!   most 10 MB);
//! - `401` no signature, a wrong one, a Stripe timestamp outside its 300 s tolerance, or no
//!   signing secret configured for the vendor (fail closed);
//! - `403` a mapping that would publish a source the function may not (`INGEST_SOURCES`;
//!   its role's `events:source` condition says the same);
//! - `422` unmappable (parked); `200` published, as `PutEvents` answers; `500` when the bus
//!   or the table failed — the vendor retries, and the mapped events' ids and idempotency
//!   keys derive from the vendor's record, so a retry is absorbed downstream.
//!
//! Configuration, read once at cold start: `EVENT_BUS_NAME`, `STATE_TABLE`,
//! `WEBHOOK_SECRETS` (a JSON object, vendor → secret or list of secrets while one rolls;
//! the template resolves it from Secrets Manager at deploy time), `INGEST_MAX_BODY_BYTES`,
//! `INGEST_SOURCES`, `MAPPINGS_REFRESH_SECONDS`.
//!
//! Mappings change without a rebuild: `o2c map --publish` writes checked mapping files to
//! the stage's state table, and the function reads them at most every
//! `MAPPINGS_REFRESH_SECONDS` (default 60), each replacing the compiled-in file of its name
//! when its `version` is higher (a deployment that bumps the version takes over again); a
//! published file that does not load leaves that name's last good version in force.

use std::collections::BTreeMap;
use std::sync::Arc;

use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use aws_lambda_events::http::{HeaderMap, HeaderValue, header};
use base64::Engine as _;
use o2c_app::clock::Clock;
use o2c_app::ports::RejectionStore;
use o2c_mapping::registry::Loaded;
use o2c_mapping::{ingest, webhooks};
use serde_json::{Value, json};
use tracing::{info, warn};

use crate::config::ConfigError;
use crate::dynamo::{DynamoStore, Tables};
use crate::eventbridge::EventBridgePublisher;

/// The route vendors' webhooks arrive on (authenticated by the vendor's signature).
pub const WEBHOOK_ROUTE: &str = "POST /v1/webhooks/{vendor}/{object}";

/// The route systems with AWS credentials post vendor payloads on (`AWS_IAM` authorization).
pub const IAM_ROUTE: &str = "POST /v1/ingest/{vendor}/{object}";

/// The largest body taken by default: EventBridge's entry limit (256 KB); a vendor's
/// webhook is far smaller.
pub const DEFAULT_MAX_BODY: usize = 256 * 1024;

/// How often, by default, the mappings published to the stage are read (seconds).
pub const DEFAULT_MAPPINGS_REFRESH_SECONDS: u64 = 60;

/// The sources a mapped payload may publish by default: the source systems', never o2c's own.
pub const DEFAULT_SOURCES: [&str; 5] = ["o2c.crm", "o2c.clm", "o2c.psa", "o2c.bank", "o2c.erp"];

/// The ingestion function's configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// `EVENT_BUS_NAME`.
    pub event_bus_name: String,
    /// `STATE_TABLE` (where the unmappable are parked).
    pub state_table: String,
    /// `WEBHOOK_SECRETS`: signing secrets by vendor (never logged).
    pub secrets: BTreeMap<String, Vec<String>>,
    /// `INGEST_MAX_BODY_BYTES`.
    pub max_body: usize,
    /// `INGEST_SOURCES`.
    pub sources: Vec<String>,
    /// `MAPPINGS_REFRESH_SECONDS`: how often the mappings published to the stage are read
    /// (default 60; `off`: only the compiled-in set).
    pub mappings_refresh: Option<std::time::Duration>,
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secrets' vendors only.
        f.debug_struct("IngestConfig")
            .field("event_bus_name", &self.event_bus_name)
            .field("state_table", &self.state_table)
            .field("secrets_for", &self.secrets.keys().collect::<Vec<_>>())
            .field("max_body", &self.max_body)
            .field("sources", &self.sources)
            .field("mappings_refresh", &self.mappings_refresh)
            .finish()
    }
}

impl IngestConfig {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads from any lookup; every problem is reported at once.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut errs = Vec::new();
        let mut req = |k: &str| crate::config::required(&get, &mut errs, k);
        let (event_bus_name, state_table) = (req("EVENT_BUS_NAME"), req("STATE_TABLE"));
        let mut secrets = BTreeMap::new();
        if let Some(text) = get("WEBHOOK_SECRETS").filter(|t| !t.trim().is_empty()) {
            match serde_json::from_str::<BTreeMap<String, Value>>(&text) {
                Err(_) => errs.push("WEBHOOK_SECRETS is not a JSON object of vendor → secret(s)".into()),
                Ok(map) => {
                    for (vendor, v) in map {
                        let list: Vec<String> = match v {
                            Value::String(s) => vec![s],
                            Value::Array(a) => a.into_iter().filter_map(|x| x.as_str().map(str::to_owned)).collect(),
                            _ => Vec::new(),
                        };
                        if !webhooks::SCHEMES.contains(&vendor.as_str()) {
                            errs.push(format!(
                                "WEBHOOK_SECRETS names `{vendor}`, which has no signature scheme ({})",
                                webhooks::SCHEMES.join(", ")
                            ));
                        } else if list.is_empty() || list.iter().any(|s| s.trim().is_empty()) {
                            errs.push(format!("WEBHOOK_SECRETS[{vendor}] must be a non-empty secret or list of them"));
                        } else {
                            secrets.insert(vendor, list);
                        }
                    }
                }
            }
        }
        let max_body = match get("INGEST_MAX_BODY_BYTES") {
            None => DEFAULT_MAX_BODY,
            Some(v) => v.parse().unwrap_or_else(|_| {
                errs.push(format!("INGEST_MAX_BODY_BYTES=`{v}` is not a whole number"));
                DEFAULT_MAX_BODY
            }),
        };
        let sources = get("INGEST_SOURCES")
            .map(|v| v.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_else(|| DEFAULT_SOURCES.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        let mappings_refresh = match get("MAPPINGS_REFRESH_SECONDS").as_deref().map(str::trim) {
            None | Some("") => Some(std::time::Duration::from_secs(DEFAULT_MAPPINGS_REFRESH_SECONDS)),
            Some("off") => None,
            Some(v) => match v.parse() {
                Ok(n) => Some(std::time::Duration::from_secs(n)),
                Err(_) => {
                    errs.push(format!("MAPPINGS_REFRESH_SECONDS=`{v}` is neither a whole number of seconds nor `off`"));
                    None
                }
            },
        };
        if errs.is_empty() {
            Ok(Self { event_bus_name, state_table, secrets, max_body, sources, mappings_refresh })
        } else {
            Err(ConfigError(errs))
        }
    }
}

/// The function: mappings, configuration and clients, built once per execution environment.
pub struct Ingest {
    mappings: tokio::sync::Mutex<Mappings>,
    config: IngestConfig,
    publisher: EventBridgePublisher,
    store: DynamoStore,
    clock: Arc<dyn Clock>,
}

/// The mappings in force, and where newer ones come from.
struct Mappings {
    loaded: Arc<Loaded>,
    /// Set by [`Ingest::with_published_mappings`].
    live: Option<Live>,
}

/// Mapping files published to the stage's table (`o2c map --publish`) take over the
/// compiled-in set without a rebuild: read at most every `every`; a published file is taken
/// when its `version` is above the compiled file's of that name (so a deployment with a newer
/// version wins again), and one that does not load leaves that name's last good in force.
struct Live {
    compiled: Arc<Loaded>,
    every: chrono::Duration,
    checked_at: Option<chrono::DateTime<chrono::Utc>>,
    published: Option<Vec<(String, String)>>,
    /// The last good published mapping of each name.
    good: BTreeMap<String, Arc<o2c_mapping::Mapping>>,
}

/// How long a request waits for the published mappings before going on with those in force.
const PUBLISHED_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A JSON answer.
fn answer(status: u16, body: &Value) -> ApiGatewayV2httpResponse {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    // `#[non_exhaustive]`: built field by field.
    let mut r = ApiGatewayV2httpResponse::default();
    r.status_code = i64::from(status);
    r.headers = headers;
    r.body = Some(Body::Text(body.to_string()));
    r
}

fn refuse(status: u16, code: &str, message: impl Into<String>) -> ApiGatewayV2httpResponse {
    answer(status, &json!({"ErrorCode": code, "ErrorMessage": message.into()}))
}

impl Ingest {
    /// The function over `mappings`, publishing with `publisher`, parking in `store`.
    pub fn new(mappings: Loaded, config: IngestConfig, publisher: EventBridgePublisher, store: DynamoStore, clock: Arc<dyn Clock>) -> Self {
        let mappings = tokio::sync::Mutex::new(Mappings { loaded: Arc::new(mappings), live: None });
        Self { mappings, config, publisher, store, clock }
    }

    /// Also takes the mapping files published to the stage (`o2c map --publish`), read at
    /// most every `every` (zero: on every request): a published file replaces the compiled-in
    /// one of its name when its version is higher, or adds a mapping; a file that does not
    /// load keeps that name's last good version, and a table that cannot be read (within
    /// a second) leaves the mappings in force.
    #[must_use]
    pub fn with_published_mappings(self, every: std::time::Duration) -> Self {
        let every = chrono::Duration::from_std(every).unwrap_or(chrono::Duration::MAX);
        let loaded = self.mappings.into_inner().loaded;
        let live = Live { compiled: loaded.clone(), every, checked_at: None, published: None, good: BTreeMap::new() };
        Self { mappings: tokio::sync::Mutex::new(Mappings { loaded, live: Some(live) }), ..self }
    }

    /// The mappings in force (reading the published ones first when they are due).
    pub async fn mappings(&self) -> Arc<Loaded> {
        let mut m = self.mappings.lock().await;
        let now = self.clock.now();
        let Some(live) = m.live.as_mut() else { return m.loaded.clone() };
        if live.checked_at.is_some_and(|t| now - t < live.every) {
            return m.loaded.clone();
        }
        live.checked_at = Some(now);
        let published = match tokio::time::timeout(PUBLISHED_READ_TIMEOUT, self.store.mapping_files()).await {
            Ok(Ok(files)) => files,
            Ok(Err(e)) => {
                warn!(error = %e, "the published mappings cannot be read; the ones in force stay");
                return m.loaded.clone();
            }
            Err(_) => {
                warn!("the published mappings took over a second to read; the ones in force stay");
                return m.loaded.clone();
            }
        };
        if live.published.as_ref() == Some(&published) {
            return m.loaded.clone();
        }
        let mut set = live.compiled.mappings.clone();
        let mut taken = Vec::new();
        for (name, text) in &published {
            match Loaded::from_sources([(name.as_str(), text.as_str())]) {
                Ok(one) => {
                    if let Some(mapping) = one.mappings.get(name) {
                        live.good.insert(name.clone(), mapping.clone());
                    }
                }
                Err(problems) => {
                    warn!(mapping = %name, problems = %problems, "a published mapping does not load; its last good version stays")
                }
            }
            let Some(good) = live.good.get(name) else { continue };
            match live.compiled.mappings.get(name) {
                Some(c) if c.version >= good.version => {
                    info!(mapping = %name, published = good.version, deployed = c.version, "the deployed mapping is as new: the published one is not taken");
                }
                _ => {
                    taken.push(format!("{name} v{}", good.version));
                    set.insert(name.clone(), good.clone());
                }
            }
        }
        info!(taken = %taken.join(", "), "published mappings read");
        live.published = Some(published);
        m.loaded = Arc::new(Loaded { mappings: set, problems: Vec::new() });
        m.loaded.clone()
    }

    /// The vendor's webhook signature over `body`, checked before anything reads the payload;
    /// the reason it is refused (`401`).
    fn verify_signature(&self, vendor: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
        let signatures = webhooks::signatures(vendor, |h| headers.get(h).and_then(|v| v.to_str().ok()).map(str::to_owned));
        let sigs: Vec<&str> = signatures.iter().map(String::as_str).collect();
        let now = self.clock.now().timestamp();
        let Some(secrets) = self.config.secrets.get(vendor) else {
            warn!(vendor = %vendor, "webhook refused: no signing secret configured (WEBHOOK_SECRETS)");
            return Err(format!("no {vendor} signing secret is configured"));
        };
        let mut why = String::new();
        let verified = secrets.iter().any(|secret| match webhooks::verify(vendor, &sigs, body, secret, now) {
            Ok(()) => true,
            Err(e) => {
                why = e;
                false
            }
        });
        if !verified {
            warn!(vendor = %vendor, reason = %why, "webhook signature refused");
            return Err(format!("the {vendor} webhook signature does not verify: {why}"));
        }
        Ok(())
    }

    /// Answers one HTTP API request (payload format 2.0).
    pub async fn handle(&self, req: ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let vendor = req.path_parameters.get("vendor").cloned().unwrap_or_default();
        let object = req.path_parameters.get("object").cloned().unwrap_or_default();
        let name = format!("{vendor}/{object}");
        let request_id = req.request_context.request_id.clone().unwrap_or_default();
        let iam_route = req.route_key.as_deref() == Some(IAM_ROUTE);
        let span = tracing::info_span!("ingest", mapping = %name, request_id = %request_id, iam = iam_route);
        let _entered = span.enter();
        let mappings = self.mappings().await;
        let Some(mapping) = mappings.mappings.get(&name) else {
            return refuse(404, "ResourceNotFoundException", format!("no mapping {name}"));
        };
        if iam_route {
            // API Gateway checked the SigV4 signature and the caller's execute-api:Invoke on
            // this path; without the identity it passes, the route is not IAM-authorized.
            let caller = req.request_context.authorizer.as_ref().and_then(|a| a.iam.as_ref()).and_then(|i| i.user_arn.as_deref());
            let Some(caller) = caller else {
                warn!("ingest refused: no IAM identity (is the route's authorizer AWS_IAM?)");
                return refuse(401, "MissingAuthenticationToken", "this route takes AWS credentials (SigV4)");
            };
            info!(caller = %caller, "caller authenticated by IAM");
        } else if webhooks::header(&vendor).is_none() {
            return refuse(
                404,
                "ResourceNotFoundException",
                format!("{vendor} calls no webhook with a signature scheme ({})", webhooks::SCHEMES.join(", ")),
            );
        }
        // The body as sent (the HTTP API base64-encodes what is not text).
        let raw = req.body.clone().unwrap_or_default();
        let body = if req.is_base64_encoded {
            match base64::engine::general_purpose::STANDARD.decode(raw.as_bytes()) {
                Ok(b) => b,
                Err(_) => return refuse(400, "BadRequest", "the body is not valid base64"),
            }
        } else {
            raw.into_bytes()
        };
        if body.len() > self.config.max_body {
            return refuse(413, "RequestEntityTooLarge", format!("the body is {} bytes, more than {}", body.len(), self.config.max_body));
        }
        if !iam_route && let Err(why) = self.verify_signature(&vendor, &req.headers, &body) {
            return refuse(401, "InvalidSignature", why);
        }
        if !self.config.sources.iter().any(|s| *s == mapping.emit.source) {
            return refuse(403, "AccessDeniedException", format!("{name} publishes {}, which this function may not", mapping.emit.source));
        }
        let mapped = match ingest::map(mapping, &body) {
            Ok(m) => m,
            Err(issues) => {
                let parked = ingest::rejection(mapping, &body, &issues, self.clock.now(), request_id.clone());
                if let Err(e) = self.store.park(&parked).await {
                    warn!(error = %e, "could not park an unmappable payload");
                    return refuse(500, "InternalFailure", format!("could not park the unmappable payload: {e}"));
                }
                info!(rejection_id = %parked.rejection_id, issues = issues.len(), "unmappable payload parked");
                return answer(422, &ingest::refused(mapping, &issues, &parked.rejection_id));
            }
        };
        let mut entries = ingest::entries(&mapped);
        for e in &mut entries {
            e.event_bus_name = Some(self.config.event_bus_name.clone());
        }
        match self.publisher.put_entries(&entries).await {
            Ok(ids) => {
                info!(events = ids.len(), "published");
                let results: Vec<Value> = ids.iter().map(|id| json!({"EventId": id})).collect();
                answer(200, &ingest::accepted(mapping, 0, &results))
            }
            Err(e) => {
                warn!(error = %e, "publish failed; the vendor will retry");
                refuse(500, "InternalFailure", format!("could not publish: {e}"))
            }
        }
    }
}

/// Builds the function from the environment, the SDK configuration and the compiled-in
/// `mappings`, and serves invocations.
pub async fn run(mappings: &[(&str, &str)]) -> Result<(), lambda_runtime::Error> {
    crate::lambda::init_tracing();
    let (config, sdk) = crate::config::both(IngestConfig::from_env(), crate::platform::lambda_sdk_config())?;
    // A mapping that does not load fails the cold start loudly (it was checked by `make test`).
    let loaded = Loaded::from_sources(mappings.iter().copied()).map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
    let publisher = EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&sdk), config.event_bus_name.clone());
    let tables = Tables { state: config.state_table.clone(), idempotency: String::new() };
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), tables);
    let refresh = config.mappings_refresh;
    let mut ingest = Ingest::new(loaded, config, publisher, store, Arc::new(o2c_app::clock::SystemClock));
    if let Some(every) = refresh {
        ingest = ingest.with_published_mappings(every);
    }
    let ingest = Arc::new(ingest);
    lambda_runtime::run(lambda_runtime::service_fn(move |event: lambda_runtime::LambdaEvent<ApiGatewayV2httpRequest>| {
        let ingest = ingest.clone();
        async move { Ok::<_, std::convert::Infallible>(ingest.handle(event.payload).await) }
    }))
    .await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn when_the_configuration_is_read_should_take_secrets_by_vendor_and_report_every_problem() {
        let c = IngestConfig::from_lookup(env(&[
            ("EVENT_BUS_NAME", "o2c-dev"),
            ("STATE_TABLE", "o2c-dev-state"),
            ("WEBHOOK_SECRETS", r#"{"stripe": ["whsec_old", "whsec_new"], "docusign": "dshmac"}"#),
        ]))
        .unwrap();
        assert_eq!(c.secrets["stripe"], vec!["whsec_old", "whsec_new"]);
        assert_eq!(c.secrets["docusign"], vec!["dshmac"]);
        assert_eq!((c.max_body, c.sources.len()), (DEFAULT_MAX_BODY, DEFAULT_SOURCES.len()));
        assert_eq!(c.mappings_refresh, Some(std::time::Duration::from_secs(DEFAULT_MAPPINGS_REFRESH_SECONDS)));
        let off =
            IngestConfig::from_lookup(env(&[("EVENT_BUS_NAME", "b"), ("STATE_TABLE", "t"), ("MAPPINGS_REFRESH_SECONDS", "off")])).unwrap();
        assert_eq!(off.mappings_refresh, None);
        assert!(c.sources.iter().any(|s| s == "o2c.erp"), "ERPs report their invoices");
        assert!(!format!("{c:?}").contains("whsec"), "secrets never in a debug print");
        let err = IngestConfig::from_lookup(env(&[
            ("WEBHOOK_SECRETS", r#"{"hubspot": "x", "stripe": ""}"#),
            ("INGEST_MAX_BODY_BYTES", "lots"),
            ("MAPPINGS_REFRESH_SECONDS", "hourly"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        for want in [
            "EVENT_BUS_NAME is not set",
            "STATE_TABLE is not set",
            "`hubspot`",
            "WEBHOOK_SECRETS[stripe]",
            "INGEST_MAX_BODY_BYTES",
            "`hourly`",
        ] {
            assert!(text.contains(want), "{want} not in {text}");
        }
        assert!(!text.contains("whsec"));
    }
}
