//! Lambda function `ingest`: vendors' signed webhooks from the stack's HTTP API, mapped by
//! the mapping files compiled into it and published on the bus (see `o2c_aws::ingest` and
//! `infra/template.yaml`).

include!(concat!(env!("OUT_DIR"), "/mappings.rs"));

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    o2c_aws::ingest::run(MAPPINGS).await
}
