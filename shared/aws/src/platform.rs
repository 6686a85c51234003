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

/// The standard retry mode with 3 attempts and explicit timeouts, for every SDK client.
fn shared_timeouts() -> aws_config::timeout::TimeoutConfig {
    aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(10))
        .build()
}

/// The SDK configuration of a Lambda function, from what Lambda puts in its environment:
/// `AWS_REGION` and the execution role's `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
/// `AWS_SESSION_TOKEN` (read by the environment provider on each resolution), plus
/// `AWS_ENDPOINT_URL` when set (the runtime emulator and moto). The same retry and timeout
/// settings as [`sdk_config`], without aws-config's provider chains: the profile files,
/// SSO, web identity and STS, IMDS and ECS credentials are not linked into the functions
/// (a smaller bootstrap, a shorter cold start). Every problem is reported at once.
pub fn lambda_sdk_config() -> Result<aws_config::SdkConfig, crate::config::ConfigError> {
    lambda_sdk_config_from(|k| std::env::var(k).ok())
}

/// [`lambda_sdk_config`] over the variables of `get`.
pub fn lambda_sdk_config_from(get: impl Fn(&str) -> Option<String>) -> Result<aws_config::SdkConfig, crate::config::ConfigError> {
    let mut errs = Vec::new();
    let region = get("AWS_REGION").or_else(|| get("AWS_DEFAULT_REGION")).filter(|r| !r.trim().is_empty());
    if region.is_none() {
        errs.push("AWS_REGION is not set".to_owned());
    }
    for key in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"] {
        crate::config::required(&get, &mut errs, key);
    }
    if !errs.is_empty() {
        // Lambda sets them from the execution role; on a workstation (cargo lambda watch,
        // aws-lambda-rie) they must be exported, e.g. `aws configure export-credentials --format env`.
        errs.push("the functions read the region and credentials from the environment only, as Lambda sets them".to_owned());
        return Err(crate::config::ConfigError(errs));
    }
    let credentials = aws_config::environment::EnvironmentVariableCredentialsProvider::new();
    let mut builder = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .region(region.map(aws_config::Region::new))
        .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(credentials))
        .identity_cache(aws_config::identity::IdentityCache::lazy().build())
        .sleep_impl(aws_smithy_async::rt::sleep::SharedAsyncSleep::new(aws_smithy_async::rt::sleep::TokioSleep::new()))
        .time_source(aws_smithy_async::time::SharedTimeSource::new(aws_smithy_async::time::SystemTimeSource::new()))
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .timeout_config(shared_timeouts());
    if let Some(url) = get("AWS_ENDPOINT_URL").filter(|u| !u.trim().is_empty()) {
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

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn when_lambda_environment_is_incomplete_should_name_every_missing_variable() {
        let err = lambda_sdk_config_from(env(&[("AWS_SECRET_ACCESS_KEY", "s")])).unwrap_err();
        assert_eq!(err.0[..2], ["AWS_REGION is not set".to_owned(), "AWS_ACCESS_KEY_ID is not set".to_owned()]);
        assert!(err.0[2].contains("environment only"), "{err}");
    }

    #[test]
    fn when_lambda_environment_is_complete_should_configure_region_endpoint_retries_and_timeouts() {
        let vars = &[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "AKID"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
        ];
        let sdk = lambda_sdk_config_from(env(vars)).unwrap();
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:4566"));
        assert_eq!(sdk.retry_config().map(|r| r.max_attempts()), Some(3));
        assert_eq!(sdk.timeout_config().and_then(|t| t.operation_attempt_timeout()), Some(Duration::from_secs(3)));
        assert!(sdk.credentials_provider().is_some() && sdk.sleep_impl().is_some() && sdk.identity_cache().is_some());
        // Without an endpoint override the SDK resolves the Region's public endpoints.
        let sdk = lambda_sdk_config_from(env(&[("AWS_REGION", "eu-west-1"), ("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "s")]))
            .unwrap();
        assert_eq!(sdk.endpoint_url(), None);
    }
}
