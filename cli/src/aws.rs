//! `--target aws`: the same commands against a stage's AWS resources (names from the
//! template), or any AWS-API endpoint given by `AWS_ENDPOINT_URL` (e.g. moto_server).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use o2c_app::StepService;
use o2c_app::bus::{PutEventsEntry, validate_entry};
use o2c_app::ports::RejectionStore;
use o2c_app::topology::{TEMPLATE, Topology};
use o2c_aws::dynamo::{DynamoStore, Tables};
use o2c_aws::eventbridge::EventBridgePublisher;
use o2c_aws::poller::{Poller, PollerOptions};
use o2c_aws::{Config, LambdaPlatform, ops, resources};
use o2c_domain::reference::ReferenceData;
use tokio::sync::watch;

use crate::Connectors;

fn topology() -> Result<Arc<Topology>> {
    Ok(Arc::new(Topology::from_sam_yaml(TEMPLATE)?))
}

fn tables(topo: &Topology, stage: &str) -> Tables {
    Tables { state: topo.table_name("StateTable", stage), idempotency: topo.table_name("IdempotencyTable", stage) }
}

/// The stage's DynamoDB store.
pub async fn store(stage: &str) -> Result<DynamoStore> {
    let sdk = o2c_aws::sdk_config().await;
    let topo = topology()?;
    Ok(DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), tables(&topo, stage)))
}

/// Runs every function of the template locally against the stage's queues.
pub async fn serve(stage: &str, c: &Connectors) -> Result<ExitCode> {
    let sdk = o2c_aws::sdk_config().await;
    let topo = topology()?;
    let deployed = Arc::new(
        resources::locate(&sdk, &topo, stage)
            .await
            .with_context(|| format!("stage {stage} is not deployed (sam deploy, or o2c bootstrap)"))?,
    );
    let t = tables(&topo, stage);
    let config = Config::from_lookup(|k| match k {
        "EVENT_BUS_NAME" => Some(deployed.bus_name.clone()),
        "STATE_TABLE" => Some(t.state.clone()),
        "IDEMPOTENCY_TABLE" => Some(t.idempotency.clone()),
        "O2C_STAGE" => Some(stage.to_owned()),
        "PSA_BASE_URL" => c.psa_url.clone(),
        "ERP_BASE_URL" => c.erp_url.clone(),
        "CRM_BASE_URL" => c.crm_url.clone(),
        other => std::env::var(other).ok(),
    })?;
    let platform = LambdaPlatform::from_config(&sdk, &config)?;
    let svc = Arc::new(StepService::new(platform, config.service()));
    let poller =
        Arc::new(Poller::new(o2c_aws::platform::sqs_long_poll_client(&sdk), svc, topo.clone(), deployed.clone(), PollerOptions::default()));
    let (tx, rx) = watch::channel(false);
    let mut tasks = poller.start(rx);
    println!(
        "o2c serve --target aws: stage {stage}, bus {}, {} functions and {} pipe(s) polling; Ctrl-C to stop",
        deployed.bus_name,
        topo.functions.len(),
        topo.pipes.len()
    );
    crate::serve::shutdown_signal().await;
    let _ = tx.send(true);
    while tasks.join_next().await.is_some() {}
    let stats = poller.stats();
    println!(
        "o2c serve: stopped after {} batch(es), {} record failure(s), {} piped message(s)",
        stats.batches.load(std::sync::atomic::Ordering::Relaxed),
        stats.failures.load(std::sync::atomic::Ordering::Relaxed),
        stats.piped.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(ExitCode::SUCCESS)
}

/// `PutEvents` to the stage's bus.
pub async fn send(stage: &str, entries: &[PutEventsEntry]) -> Result<ExitCode> {
    let sdk = o2c_aws::sdk_config().await;
    let bus = topology()?.bus_name(stage);
    let publisher = EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&sdk), bus.clone());
    let mut valid = Vec::new();
    let mut refused = 0;
    for e in entries {
        match validate_entry(e) {
            Ok(_) => valid.push(PutEventsEntry { event_bus_name: Some(bus.clone()), ..e.clone() }),
            Err(err) => {
                refused += 1;
                eprintln!("o2c: {} / {} refused: {err}", e.source.as_deref().unwrap_or("?"), e.detail_type.as_deref().unwrap_or("?"));
            }
        }
    }
    let ids = publisher.put_entries(&valid).await?;
    for (e, id) in valid.iter().zip(&ids) {
        println!("{id}  {} / {}", e.source.as_deref().unwrap_or_default(), e.detail_type.as_deref().unwrap_or_default());
    }
    println!("sent {} event(s) to {bus} in {} PutEvents request(s); refused {refused}", ids.len(), publisher.requests());
    Ok(if refused > 0 { ExitCode::from(2) } else { ExitCode::SUCCESS })
}

/// Queue depths, or one queue's messages with their recorded failure reasons.
pub async fn dlq_list(stage: &str, queue: Option<&str>) -> Result<ExitCode> {
    let sdk = o2c_aws::sdk_config().await;
    let topo = topology()?;
    let deployed = resources::locate(&sdk, &topo, stage).await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    match queue {
        None => {
            println!("{:<24} {:>8} {:>10}  role", "queue", "visible", "in flight");
            for q in topo.queues.keys() {
                let (v, f) = ops::depth(&sqs, &deployed.queue_urls[q]).await?;
                println!("{q:<24} {v:>8} {f:>10}  {}", if topo.is_dlq(q) { "dead-letter queue" } else { "queue" });
            }
        }
        Some(q) => {
            let url = deployed.queue_urls.get(q).with_context(|| format!("no queue {q}"))?;
            let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), tables(&topo, stage));
            for m in ops::peek(&sqs, url, 100).await? {
                let reason = store
                    .failure(&m.message_id)
                    .await?
                    .map(|f| format!("{} after {} receives: {}", f.error_type, f.receive_count, f.error))
                    .unwrap_or_default();
                println!("{}  {}  event {}  {reason}", m.message_id, m.detail_type.unwrap_or_default(), m.event_id.unwrap_or_default());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Moves DLQ messages back to their source queue, with a progress bar.
pub async fn dlq_redrive(stage: &str, dlq: &str, limit: usize) -> Result<ExitCode> {
    let sdk = o2c_aws::sdk_config().await;
    let topo = topology()?;
    let Some(source) = topo.source_of_dlq(dlq) else { bail!("{dlq} is not the DLQ of any queue") };
    let deployed = resources::locate(&sdk, &topo, stage).await?;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let (dlq_url, src_url) = (&deployed.queue_urls[dlq], &deployed.queue_urls[&source.logical_id]);
    let (visible, _) = ops::depth(&sqs, dlq_url).await?;
    let bar = indicatif::ProgressBar::new(visible.min(limit as u64));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} messages redriven")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let moved = ops::redrive(&sqs, dlq_url, src_url, limit, |n| bar.set_position(n as u64)).await?;
    bar.finish();
    println!("moved {moved} message(s) from {dlq} back to {}", source.logical_id);
    Ok(ExitCode::SUCCESS)
}

/// EventBridge archive replay.
pub async fn replay(
    stage: &str,
    archive: Option<String>,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> Result<ExitCode> {
    let sdk = o2c_aws::sdk_config().await;
    let topo = topology()?;
    let deployed = resources::locate(&sdk, &topo, stage).await?;
    let archive = archive.or(deployed.archive_name.clone()).context("the template declares no archive; pass --archive")?;
    let state =
        ops::replay(&aws_sdk_eventbridge::Client::new(&sdk), &archive, &deployed.bus_arn, from, to, Duration::from_secs(600)).await?;
    println!("replay {state}");
    Ok(ExitCode::SUCCESS)
}

/// Loads reference data into the stage's state table.
pub async fn load_reference_data(stage: &str, data: &ReferenceData) -> Result<ExitCode> {
    let n = store(stage).await?.put_reference(data).await?;
    println!("loaded {n} reference item(s) into stage {stage}");
    Ok(ExitCode::SUCCESS)
}

/// Creates the template's resources for a stage and loads reference data.
pub async fn bootstrap(stage: &str, data: &ReferenceData) -> Result<ExitCode> {
    let sdk = o2c_aws::sdk_config().await;
    let topo = topology()?;
    let d = resources::create(&sdk, &topo, stage, None).await?;
    resources::wait_for_tables(&sdk, &d.tables, Duration::from_secs(120)).await?;
    let n = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), d.tables.clone()).put_reference(data).await?;
    println!(
        "stage {stage}: bus {}, tables {} and {}, {} queues, {} rules, {n} reference items",
        d.bus_name,
        d.tables.state,
        d.tables.idempotency,
        d.queue_urls.len(),
        topo.rules.len()
    );
    Ok(ExitCode::SUCCESS)
}
