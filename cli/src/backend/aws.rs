//! `--target aws`: a stage's AWS resources (names from the template), or any AWS-API
//! endpoint given by `AWS_ENDPOINT_URL` (e.g. moto_server). Also what only this engine
//! does: `serve` (every function polled locally), `send` (PutEvents), `bootstrap`,
//! `reference load`.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use o2c_app::StepService;
use o2c_app::bus::{PutEventsEntry, validate_entry};
use o2c_app::ports::RejectionStore;
use o2c_aws::dynamo::{DynamoStore, Tables};
use o2c_aws::eventbridge::EventBridgePublisher;
use o2c_aws::poller::{Poller, PollerOptions};
use o2c_aws::resources::Deployed;
use o2c_aws::{Config, ops, resources};
use o2c_domain::reference::ReferenceData;
use o2c_topology::Topology;
use tokio::sync::watch;

use super::{Backend, MessageRow, QueueRow};
use crate::{Connectors, Target, template};

fn topology(target: &Target) -> Result<Arc<Topology>> {
    Ok(Arc::new(Topology::from_sam_yaml(&template(target.template.as_deref())?.text)?))
}

fn tables(topo: &Topology, stage: &str) -> Tables {
    Tables { state: topo.table_name("StateTable", stage), idempotency: topo.table_name("IdempotencyTable", stage) }
}

/// The AWS engine for one stage.
pub struct Aws {
    stage: String,
    sdk: aws_config::SdkConfig,
    topo: Arc<Topology>,
    store: DynamoStore,
    /// One SQS client for every queue call (depths, peeks, redrives).
    sqs: aws_sdk_sqs::Client,
    /// The stage's resources, located once (a console reads them on every page).
    deployed: tokio::sync::OnceCell<Deployed>,
}

impl Aws {
    /// SDK clients for the stage `--stage` names.
    pub async fn connect(target: &Target) -> Result<Self> {
        let sdk = o2c_aws::sdk_config().await;
        let topo = topology(target)?;
        let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), tables(&topo, &target.stage));
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        Ok(Self { stage: target.stage.clone(), sdk, topo, store, sqs, deployed: tokio::sync::OnceCell::new() })
    }

    /// The SDK configuration (the operator's credentials and region).
    pub fn sdk(&self) -> &aws_config::SdkConfig {
        &self.sdk
    }

    /// The template's topology.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// The stage's deployed resources (bus, queue URLs), located on first use (a failure is
    /// not kept: the next call tries again).
    pub async fn deployed(&self) -> Result<Deployed> {
        self.deployed
            .get_or_try_init(|| async {
                resources::locate(&self.sdk, &self.topo, &self.stage)
                    .await
                    .with_context(|| format!("stage {} is not deployed (sam deploy, or o2c bootstrap)", self.stage))
            })
            .await
            .cloned()
    }
}

impl Backend for Aws {
    type Store = DynamoStore;

    fn store(&self) -> &DynamoStore {
        &self.store
    }

    fn label(&self) -> String {
        format!("stage {}", self.stage)
    }

    async fn queues(&self) -> Result<Vec<QueueRow>> {
        let deployed = self.deployed().await?;
        let mut rows = Vec::new();
        for q in self.topo.queues.keys() {
            let (visible, in_flight) = ops::depth(&self.sqs, &deployed.queue_urls[q]).await?;
            rows.push(QueueRow { queue: q.clone(), visible, in_flight, dead_letter: self.topo.is_dlq(q) });
        }
        Ok(rows)
    }

    async fn messages(&self, queue: &str) -> Result<Vec<MessageRow>> {
        let deployed = self.deployed().await?;
        let Some(url) = deployed.queue_urls.get(queue) else {
            usage!("no queue {queue}; queues: {}", deployed.queue_urls.keys().cloned().collect::<Vec<_>>().join(", "))
        };
        let mut rows = Vec::new();
        for m in ops::peek(&self.sqs, url, 100).await? {
            let reason = self
                .store
                .failure(&m.message_id)
                .await?
                .map(|f| format!("{} after {} receives: {}", f.error_type, f.receive_count, f.error));
            rows.push(MessageRow {
                message_id: m.message_id,
                sent_at: None,
                receive_count: None,
                detail_type: m.detail_type,
                event_id: m.event_id,
                reason,
            });
        }
        Ok(rows)
    }

    async fn redrive(&self, dlq: &str, limit: usize, progress: &(dyn Fn(usize) + Sync)) -> Result<(usize, String)> {
        let Some(source) = self.topo.source_of_dlq(dlq) else {
            if !self.topo.is_dlq(dlq) {
                usage!("{dlq} is not a dead-letter queue of the template");
            }
            // A rule target's delivery DLQ: its messages are events, published again.
            let deployed = self.deployed().await?;
            let bus =
                o2c_aws::eventbridge::EventBridgePublisher::new(aws_sdk_eventbridge::Client::new(&self.sdk), deployed.bus_name.clone());
            let (moved, kept) = ops::redrive_to_bus(&self.sqs, &deployed.queue_urls[dlq], &bus, limit, progress).await?;
            if kept > 0 {
                eprintln!("o2c: {kept} message(s) in {dlq} are not events and stay there");
            }
            return Ok((moved, format!("the bus {}", deployed.bus_name)));
        };
        let deployed = self.deployed().await?;
        let (dlq_url, src_url) = (&deployed.queue_urls[dlq], &deployed.queue_urls[&source.logical_id]);
        let moved = ops::redrive(&self.sqs, dlq_url, src_url, limit, progress).await?;
        Ok((moved, source.logical_id.clone()))
    }

    async fn archived(&self, _: Option<DateTime<Utc>>, _: Option<DateTime<Utc>>) -> Result<Vec<o2c_app::bus::PutEventsEntry>> {
        // An EventBridge archive can only be replayed, not read.
        anyhow::bail!(
            "on AWS the facts are the bus's own events: subscribe the warehouse with a rule on InvoicePosted, PaymentApplied, \
             PaymentUnapplied, PaymentReversed and RevenueRecognized (e.g. a Firehose target); the archive can only be replayed"
        )
    }

    async fn replay(&self, from: DateTime<Utc>, to: DateTime<Utc>, archive: Option<String>) -> Result<String> {
        let deployed = self.deployed().await?;
        let Some(archive) = archive.or(deployed.archive_name.clone()) else { usage!("the template declares no archive; pass --archive") };
        let state =
            ops::replay(&aws_sdk_eventbridge::Client::new(&self.sdk), &archive, &deployed.bus_arn, from, to, Duration::from_secs(600))
                .await?;
        Ok(format!("replay {state}"))
    }
}

/// Runs every function of the template locally against the stage's queues, the operator
/// console beside them when `console` is given — or, with `console_only`, the console alone
/// (the functions run in Lambda).
pub async fn serve(
    target: &Target,
    c: &Connectors,
    console: Option<crate::commands::serve::AwsConsole>,
    console_only: bool,
) -> Result<ExitCode> {
    if console_only {
        let Some(opts) = console else { usage!("--console-only and --no-console leave nothing to serve") };
        let (tx, rx) = watch::channel(false);
        let console = crate::commands::serve::aws_console(target, opts, rx).await?;
        outln!("o2c serve --target aws: stage {}, the console only (the functions run in Lambda); Ctrl-C to stop", target.stage);
        crate::commands::serve::shutdown_signal().await;
        let _ = tx.send(true);
        let _ = console.await;
        outln!("o2c serve: stopped");
        return Ok(ExitCode::SUCCESS);
    }
    let aws = Aws::connect(target).await?;
    let (stage, topo) = (&aws.stage, aws.topo.clone());
    let deployed = Arc::new(aws.deployed().await?);
    let t = tables(&topo, stage);
    let config = Config::from_lookup(|k| match k {
        "EVENT_BUS_NAME" => Some(deployed.bus_name.clone()),
        "STATE_TABLE" => Some(t.state.clone()),
        "IDEMPOTENCY_TABLE" => Some(t.idempotency.clone()),
        "O2C_STAGE" => Some(stage.to_owned()),
        "PSA_BASE_URL" => c.psa_url.clone(),
        "ERP_BASE_URL" => c.erp_url.clone(),
        "CRM_BASE_URL" => c.crm_url.clone(),
        "TAX_BASE_URL" => c.tax_url.clone(),
        other => std::env::var(other).ok(),
    })?;
    let platform = o2c_aws::platform::lambda_platform(&aws.sdk, &config)?;
    let svc = Arc::new(StepService::new(platform, config.service()));
    let poller = Arc::new(Poller::new(
        o2c_aws::platform::sqs_long_poll_client(&aws.sdk),
        svc,
        topo.clone(),
        deployed.clone(),
        PollerOptions::default(),
    ));
    let (tx, rx) = watch::channel(false);
    // The console beside the pollers: if it cannot start (its port taken), the pollers run
    // on without it, and the reason is said.
    let console = match console {
        Some(opts) => match crate::commands::serve::aws_console(target, opts, rx.clone()).await {
            Ok(task) => Some(task),
            Err(e) => {
                eprintln!(
                    "o2c serve: no console ({e:#}); the functions poll without it (--addr for another port, --no-console to silence this)"
                );
                None
            }
        },
        None => None,
    };
    let mut tasks = poller.start(rx);
    outln!(
        "o2c serve --target aws: stage {stage}, bus {}, {} functions and {} pipe(s) polling; Ctrl-C to stop",
        deployed.bus_name,
        topo.functions.len(),
        topo.pipes.len()
    );
    crate::commands::serve::shutdown_signal().await;
    let _ = tx.send(true);
    while tasks.join_next().await.is_some() {}
    if let Some(console) = console {
        let _ = console.await;
    }
    let stats = poller.stats();
    outln!(
        "o2c serve: stopped after {} batch(es), {} record failure(s), {} piped message(s)",
        stats.batches.load(std::sync::atomic::Ordering::Relaxed),
        stats.failures.load(std::sync::atomic::Ordering::Relaxed),
        stats.piped.load(std::sync::atomic::Ordering::Relaxed)
    );
    Ok(ExitCode::SUCCESS)
}

/// `PutEvents` to the stage's bus.
pub async fn send(target: &Target, entries: &[PutEventsEntry]) -> Result<ExitCode> {
    let sdk = o2c_aws::sdk_config().await;
    let bus = topology(target)?.bus_name(&target.stage);
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
    let results = crate::progress::during(&format!("PutEvents of {} event(s) to {bus}", valid.len()), publisher.send_each(&valid)).await?;
    let mut sent = 0;
    for (e, r) in valid.iter().zip(&results) {
        let (source, detail_type) = (e.source.as_deref().unwrap_or_default(), e.detail_type.as_deref().unwrap_or_default());
        match r {
            Ok(id) => {
                sent += 1;
                outln!("{id}  {source} / {detail_type}");
            }
            Err(why) => {
                refused += 1;
                eprintln!("o2c: {source} / {detail_type} refused by the bus: {why}");
            }
        }
    }
    outln!("sent {sent} event(s) to {bus} in {} PutEvents request(s); refused {refused}", publisher.requests());
    Ok(if refused > 0 { ExitCode::from(crate::exit::REFUSED) } else { ExitCode::SUCCESS })
}

/// Loads reference data into the stage's state table.
pub async fn load_reference_data(target: &Target, data: &ReferenceData) -> Result<ExitCode> {
    let n = crate::progress::during("loading reference data", async {
        Ok::<_, anyhow::Error>(Aws::connect(target).await?.store.put_reference(data).await?)
    })
    .await?;
    outln!("loaded {n} reference item(s) into stage {}", target.stage);
    Ok(ExitCode::SUCCESS)
}

/// Publishes mapping files (`(name, yaml)`, each already loaded) to a stage's state table.
pub async fn publish_mappings(target: &Target, files: &[(String, String)]) -> Result<ExitCode> {
    use o2c_app::clock::Clock as _;
    let by = format!("o2c map --publish ({})", std::env::var("USER").unwrap_or_else(|_| "unknown user".into()));
    let n = crate::progress::during("publishing mappings", async {
        let aws = Aws::connect(target).await?;
        Ok::<_, anyhow::Error>(aws.store.put_mappings(files, &by, o2c_app::clock::SystemClock.now()).await?)
    })
    .await?;
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    outln!("published {n} mapping(s) to stage {}: {}", target.stage, names.join(", "));
    Ok(ExitCode::SUCCESS)
}

/// Creates the template's resources for a stage and loads reference data.
pub async fn bootstrap(target: &Target, data: &ReferenceData) -> Result<ExitCode> {
    let aws = Aws::connect(target).await?;
    let d = crate::progress::during(&format!("creating stage {}", aws.stage), async {
        let d = resources::create(&aws.sdk, &aws.topo, &aws.stage, None).await?;
        resources::wait_for_tables(&aws.sdk, &d.tables, Duration::from_secs(120)).await?;
        Ok::<_, anyhow::Error>(d)
    })
    .await?;
    let n = crate::progress::during(
        "loading reference data",
        DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws.sdk), d.tables.clone()).put_reference(data),
    )
    .await?;
    outln!(
        "stage {}: bus {}, tables {} and {}, {} queues, {} rules, {n} reference items",
        aws.stage,
        d.bus_name,
        d.tables.state,
        d.tables.idempotency,
        d.queue_urls.len(),
        aws.topo.rules.len()
    );
    Ok(ExitCode::SUCCESS)
}
