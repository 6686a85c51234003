//! Lambda function `exceptions`: the exceptions step behind its SQS queue (see `infra/template.yaml`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    o2c_aws::lambda::run_step(&o2c_app::steps::Exceptions).await
}
