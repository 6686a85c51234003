//! The AWS platform: DynamoDB store, EventBridge publisher, DynamoDB reference data and
//! any connectors (HTTP system APIs in Lambda; tests may plug in simulators).

use std::time::Duration;

use o2c_app::ports::{Clock, Crm, Erp, Platform, Psa, SystemClock};
use o2c_connectors::{HttpConnector, HttpCrm, HttpErp, HttpPsa, Timeouts};

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

/// Adapters for one process.
pub struct AwsPlatform<C, P, E> {
    /// State / idempotency / rejections.
    pub store: DynamoStore,
    /// Publisher.
    pub publisher: EventBridgePublisher,
    /// Reference data.
    pub reference: DynamoReferenceData,
    /// CRM.
    pub crm: C,
    /// PSA.
    pub psa: P,
    /// ERP.
    pub erp: E,
}

/// The Lambda platform: HTTP connectors.
pub type LambdaPlatform = AwsPlatform<HttpCrm, HttpPsa, HttpErp>;

impl<C, P, E> AwsPlatform<C, P, E> {
    /// AWS adapters with the given connectors, clients built from `sdk`.
    pub fn with_connectors(
        sdk: &aws_config::SdkConfig,
        tables: Tables,
        bus_name: String,
        reference_ttl: Duration,
        crm: C,
        psa: P,
        erp: E,
    ) -> Self {
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), tables);
        let publisher = EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(sdk), bus_name);
        let reference = DynamoReferenceData::new(store.clone(), reference_ttl);
        Self { store, publisher, reference, crm, psa, erp }
    }
}

impl LambdaPlatform {
    /// Builds every client once (cold start).
    pub fn from_config(sdk: &aws_config::SdkConfig, c: &Config) -> Result<Self, o2c_connectors::ConfigError> {
        let t = Timeouts { connect: Duration::from_secs(2), request: c.connector_timeout };
        let psa = HttpPsa(HttpConnector::new(o2c_app::ports::System::Psa, &c.psa_base_url, c.connector_token.clone(), t)?);
        let erp = HttpErp(HttpConnector::new(o2c_app::ports::System::Erp, &c.erp_base_url, c.connector_token.clone(), t)?);
        let crm = HttpCrm(HttpConnector::new(o2c_app::ports::System::Crm, &c.crm_base_url, c.connector_token.clone(), t)?);
        let tables = Tables { state: c.state_table.clone(), idempotency: c.idempotency_table.clone() };
        Ok(Self::with_connectors(sdk, tables, c.event_bus_name.clone(), c.reference_cache, crm, psa, erp))
    }
}

impl<C: Crm + 'static, P: Psa + 'static, E: Erp + 'static> Platform for AwsPlatform<C, P, E> {
    type Store = DynamoStore;
    type Publisher = EventBridgePublisher;
    type Reference = DynamoReferenceData;
    type Crm = C;
    type Psa = P;
    type Erp = E;

    fn store(&self) -> &DynamoStore {
        &self.store
    }
    fn publisher(&self) -> &EventBridgePublisher {
        &self.publisher
    }
    fn reference(&self) -> &DynamoReferenceData {
        &self.reference
    }
    fn crm(&self) -> &C {
        &self.crm
    }
    fn psa(&self) -> &P {
        &self.psa
    }
    fn erp(&self) -> &E {
        &self.erp
    }
    fn clock(&self) -> &dyn Clock {
        &SystemClock
    }
}
