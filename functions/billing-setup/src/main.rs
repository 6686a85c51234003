//! Lambda function `billing-setup`: the billing-setup step behind its SQS queue (see `infra/template.yaml`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    o2c_aws::lambda::run_step(&o2c_app::steps::BillingSetup).await
}
