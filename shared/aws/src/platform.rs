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
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(10))
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(3))
        .timeout_config(timeouts)
        .load()
        .await
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
