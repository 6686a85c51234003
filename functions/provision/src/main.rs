//! Lambda function `provision`: the provision step behind its SQS queue (see `infra/template.yaml`).

use std::sync::Arc;

use lambda_runtime::{run, service_fn};
use o2c_app::{Step, StepService};
use o2c_aws::{Config, LambdaPlatform};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    o2c_aws::lambda::init_tracing();
    // Fail fast at cold start: every configuration problem is reported at once.
    let config = Config::from_env()?;
    // Clients are built once per execution environment, never per event.
    let sdk = o2c_aws::sdk_config().await;
    let platform = LambdaPlatform::from_config(&sdk, &config)?;
    let service = Arc::new(StepService::new(platform, config.service()));
    run(service_fn(move |event| o2c_aws::lambda::handle_sqs(service.clone(), Step::Provision, event))).await
}
