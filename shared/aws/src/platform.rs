//! The AWS platform: DynamoDB store, EventBridge publisher, DynamoDB reference data and
//! any connectors (HTTP system APIs in Lambda; tests may plug in simulators).

use std::sync::Arc;
use std::time::Duration;

use o2c_app::ports::{Adapters, System, SystemClock};
use o2c_connectors::{HttpConnector, HttpCrm, HttpErp, HttpPsa, HttpTax, Timeouts};

use crate::config::Config;
use crate::dynamo::{DynamoReferenceData, DynamoStore, Tables};
use crate::eventbridge::EventBridgePublisher;

/// SDK configuration shared by every client of the process: the standard retry mode with
/// 3 attempts and explicit timeouts (a DynamoDB call that hangs must not eat the Lambda's
/// whole deadline). `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` are honoured.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .timeout_config(shared_timeouts())
        .load()
        .await
}

/// The explicit timeouts every SDK client shares (connect 2 s, attempt 3 s, operation 10 s).
fn shared_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(10))
        .build()
}

/// The SDK configuration of a Lambda function, from what Lambda puts in its environment:
/// `AWS_REGION` and the execution role's `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN` (fixed for the life of an execution environment), with the same retry
/// and timeout settings as [`sdk_config`] but without aws-config's provider chains: the
/// profile files, SSO, web identity and STS, IMDS and ECS providers are not linked into the
/// functions (a smaller bootstrap, a shorter cold start). The shared-configuration variables a
/// function may be given are honoured: `AWS_ENDPOINT_URL` (unless
/// `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`), `AWS_USE_FIPS_ENDPOINT`,
/// `AWS_USE_DUALSTACK_ENDPOINT`, `AWS_SDK_UA_APP_ID`; a service-specific
/// `AWS_ENDPOINT_URL_<SERVICE>` is refused rather than ignored. Every problem of these
/// variables is reported at once.
pub fn lambda_sdk_config() -> Result<aws_config::SdkConfig, crate::config::ConfigError> {
    lambda_sdk_config_from(&std::env::vars().collect())
}

/// [`lambda_sdk_config`] over the variables `env` (the process environment there).
pub fn lambda_sdk_config_from(
    env: &std::collections::HashMap<String, String>,
) -> Result<aws_config::SdkConfig, crate::config::ConfigError> {
    let get = |k: &str| env.get(k).filter(|v| !v.trim().is_empty()).cloned();
    let mut errs = Vec::new();
    let region = get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION"));
    if region.is_none() {
        errs.push("AWS_REGION is not set".to_owned());
    }
    let (key, secret) = (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"));
    for (name, value) in [("AWS_ACCESS_KEY_ID", &key), ("AWS_SECRET_ACCESS_KEY", &secret)] {
        if value.is_none() {
            errs.push(format!("{name} is not set"));
        }
    }
    let flag = |name: &str, errs: &mut Vec<String>| match get(name).map(|v| v.to_ascii_lowercase()) {
        None => None,
        Some(v) if v == "true" => Some(true),
        Some(v) if v == "false" => Some(false),
        Some(v) => {
            errs.push(format!("{name} must be true or false, not {v:?}"));
            None
        }
    };
    let use_fips = flag("AWS_USE_FIPS_ENDPOINT", &mut errs);
    let use_dual_stack = flag("AWS_USE_DUALSTACK_ENDPOINT", &mut errs);
    let ignore_endpoints = flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", &mut errs).unwrap_or(false);
    let mut per_service: Vec<&String> = env.keys().filter(|k| k.starts_with("AWS_ENDPOINT_URL_")).collect();
    per_service.sort();
    for name in per_service {
        errs.push(format!("{name} is not supported by the functions: set AWS_ENDPOINT_URL (one endpoint for every service)"));
    }
    let app_name = match get("AWS_SDK_UA_APP_ID").map(aws_config::AppName::new) {
        None => None,
        Some(Ok(name)) => Some(name),
        Some(Err(e)) => {
            errs.push(format!("AWS_SDK_UA_APP_ID: {e}"));
            None
        }
    };
    let (Some(region), Some(key), Some(secret), true) = (region, key, secret, errs.is_empty()) else {
        // Lambda sets them from the execution role; on a workstation (cargo lambda watch,
        // aws-lambda-rie) they must be exported, e.g. `aws configure export-credentials --format env`.
        errs.push("the functions read the region and credentials from the environment only, as Lambda sets them".to_owned());
        return Err(crate::config::ConfigError(errs));
    };
    let credentials = aws_credential_types::Credentials::new(key, secret, get("AWS_SESSION_TOKEN"), None, "lambda-environment");
    let mut builder = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(credentials))
        .identity_cache(aws_config::identity::IdentityCache::lazy().build())
        .sleep_impl(aws_smithy_async::rt::sleep::SharedAsyncSleep::new(aws_smithy_async::rt::sleep::TokioSleep::new()))
        .time_source(aws_smithy_async::time::SharedTimeSource::new(aws_smithy_async::time::SystemTimeSource::new()))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .timeout_config(shared_timeouts());
    builder.set_use_fips(use_fips);
    builder.set_use_dual_stack(use_dual_stack);
    builder.set_app_name(app_name);
    if let Some(url) = get("AWS_ENDPOINT_URL").filter(|_| !ignore_endpoints) {
        builder = builder.endpoint_url(url);
    }
    Ok(builder.build())
}

/// An SQS client for long polling: its attempt timeout must outlast the 20 s maximum
/// `WaitTimeSeconds` of `ReceiveMessage`, which the shared 3 s attempt timeout would cut.
pub fn sqs_long_poll_client(sdk: &aws_config::SdkConfig) -> aws_sdk_sqs::Client {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(25))
        .operation_timeout(Duration::from_secs(60))
        .build();
    aws_sdk_sqs::Client::from_conf(aws_sdk_sqs::config::Builder::from(sdk).timeout_config(timeouts).build())
}

/// The AWS adapters (DynamoDB store and reference data, EventBridge publisher) with
/// whichever connectors: HTTP in Lambda, the simulators in tests.
pub type AwsPlatform<C, P, E, T> = Adapters<DynamoStore, EventBridgePublisher, DynamoReferenceData, C, P, E, T>;

/// The Lambda platform: HTTP connectors.
pub type LambdaPlatform = AwsPlatform<HttpCrm, HttpPsa, HttpErp, HttpTax>;

/// The connectors of a platform.
pub struct Connectors<C, P, E, T> {
    /// CRM.
    pub crm: C,
    /// PSA.
    pub psa: P,
    /// ERP.
    pub erp: E,
    /// Tax engine.
    pub tax: T,
}

/// AWS adapters with the given connectors, clients built from `sdk`.
pub fn with_connectors<C, P, E, T>(
    sdk: &aws_config::SdkConfig,
    tables: Tables,
    bus_name: String,
    reference_ttl: Duration,
    connectors: Connectors<C, P, E, T>,
) -> AwsPlatform<C, P, E, T> {
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), tables);
    let publisher = EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(sdk), bus_name);
    let reference = DynamoReferenceData::new(store.clone(), reference_ttl);
    let Connectors { crm, psa, erp, tax } = connectors;
    // Tools and tests log metrics; a Lambda function writes them as EMF (`lambda_platform`).
    Adapters {
        store,
        publisher,
        reference,
        crm,
        psa,
        erp,
        tax,
        clock: Arc::new(SystemClock),
        metrics: Arc::new(o2c_app::metrics::LogMetrics),
    }
}

/// The Lambda platform from the function's configuration: every client built once (cold start).
pub fn lambda_platform(sdk: &aws_config::SdkConfig, c: &Config) -> Result<LambdaPlatform, o2c_connectors::ConfigError> {
    // One HTTP client for the four connectors: one pool, the trust roots loaded once.
    let http = o2c_connectors::http_client(Timeouts { connect: Duration::from_secs(2), request: c.connector_timeout })?;
    let connector = |system, url: &str| HttpConnector::with_client(http.clone(), system, url, c.connector_token.clone());
    let psa = HttpPsa(connector(System::Psa, &c.psa_base_url)?);
    let erp = HttpErp(connector(System::Erp, &c.erp_base_url)?);
    let crm = HttpCrm(connector(System::Crm, &c.crm_base_url)?);
    let tax = HttpTax(connector(System::Tax, &c.tax_base_url)?);
    let tables = Tables { state: c.state_table.clone(), idempotency: c.idempotency_table.clone() };
    let mut platform = with_connectors(sdk, tables, c.event_bus_name.clone(), c.reference_cache, Connectors { crm, psa, erp, tax });
    platform.metrics = Arc::new(crate::emf::EmfMetrics::new("o2c", &c.stage));
    Ok(platform)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    const BASE: [(&str, &str); 3] = [("AWS_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "AKID"), ("AWS_SECRET_ACCESS_KEY", "secret")];

    #[test]
    fn when_lambda_environment_is_incomplete_or_unsupported_should_name_every_problem() {
        let err = lambda_sdk_config_from(&env(&[
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_USE_FIPS_ENDPOINT", "yes"),
            ("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:8000"),
        ]))
        .unwrap_err();
        assert_eq!(
            err.0[..4],
            [
                "AWS_REGION is not set".to_owned(),
                "AWS_ACCESS_KEY_ID is not set".to_owned(),
                "AWS_USE_FIPS_ENDPOINT must be true or false, not \"yes\"".to_owned(),
                "AWS_ENDPOINT_URL_DYNAMODB is not supported by the functions: set AWS_ENDPOINT_URL (one endpoint for every service)"
                    .to_owned(),
            ]
        );
        assert!(err.0[4].contains("environment only"), "{err}");
    }

    #[tokio::test]
    async fn when_lambda_environment_is_complete_should_configure_region_credentials_endpoint_retries_and_timeouts() {
        use aws_credential_types::provider::ProvideCredentials;
        let mut vars = env(&BASE);
        vars.extend(env(&[
            ("AWS_SESSION_TOKEN", "token"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ("AWS_USE_FIPS_ENDPOINT", "true"),
        ]));
        let sdk = lambda_sdk_config_from(&vars).unwrap();
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:4566"));
        assert_eq!((sdk.use_fips(), sdk.use_dual_stack()), (Some(true), None));
        assert_eq!(sdk.retry_config().map(|r| r.max_attempts()), Some(3));
        assert_eq!(sdk.timeout_config().and_then(|t| t.operation_attempt_timeout()), Some(Duration::from_secs(3)));
        assert!(sdk.sleep_impl().is_some() && sdk.identity_cache().is_some());
        // The credentials are the variables given, not whatever the test process has.
        let creds = sdk.credentials_provider().unwrap().provide_credentials().await.unwrap();
        assert_eq!((creds.access_key_id(), creds.secret_access_key(), creds.session_token()), ("AKID", "secret", Some("token")));

        // Without an endpoint override, or with overrides ignored, the SDK resolves the
        // Region's public endpoints.
        assert_eq!(lambda_sdk_config_from(&env(&BASE)).unwrap().endpoint_url(), None);
        vars.insert("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS".into(), "true".into());
        assert_eq!(lambda_sdk_config_from(&vars).unwrap().endpoint_url(), None);
    }
}
